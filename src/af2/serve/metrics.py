"""Server metrics in the Prometheus text exposition format (version 0.0.4), kept in-process."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RATE_WINDOW_S = 10.0  # tokens/s is measured over this trailing window


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip([*self.buckets, "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return out + [f"{name}_sum {self.total:.6f}", f"{name}_count {running}"]


class Metrics:
    """Counters and histograms the engine and the routes update; ``render()`` is the /metrics body."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[int] = Counter()  # by HTTP status
        self.rejections = 0
        self.tokens = 0
        self.audio_seconds = 0.0
        self.batch_size = Histogram(_BATCH_BUCKETS)
        self.first_token = Histogram(_SECONDS_BUCKETS)
        self.latency = Histogram(_SECONDS_BUCKETS)
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) for tokens/s
        self.engine_seconds: Counter[str] = Counter()  # the engine thread's busy time, by phase

    def request_done(self, status: int, latency_s: float, audio_s: float = 0.0) -> None:
        with self._lock:
            self.requests[status] += 1
            self.latency.observe(latency_s)
            self.audio_seconds += audio_s

    def rejected(self) -> None:
        with self._lock:
            self.rejections += 1

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def observe_first_token(self, seconds: float) -> None:
        with self._lock:
            self.first_token.observe(seconds)

    def engine_busy(self, phase: str, seconds: float) -> None:
        """Time the engine thread spent on ``phase``: encode (audio of joining requests), prefill, step,
        text (per-row bookkeeping: detokenising, stop strings, sending)."""
        with self._lock:
            self.engine_seconds[phase] += seconds

    def count_tokens(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.tokens += n
            self._recent.append((now, n))
            while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
                self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            return sum(n for t, n in self._recent if t >= now - _RATE_WINDOW_S) / _RATE_WINDOW_S

    def render(self, *, queue_depth: int, running: int, ready: bool) -> str:
        rate = self.tokens_per_second()
        with self._lock:
            lines = ["# HELP af2_requests_total Chat-completion requests answered, by HTTP status.",
                     "# TYPE af2_requests_total counter"]
            lines += [f'af2_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            lines += ["# HELP af2_rejected_total Requests refused with 429 because the queue was full.",
                      "# TYPE af2_rejected_total counter", f"af2_rejected_total {self.rejections}",
                      "# HELP af2_ready Whether the model is loaded.", "# TYPE af2_ready gauge",
                      f"af2_ready {int(ready)}",
                      "# HELP af2_queue_depth Requests accepted and waiting to join the batch.",
                      "# TYPE af2_queue_depth gauge", f"af2_queue_depth {queue_depth}",
                      "# HELP af2_running_requests Rows in the running decode batch.",
                      "# TYPE af2_running_requests gauge", f"af2_running_requests {running}",
                      "# HELP af2_generated_tokens_total Tokens generated.",
                      "# TYPE af2_generated_tokens_total counter", f"af2_generated_tokens_total {self.tokens}",
                      f"# HELP af2_tokens_per_second Generated tokens per second over the last {_RATE_WINDOW_S:g} s.",
                      "# TYPE af2_tokens_per_second gauge", f"af2_tokens_per_second {rate:.3f}",
                      "# HELP af2_audio_seconds_total Seconds of audio heard.",
                      "# TYPE af2_audio_seconds_total counter", f"af2_audio_seconds_total {self.audio_seconds:.3f}",
                      "# HELP af2_batch_size Rows per decoding step.", "# TYPE af2_batch_size histogram"]
            lines += self.batch_size.lines("af2_batch_size")
            lines += ["# HELP af2_time_to_first_token_seconds Submit to first generated token.",
                      "# TYPE af2_time_to_first_token_seconds histogram"]
            lines += self.first_token.lines("af2_time_to_first_token_seconds")
            lines += ["# HELP af2_request_latency_seconds Request start to last byte.",
                      "# TYPE af2_request_latency_seconds histogram"]
            lines += self.latency.lines("af2_request_latency_seconds")
            lines += ["# HELP af2_engine_seconds_total Engine thread busy time by phase (encode, prefill, step, text).",
                      "# TYPE af2_engine_seconds_total counter"]
            lines += [f'af2_engine_seconds_total{{phase="{k}"}} {v:.6f}' for k, v in sorted(self.engine_seconds.items())]
        return "\n".join(lines) + "\n"
