"""The scheduler: one thread owns the model and runs continuous batching over a bounded queue.

Request handlers decode audio and submit a ``Job``; between decoding steps the engine takes every
waiting job that fits under ``max_batch``, encodes all their audio in one batched pass, prefills them
together and merges them into the running batch. After each step, finished and cancelled rows leave
at once. Results go back to each job's ``emit`` callback (thread-safe delivery to its handler).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from af2.audio import pad_windows
from af2.errors import AF2Error
from af2.inference import AF2, AudioFacts
from af2.serve.batch import DecodeBatch
from af2.serve.metrics import Metrics
from af2.serve.sampling import RowOptions, SamplingTensors
from af2.tokens import clean_answer

log = logging.getLogger("af2.serve")

# A joining group is encoded and prefilled in passes of its own, each of which streams every weight
# once, like a decoding step: while rows are decoding, new requests join in groups of up to
# JOIN_GROUP (fewer when fewer slots are free), or once the oldest has waited JOIN_WAIT_S.
JOIN_GROUP = 4
JOIN_WAIT_S = 0.2


class QueueFull(AF2Error):
    """More requests are waiting than ``max_queue`` allows; the client should retry later."""


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" or "length"
    completion_tokens: int  # generated tokens, the end-of-text token included (as vLLM counts)
    queued_s: float  # submit → joined the batch
    first_token_s: float  # submit → first token


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass(eq=False)
class Job:
    """One request as the engine sees it. ``cancel()`` may be called from any thread."""

    id: str
    prompt: list[int]
    windows: torch.Tensor | None  # (W, S) the clip's windows; dropped once encoded
    facts: AudioFacts
    options: RowOptions
    max_tokens: int
    stop: tuple[str, ...]
    emit: Callable[[Event], None]
    submitted: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    joined: float | None = None
    first: float | None = None
    done: bool = False  # finished: leaves the batch after this step
    cancelled: bool = False  # the client went away: leaves without another event

    def cancel(self) -> None:
        self.cancelled = True


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that could start a stop string (not sent until settled)."""
    longest = max((len(s) for s in stops), default=0)
    for k in range(min(len(text), longest - 1), 0, -1):
        if any(s.startswith(text[-k:]) for s in stops):
            return k
    return 0


class Engine:
    def __init__(self, api: AF2, *, max_batch: int, max_queue: int, metrics: Metrics):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self.api = api
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.batch = DecodeBatch(api.model, api.special.pad)
        self.rows: list[Job] = []  # in batch order
        self._waiting: deque[Job] = deque()
        self._reserved = 0  # requests accepted but still decoding audio in their handler
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="af2-engine", daemon=True)

    # -- handler side ---------------------------------------------------------------------------

    def reserve(self) -> None:
        """Claim a queue place before the audio is decoded; raises QueueFull when none is left."""
        with self._lock:
            if self._reserved + len(self._waiting) >= self.max_queue + max(self.max_batch - len(self.rows), 0):
                self.metrics.rejected()
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit --max-queue {self.max_queue})")
            self._reserved += 1

    def release(self) -> None:
        """Give a reserved place back without submitting (the request failed before it was queued)."""
        with self._lock:
            self._reserved -= 1

    def submit(self, job: Job) -> None:
        with self._lock:
            self._reserved -= 1
            self._waiting.append(job)
            self._lock.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting) + self._reserved

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- engine thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._waiting and not self.rows:
                    self._lock.wait(timeout=1.0)
                if self._stop:
                    break
                joining = []
                if self._ready_to_join():
                    while self._waiting and len(self.rows) + len(joining) < self.max_batch:
                        job = self._waiting.popleft()
                        if not job.cancelled:
                            joining.append(job)
            try:
                if joining:
                    self._join(joining)
                if self.rows:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the server
                log.exception("decoding failed; the %d requests in the batch get an error", len(self.rows))
                for job in self.rows + [j for j in joining if all(j is not r for r in self.rows)]:
                    job.emit(Failed(f"internal error while decoding: {type(exc).__name__}"))
                self.rows = []
                self.batch.clear()
        for job in self.rows + list(self._waiting):
            job.emit(Failed("the server is shutting down"))

    def _ready_to_join(self) -> bool:
        """Whether waiting requests join now (called under the lock; see JOIN_GROUP)."""
        while self._waiting and self._waiting[0].cancelled:
            self._waiting.popleft()
        if not self._waiting:
            return False
        free = self.max_batch - len(self.rows)
        return (not self.rows or len(self._waiting) >= min(free, JOIN_GROUP)
                or time.perf_counter() - self._waiting[0].submitted >= JOIN_WAIT_S)

    def _join(self, jobs: list[Job]) -> None:
        """Encode the new jobs' audio in one pass, prefill them together and add them to the batch."""
        api = self.api
        now = time.perf_counter()
        for job in jobs:
            job.joined = now
        dtype = next(api.model.parameters()).dtype
        windows, mask = pad_windows([j.windows for j in jobs], api.audio_cfg.max_windows)
        for job in jobs:
            job.windows = None  # a waiting request holds its raw windows; a running one only its K/V
        with torch.inference_mode():
            audio = api.model.encode_audio(windows.to(api.device), mask.to(api.device, dtype), cache_kv=True,
                                           chunk=api.encoder_chunk)
        encoded = time.perf_counter()
        self.metrics.engine_busy("encode", encoded - now)
        opts = SamplingTensors.of([j.options for j in jobs], api.device)
        first = self.batch.join(audio, [j.prompt for j in jobs], opts)
        self.metrics.engine_busy("prefill", time.perf_counter() - encoded)
        self.rows.extend(jobs)
        self._advance(len(self.rows) - len(jobs), first.tolist())

    def _step(self) -> None:
        self.metrics.observe_batch(len(self.rows))
        start = time.perf_counter()
        tokens = self.batch.step().tolist()
        self.metrics.engine_busy("step", time.perf_counter() - start)
        self._advance(0, tokens)

    def _advance(self, offset: int, tokens: list[int]) -> None:
        """Book rows ``offset..`` 's new tokens; send text; let finished and cancelled rows leave."""
        now = time.perf_counter()
        for job, token in zip(self.rows[offset:], tokens):  # per-row text bookkeeping, not tensor work
            if job.cancelled or job.done:
                continue
            if job.first is None:
                job.first = now
                self.metrics.observe_first_token(now - job.submitted)
            self.metrics.count_tokens(1)
            if token == self.api.special.eos:
                self._finish(job, "stop", job.sent, len(job.tokens) + 1)
                continue
            job.tokens.append(token)
            text = clean_answer(self.api.tokenizer.decode(job.tokens, skip_special_tokens=False),
                                self.api.model.cfg.tokens)
            cuts = [text.index(s) for s in job.stop if s in text]
            if cuts:
                self._finish(job, "stop", text[:min(cuts)].rstrip(), len(job.tokens))
            elif len(job.tokens) >= job.max_tokens:
                self._finish(job, "length", text, len(job.tokens))
            else:
                self._send(job, text[:len(text) - _held_back(text, job.stop)].rstrip("\ufffd"))
        keep = [i for i, job in enumerate(self.rows) if not (job.cancelled or job.done)]
        self.rows = [self.rows[i] for i in keep]
        self.batch.keep(keep)
        self.metrics.engine_busy("text", time.perf_counter() - now)

    def _send(self, job: Job, text: str) -> None:
        if len(text) > len(job.sent) and text.startswith(job.sent):
            job.emit(Delta(text[len(job.sent):]))
            job.sent = text

    def _finish(self, job: Job, reason: str, text: str, completion_tokens: int) -> None:
        self._send(job, text)
        job.done = True
        job.emit(Finished(reason, completion_tokens, job.joined - job.submitted, job.first - job.submitted))
