"""Ask questions about audio: ``af2.load(...)`` → ``AF2.ask / ask_batch / stream / caption``.

    import af2
    model = af2.load("nvidia/audio-flamingo-2-0.5B", device="cuda", dtype="bfloat16")
    print(model.ask("dog.wav", "What animal is this?").text)

All windows of all batch items go through the audio encoder in one batched pass; every cross-
attention layer's audio keys and values are computed once per request; decoding uses a KV cache.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from af2.audio.decode import AudioError, AudioSource, load_audio
from af2.audio.features import make_windows, pad_windows
from af2.base_lm import load_tokenizer
from af2.checkpoint.folder import load_pretrained, resolve_model_dir
from af2.checkpoint.official import load_official, official_base_lm
from af2.config import AF2Config
from af2.errors import CheckpointError, DeviceError, RequestError
from af2.registry import DEFAULT_MODEL, model_entry
from af2.generate import GenerationConfig, left_pad, stream_tokens
from af2.model.af2 import AF2Model
from af2.model.cpu_pack import lay_out_audio_for_cpu, lay_out_for_cpu, layout_problem
from af2.tokens import SpecialTokens, add_special_tokens, clean_answer, prompt_ids, special_token_ids

CAPTION_PROMPT = "Caption the input audio."
Progress = Callable[[int, int], None]  # (audio windows encoded so far, windows in the request)


@dataclass(frozen=True)
class AudioFacts:
    source: str
    duration_s: float | None  # of the whole input, None when the container does not say
    kept_s: float  # seconds the model heard
    truncated_s: float | None  # seconds cut by the length limit
    windows: int  # 10-s windows used


@dataclass(frozen=True)
class DecodeStep:
    """What ``AF2._stream`` knows after one decoding step of a batch.

    ``tokens`` are the rows' token lists so far; they keep growing after this step, so read them
    before asking for the next one. ``reasons`` say why a finished row stopped ("stop": end of
    text or a stop string) or, for a running row, "length"."""

    tokens: list[list[int]]  # (B, new tokens so far)
    texts: list[str] | None  # (B,) the rows' text, when the caller asked for it
    done: tuple[bool, ...]  # (B,)
    reasons: tuple[str, ...]  # (B,)
    facts: tuple[AudioFacts, ...]  # (B,)
    t0: float  # perf_counter at the start of the request
    audio_s: float  # decoding the audio
    encode_s: float  # the audio encoder and cross-attention keys/values
    first_token_at: float  # perf_counter when the first step came back


@dataclass(frozen=True)
class Timings:
    audio_s: float  # decoding + resampling the file(s)
    encode_s: float  # audio encoder + transformation layers + x-attn keys/values
    first_token_s: float  # from request start to the first new token
    decode_s: float  # after the first token
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return (self.new_tokens - 1) / self.decode_s if self.decode_s > 0 and self.new_tokens > 1 else 0.0


@dataclass(frozen=True)
class Answer:
    text: str
    question: str
    audio: AudioFacts
    timings: Timings
    finish_reason: str  # "stop" (end of text or a stop string) or "length" (max_new_tokens)
    token_ids: tuple[int, ...]


class AF2:
    """A loaded AF2 model with its tokenizer: the inference API."""

    def __init__(self, model: AF2Model, tokenizer, special: SpecialTokens, *, device: str | torch.device = "cpu",
                 max_audio_seconds: float = 300.0, strict_length: bool = False, encoder_chunk: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.special = special
        self.device = torch.device(device)
        self.strict_length = strict_length
        self.encoder_chunk = encoder_chunk or default_encoder_chunk(self.device)
        self.load_s: float | None = None  # set by load(): seconds it took
        self.dtype_name = str(next(model.parameters()).dtype).removeprefix("torch.")  # or "int8", set by load()
        self.set_max_audio_seconds(max_audio_seconds)

    def set_max_audio_seconds(self, seconds: float) -> None:
        """Listen to at most ``seconds`` of each input (300 = 5 minutes, AF2's advertised limit)."""
        if seconds <= 0:
            raise RequestError(f"max_audio_seconds must be positive, got {seconds}")
        audio = self.model.cfg.audio
        windows = max(1, math.ceil(seconds / audio.window_seconds - 1e-9))
        self.audio_cfg = dataclasses.replace(audio, max_windows=windows)
        self.max_audio_seconds = float(seconds)

    # ------------------------------------------------------------------------------------------

    def _load(self, source: AudioSource) -> tuple[torch.Tensor, AudioFacts]:
        decoded = load_audio(source, sample_rate=self.audio_cfg.sample_rate, max_seconds=self.max_audio_seconds)
        windows = make_windows(decoded.samples, self.audio_cfg)
        facts = AudioFacts(decoded.source, decoded.duration_s, decoded.kept_s, decoded.truncated_s, windows.shape[0])
        if decoded.truncated_s:
            message = (f"{decoded.source}: {decoded.duration_s:.1f} s long; only the first {decoded.kept_s:.1f} s are "
                       f"used ({decoded.truncated_s:.1f} s truncated; raise max_audio_seconds to hear more)")
            if self.strict_length:
                raise AudioError(message + " [strict length]")
            warnings.warn(message, stacklevel=3)
        return windows, facts

    def _prompt_ids(self, question: str) -> list[int]:
        if not isinstance(question, str):
            raise RequestError(f"the question must be text, got {type(question).__name__}")
        if not question.strip():
            raise RequestError("the question is empty; ask something about the audio")
        ids = prompt_ids(self.tokenizer, question, self.special)
        limit = self.model.cfg.tokens.max_tokens
        if len(ids) > limit:
            raise RequestError(f"the question is {len(ids)} tokens long; the model takes at most {limit}")
        return ids

    def _stream(self, audios: Sequence[AudioSource], questions: Sequence[str], gen: GenerationConfig,
                stop: Sequence[str], want_text: bool = False, progress: Progress | None = None
                ) -> Iterator[DecodeStep]:
        """Core loop: yields, per step, a ``DecodeStep``: every row's tokens so far, its text (when
        ``want_text``) and whether it is done. Stop strings are looked for in the text of each row's last few tokens
        only, so a step costs the same at token 10 and at token 1,000."""
        if len(audios) != len(questions):
            raise ValueError(f"{len(audios)} audio inputs but {len(questions)} questions")
        t0 = time.perf_counter()
        prompts = [self._prompt_ids(q) for q in questions]
        loaded = [self._load(a) for a in audios]
        t_audio = time.perf_counter()
        dtype = next(self.model.parameters()).dtype
        windows, window_mask = pad_windows([w for w, _ in loaded], self.audio_cfg.max_windows)
        with torch.inference_mode():
            audio = self.model.encode_audio(windows.to(self.device), window_mask.to(self.device, dtype), cache_kv=True,
                                            chunk=self.encoder_chunk, progress=progress)
        t_enc = time.perf_counter()
        ids, mask = left_pad(prompts, self.special.pad, self.device)
        B = len(prompts)
        tail = max((len(s) for s in stop), default=0) + 8
        tokens: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        reasons = ["length"] * B
        facts = tuple(f for _, f in loaded)
        first: float | None = None
        for tok, live in stream_tokens(self.model, audio, ids, mask, gen, (self.special.eos,), self.special.pad):
            if first is None:
                first = time.perf_counter()
            for row, (t, running) in enumerate(zip(tok.tolist(), live.tolist())):  # per-row text bookkeeping
                if done[row] or not running:
                    continue
                if t == self.special.eos:
                    done[row], reasons[row] = True, "stop"
                    continue
                tokens[row].append(t)
            for row in range(B) if stop else ():
                # A stop string of L characters lies within the last L + 8 tokens (a token is at
                # least one character; the margin covers byte tokens and end markers).
                if not done[row] and any(s in self._text(tokens[row][-tail:], strip=False) for s in stop):
                    done[row], reasons[row] = True, "stop"
            texts = [self._text(t) for t in tokens] if want_text else None
            yield DecodeStep(tokens, texts, tuple(done), tuple(reasons), facts, t0, t_audio - t0, t_enc - t_audio, first)
            if all(done):
                return

    def _text(self, ids: list[int], strip: bool = True) -> str:
        return clean_answer(self.tokenizer.decode(ids, skip_special_tokens=False), self.model.cfg.tokens, strip)

    @staticmethod
    def _cut(text: str, stop: Sequence[str]) -> str:
        cuts = [text.index(s) for s in stop if s in text]
        return text[: min(cuts)].rstrip() if cuts else text

    # ------------------------------------------------------------------------------------------

    def ask_batch(self, audios: Sequence[AudioSource], questions: Sequence[str], *, stop: Sequence[str] = (),
                  progress: Progress | None = None, **gen_options) -> list[Answer]:
        """Answer ``questions[i]`` about ``audios[i]`` for every i, in one batch.

        ``progress(done, total)`` is called as the audio windows of the batch are encoded (the
        long part of a 5-minute request before the first token)."""
        gen = GenerationConfig(**gen_options)
        last = None
        for last in self._stream(audios, questions, gen, stop, progress=progress):
            pass
        if last is None:
            return []
        tokens = last.tokens
        texts = [self._text(t) for t in tokens]
        end = time.perf_counter()
        first = last.first_token_at
        answers = []
        for row, question in enumerate(questions):
            timings = Timings(last.audio_s, last.encode_s, first - last.t0, end - first, len(tokens[row]))
            answers.append(Answer(self._cut(texts[row], stop), question, last.facts[row], timings,
                                  last.reasons[row], tuple(tokens[row])))
        return answers

    def ask(self, audio: AudioSource, question: str, **options) -> Answer:
        """Answer one question about one audio input (a path, bytes, or ``(samples, rate)``)."""
        return self.ask_batch([audio], [question], **options)[0]

    def caption(self, audio: AudioSource, **options) -> Answer:
        return self.ask(audio, CAPTION_PROMPT, **options)

    def stream(self, audio: AudioSource, question: str, *, stop: Sequence[str] = (), progress: Progress | None = None,
               **gen_options) -> Iterator[str]:
        """Yield the answer's text in pieces as it is generated (``progress`` as in ask_batch)."""
        sent = ""
        for step in self._stream([audio], [question], GenerationConfig(**gen_options), stop, True, progress):
            text = self._cut(step.texts[0], stop)
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
                sent = text


# ----------------------------------------------------------------------------------------------
# loading


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise RequestError(f"unknown dtype {dtype!r}; use float32, bfloat16 or int8")
    return table[dtype]


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> tuple[torch.dtype, bool]:
    """(compute dtype, int8 weights?) for a requested ``dtype`` on ``device``.

    ``None`` picks bf16 on CPUs with native bf16 matrix instructions (half the bytes per decoding
    step, ~5x the fp32 matmul rate of the audio encoder) and fp32 elsewhere. ``"int8"`` stores every
    linear layer's weights in int8 (``af2.model.quant``); the rest computes in bf16 where the CPU has
    it (else fp32).
    """
    cpu = torch.device(device).type == "cpu"
    if dtype is None or dtype == "auto":
        return (torch.bfloat16 if cpu and cpu_has_fast_bf16() else torch.float32), False
    if dtype == "int8":
        return (torch.bfloat16 if not cpu or cpu_has_fast_bf16() else torch.float32), True
    torch_dtype = _dtype(dtype)
    if cpu and torch_dtype == torch.float16:
        raise DeviceError("float16 has no fast path on CPUs; use bfloat16 or float32")
    if cpu and torch_dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        warnings.warn(f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 matrix "
                      "instructions (AVX512-BF16 or AMX): bfloat16 runs emulated and much slower than float32 "
                      "here; use dtype='float32'", stacklevel=3)
    return torch_dtype, False


def default_encoder_chunk(device: torch.device | str) -> int:
    """Windows per audio-encoder call. On CPUs two windows at a time keep HTSAT's activations in
    cache (measured here: 0.87 s/window against 1.08 s/window for 8 at a time); accelerators want
    large batches."""
    return 2 if torch.device(device).type == "cpu" else 64


def check_device(device: str | torch.device) -> torch.device:
    """The device, if this torch can use it; otherwise a DeviceError saying what is available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"--device {device!r} is not a device name ({exc}); use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!s}: this torch ({torch.__version__}) has no usable CUDA GPU; "
                              "use --device cpu or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!s}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!s}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!s}: af2 runs on cpu, cuda or mps")
    return dev


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU has bfloat16 matrix instructions (oneDNN uses them for bf16 matmuls)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2")
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def check_cpu_layout(layout: str | None, device: torch.device, dtype: torch.dtype, int8: bool) -> None:
    """Raise RequestError unless ``layout`` (``af2.load``'s ``cpu_layout``) can apply to this device and dtype."""
    problem = None if layout is None else layout_problem(layout, device, None if int8 else dtype)
    if problem is not None:
        raise RequestError(f"cpu_layout: {problem}; leave cpu_layout out to let af2 choose")


def load(path_or_id: str | Path = DEFAULT_MODEL, *, device: str | torch.device = "cpu",
         dtype: str | torch.dtype | None = None, base_lm: str | Path | None = None, max_audio_seconds: float = 300.0,
         strict_length: bool = False, config: AF2Config | None = None, decode_batch: int = 1,
         cpu_layout: str | None = None) -> AF2:
    """Load an AF2 model: our format (config.json + model.safetensors), NVIDIA's released layout
    (safe_ckpt/ + clap_ckpt/; the Qwen2.5 base LM comes from ``base_lm``, the registry entry, or
    the width of the checkpoint's embedding), a registry name, a local folder or a hub id (honours
    HF_HUB_OFFLINE). A folder whose config.json names its base LM is built from that base LM.
    ``config`` gives the architecture of an official checkpoint where its tensor shapes do not
    (default: the released AF2). ``dtype``: None (bf16 on CPUs with native bf16, else fp32),
    "float32", "bfloat16" or "int8" (int8 linear weights). ``decode_batch``: the batch you mostly
    decode (1: one question at a time; the server and ``af2 eval`` pass theirs); on CPUs it picks
    the weight layout that decodes it fastest (``af2.model.cpu_pack``; any batch still works).
    ``cpu_layout``: "rows" or "packed" overrides that choice (which is faster for one row depends on
    the machine: ``benchmarks/decode_layouts.py`` measures both; results differ by bf16 roundings).
    Bad arguments, devices and files raise AF2Errors before weights are read."""
    t0 = time.perf_counter()
    check_device(device)
    if decode_batch < 1:
        raise RequestError(f"decode_batch must be >= 1, got {decode_batch}")
    torch_dtype, int8 = resolve_dtype(dtype, device)
    check_cpu_layout(cpu_layout, torch.device(device), torch_dtype, int8)
    folder = resolve_model_dir(path_or_id)
    if (folder / "safe_ckpt").is_dir():
        if base_lm is None and not (folder / "lm_config.json").is_file():
            entry = model_entry(str(path_or_id))  # a registry name names its base; else the embedding width
            base_lm = entry.base_lm if entry is not None else official_base_lm(folder)
        model, tokenizer, special = load_official(folder, base_lm=base_lm, cfg=config, dtype=torch_dtype, int8=int8)
    elif (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        model = load_pretrained(folder, torch_dtype, int8=int8)  # sizes checked before the model is allocated
        cfg = model.cfg
        tokenizer = load_tokenizer(folder)
        special = special_token_ids(tokenizer, cfg.tokens) if "<SEP>" in tokenizer.get_vocab() else \
            add_special_tokens(tokenizer, cfg.tokens)
    else:
        raise CheckpointError(f"{folder}: neither an af2 model (config.json + model.safetensors) nor an official AF2 "
                              "checkpoint (safe_ckpt/ + clap_ckpt/); convert one with `af2 convert`")
    model = model.to(device=device, dtype=torch_dtype)
    # the audio path packed for oneDNN (bf16; fp32 on AVX-512); then the LM: bf16 rows or packed by decode_batch,
    # fp32 on AVX-512 packed, int8 plain; batches get the batched attention kernels (af2.model.cpu_pack, cpu_decode)
    lay_out_audio_for_cpu(model, torch.device(device))
    lay_out_for_cpu(model.lm, torch.device(device), decode_batch, cpu_layout)
    api = AF2(model, tokenizer, special, device=device, max_audio_seconds=max_audio_seconds,
              strict_length=strict_length)
    api.load_s = time.perf_counter() - t0
    api.dtype_name = "int8" if int8 else str(torch_dtype).removeprefix("torch.")
    return api
