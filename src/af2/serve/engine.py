"""The scheduler: continuous batching over a bounded queue, in two threads that share the model.

Request handlers decode audio and submit a ``Job``. The encoder thread takes waiting jobs that fit
under ``max_batch`` as a group and encodes all their audio in one batched pass; the engine thread,
between decoding steps, prefills each encoded group together and merges it into the running batch.
So audio of new requests is encoded while the running rows decode (on CPUs, on another core: torch
releases the GIL inside its kernels). After each step, finished and cancelled rows leave at once.
Results go back to each job's ``emit`` callback (thread-safe delivery to its handler).
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
from af2.model.xattn import AudioContext
from af2.serve.batch import DecodeBatch
from af2.serve.metrics import Metrics
from af2.serve.sampling import RowOptions, SamplingTensors
from af2.tokens import clean_answer

log = logging.getLogger("af2.serve")

# A joining group is prefilled in a pass of its own, which streams every weight once, like a decoding
# step: while rows are decoding, new requests are taken in groups of up to JOIN_GROUP (fewer when
# fewer slots are free), or once the oldest has waited JOIN_WAIT_S.
# At 16 clients a pass of a few short prompts costs about what a decoding step does, so fewer, larger
# groups serve more: groups of up to 8 gave 14.73-15.72 req/s (4.14-4.31x one by one) against 13.78-14.77
# (3.90-4.18x) with groups of up to 4 (af2-nano, `python benchmarks/serve.py --threads 1`, three runs
# each, p99 time to first token no worse).
JOIN_GROUP = 8
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
        self._pending = 0  # taken by the encoder thread, not yet in the batch (a slot each)
        self._encoded: deque[tuple[list[Job], AudioContext]] = deque()  # groups ready to prefill
        self._lock = threading.Condition()
        self._stop = False
        self._threads = [threading.Thread(target=self._run, name="af2-engine", daemon=True),
                         threading.Thread(target=self._encode_loop, name="af2-encoder", daemon=True)]
        # On CPUs the two threads split the cores torch was given (each its own compute threads).
        self._compute_threads = max(1, torch.get_num_threads() // 2) if api.device.type == "cpu" else None

    # -- handler side ---------------------------------------------------------------------------

    def reserve(self) -> None:
        """Claim a queue place before the audio is decoded; raises QueueFull when none is left."""
        with self._lock:
            if self._reserved + len(self._waiting) >= self.max_queue + max(self._free_slots(), 0):
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
            self._lock.notify_all()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting) + self._reserved + self._pending

    def _free_slots(self) -> int:
        return self.max_batch - len(self.rows) - self._pending

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    # -- encoder thread -------------------------------------------------------------------------

    def _own_threads(self) -> None:
        if self._compute_threads is not None:
            torch.set_num_threads(self._compute_threads)

    def _encode_loop(self) -> None:
        self._own_threads()
        while True:
            with self._lock:
                while not self._stop and not self._ready_to_encode():
                    self._lock.wait(timeout=JOIN_WAIT_S / 4)  # wakes to check the oldest's wait
                if self._stop:
                    break
                jobs = []
                while self._waiting and len(jobs) < self._free_slots():
                    job = self._waiting.popleft()
                    if not job.cancelled:
                        jobs.append(job)
                self._pending += len(jobs)
            try:
                audio = self._encode(jobs)
            except Exception as exc:  # noqa: BLE001 - a failed encode fails its requests, not the server
                log.exception("encoding failed; the %d requests of the group get an error", len(jobs))
                for job in jobs:
                    job.emit(Failed(f"internal error while encoding the audio: {type(exc).__name__}"))
                with self._lock:
                    self._pending -= len(jobs)
                continue
            with self._lock:
                self._encoded.append((jobs, audio))
                self._lock.notify_all()

    def _ready_to_encode(self) -> bool:
        """Whether waiting requests are taken now (called under the lock; see JOIN_GROUP)."""
        while self._waiting and self._waiting[0].cancelled:
            self._waiting.popleft()
        free = self._free_slots()
        if not self._waiting or free <= 0:
            return False
        return (not self.rows and not self._pending) or len(self._waiting) >= min(free, JOIN_GROUP) \
            or time.perf_counter() - self._waiting[0].submitted >= JOIN_WAIT_S

    def _encode(self, jobs: list[Job]) -> AudioContext:
        """The group's audio through the encoder in one batched pass, keys/values cached."""
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
        self.metrics.engine_busy("encode", time.perf_counter() - now)
        return audio

    # -- engine thread --------------------------------------------------------------------------

    def _run(self) -> None:
        self._own_threads()
        while True:
            with self._lock:
                while not self._stop and not self._encoded and not self.rows:
                    self._lock.wait(timeout=1.0)
                if self._stop:
                    break
                groups = list(self._encoded)
                self._encoded.clear()
            joining = [job for jobs, _ in groups for job in jobs]
            try:
                for jobs, audio in groups:
                    self._join(jobs, audio)
                if self.rows:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the server
                log.exception("decoding failed; the %d requests in the batch get an error", len(self.rows))
                for job in self.rows + [j for j in joining if all(j is not r for r in self.rows)]:
                    job.emit(Failed(f"internal error while decoding: {type(exc).__name__}"))
                with self._lock:
                    self._pending -= sum(all(j is not r for r in self.rows) for j in joining)
                    self.rows = []
                self.batch.clear()
        with self._lock:
            left = self.rows + [job for jobs, _ in self._encoded for job in jobs] + list(self._waiting)
        for job in left:
            job.emit(Failed("the server is shutting down"))

    def _join(self, jobs: list[Job], audio: AudioContext) -> None:
        """Prefill an encoded group together and add it to the batch."""
        start = time.perf_counter()
        opts = SamplingTensors.of([j.options for j in jobs], self.api.device)
        first = self.batch.join(audio, [j.prompt for j in jobs], opts)
        self.metrics.engine_busy("prefill", time.perf_counter() - start)
        with self._lock:
            self.rows.extend(jobs)
            self._pending -= len(jobs)
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
        if len(keep) < len(self.rows):
            with self._lock:
                self.rows = [self.rows[i] for i in keep]
                self._lock.notify_all()  # free slots: the encoder may take waiting requests
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
