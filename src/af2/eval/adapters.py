"""Adapters: the one interface between the runner and a model.

An adapter answers a batch of requests (audio path + prompt) with strings, and describes itself
for the reproducibility card. Any model, an AF2 checkpoint or another audio-language model,
is evaluated by the same runner once it has an adapter.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from af2.errors import CheckpointError, RequestError
from af2.jsonl import read_jsonl


@dataclasses.dataclass(frozen=True)
class Request:
    task: str
    id: str
    audio: str  # path of the audio file
    prompt: str


class Adapter(Protocol):
    def answer(self, requests: Sequence[Request]) -> list[str]:
        """One answer string per request, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Name, model hash, decoding parameters: everything the card needs to rerun this."""
        ...


def hash_model(path: str | Path) -> str:
    """sha256 over the weight and config files of a checkpoint (file names and bytes, sorted)."""
    path = Path(path)
    suffixes = (".safetensors", ".json", ".bin", ".pt", ".yaml", ".model", ".txt")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
    if not files:
        raise CheckpointError(f"no model files under {path}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode("utf-8"))
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


AUDIO_CONTROLS = ("own", "shuffled", "silence", "zero-gates")


def shuffled_audio(audios: Sequence[str]) -> list[str]:
    """Each request gets the audio of the next request (cyclically) whose file differs from its own, so
    no item keeps its clip; a batch with one distinct file keeps it (and cannot be a control). The runner
    batches a task's items in a seeded random order, so the stand-in is a random item of the task."""
    n = len(audios)
    out = []
    for i, own in enumerate(audios):
        other = next((audios[(i + k) % n] for k in range(1, n) if audios[(i + k) % n] != own), own)
        out.append(other)
    return out


def silent_audio(audios: Sequence[str], sample_rate: int) -> list[tuple[np.ndarray, int]]:
    """Each request's audio replaced by silence as long as its own clip (length from the file's header,
    else from decoding it). The model keeps its prompt, its answer format and its open gates but hears
    nothing: the text-only baseline of a model whose answer format lives in its cross-attention."""
    from af2.audio.decode import load_audio, probe

    out = []
    for path in audios:
        seconds = probe(path).duration_s
        if seconds is None:
            seconds = load_audio(path, sample_rate=sample_rate).kept_s
        out.append((np.zeros(max(1, round(seconds * sample_rate)), dtype=np.float32), sample_rate))
    return out


class AF2Adapter:
    """An AF2 model through ``af2.inference.load`` and its batched ``ask_batch``; ``model=None``
    loads ``af2.load()``'s default model.

    Decoding defaults to the benchmark setting of the official code: greedy (temperature 0,
    one beam), at most 256 new tokens.
    """

    def __init__(self, model: str | None, device: str = "cpu", dtype: str = "float32", max_new_tokens: int = 256,
                 audio_control: str = "own", batch_size: int = 8):
        from af2 import inference
        from af2.checkpoint.folder import resolve_model_dir

        if audio_control not in AUDIO_CONTROLS:
            raise ValueError(f"audio_control {audio_control!r}: choose one of {', '.join(AUDIO_CONTROLS)}")
        self.audio_control = audio_control
        self.model_id = model if model is not None else str(inference.DEFAULT_MODEL)
        self.device, self.dtype = device, dtype
        self.generation = {"max_new_tokens": max_new_tokens, "do_sample": False}
        load = dict(device=device, dtype=dtype, decode_batch=batch_size)
        self.pipeline = inference.load(**load) if model is None else inference.load(model, **load)
        self.model_dir = resolve_model_dir(self.model_id)
        if audio_control == "zero-gates":
            zero_gates(self.pipeline.model)

    def answer(self, requests: Sequence[Request]) -> list[str]:
        audios = [r.audio for r in requests]
        if self.audio_control == "shuffled":
            audios = shuffled_audio(audios)
        elif self.audio_control == "silence":
            audios = silent_audio(audios, self.pipeline.audio_cfg.sample_rate)
        answers = self.pipeline.ask_batch(audios, [r.prompt for r in requests], **self.generation)
        return [a.text for a in answers]

    def describe(self) -> dict[str, Any]:
        return {"adapter": "af2", "model": self.model_id, "model_sha256": hash_model(self.model_dir),
                "device": self.device, "dtype": self.dtype, "decoding": dict(self.generation),
                "audio_control": self.audio_control}


def zero_gates(model) -> None:
    """Set every cross-attention gate to 0: the LM then answers from the text alone (gates at zero leave
    the LM exactly unchanged), which is the text-only baseline of the same model."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.zero_()


class FirstChoiceAdapter:
    """TEST ADAPTER, NOT A MODEL: never opens the audio; answers the first listed option, else a
    fixed sentence. It exists to test the runner; its scores measure nothing."""

    def __init__(self, fallback: str = "a sound is heard"):
        self.fallback = fallback

    def answer(self, requests: Sequence[Request]) -> list[str]:
        out = []
        for r in requests:
            start = r.prompt.find("(A) ")
            if start >= 0:
                out.append(r.prompt[start + 4:].split(". (B)")[0].rstrip("."))
            elif "one of: " in r.prompt:
                out.append(r.prompt.split("one of: ", 1)[1].split(",")[0].rstrip("."))
            else:
                out.append(self.fallback)
        return out

    def describe(self) -> dict[str, Any]:
        return {"adapter": "first-choice (TEST ADAPTER: ignores the audio, not a model)",
                "model_sha256": "none", "decoding": {"rule": "first listed option, else a fixed sentence"}}


class PredictionsAdapter:
    """Answers from a lookup table: a JSONL of {"task": ..., "id": ..., "prediction": ...} lines
    (``task`` optional; e.g. predictions another tool dumped), so this runner scores them with the
    official rules. It is not a model; a request missing from the table is an error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.table: dict[str, str] = {}
        for lineno, row in read_jsonl(self.path, error=RequestError).records:
            if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
                raise RequestError(f"{self.path}: line {lineno} needs 'id' and 'prediction'")
            key = f"{row['task']}/{row['id']}" if "task" in row else str(row["id"])
            self.table[key] = str(row["prediction"])

    def answer(self, requests: Sequence[Request]) -> list[str]:
        keys = [f"{r.task}/{r.id}" if f"{r.task}/{r.id}" in self.table else r.id for r in requests]
        missing = [k for k in keys if k not in self.table]
        if missing:
            raise RequestError(f"{self.path} has no prediction for {missing[:5]}")
        return [self.table[k] for k in keys]

    def describe(self) -> dict[str, Any]:
        return {"adapter": f"predictions (lookup table {self.path.name}, not a model)",
                "model_sha256": hash_model(self.path), "decoding": {"rule": "answers read from the table"}}
