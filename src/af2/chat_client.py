"""One client for OpenAI-compatible ``/v1/chat/completions`` endpoints (vLLM, llama.cpp server,
OpenAI), shared by the evaluation judge and the QA generator.

Standard library only (urllib). A request is retried with bounded exponential back-off on
timeouts, connection errors, HTTP 429/5xx, replies that are not chat completions and replies the
caller's ``accept`` check refuses; any other HTTP error (400, 401, 404, ...) is a mistake in the
request and fails at once. Accepted replies are cached on disk under the sha256 of the request
body (model, messages, sampling options), so a rerun costs no calls. Counters are thread-safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from af2.errors import RequestError
from af2.jsonl import atomic_write_text


class ChatError(RequestError):
    """Every attempt failed. ``reason`` names the last failure; ``content`` is the last reply, if any."""

    def __init__(self, reason: str, message: str, content: str | None = None):
        super().__init__(message)
        self.reason, self.content = reason, content


class _Retry(Exception):
    def __init__(self, reason: str, detail: str = "", content: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.content = reason, content


@dataclasses.dataclass(frozen=True)
class ChatConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1 ("/chat/completions" is appended)
    model: str
    api_key: str = ""  # the key itself (callers read it from the environment); never logged
    timeout_s: float = 60.0
    max_attempts: int = 4  # total tries per request, so at most max_attempts - 1 retries
    backoff_s: float = 1.0  # doubled per retry, capped at backoff_max_s
    backoff_max_s: float = 30.0
    cache_dir: Path | None = None


@dataclasses.dataclass
class ChatStats:
    requests: int = 0  # HTTP requests sent (cache hits send none)
    cache_hits: int = 0
    retries: int = 0
    rejected: Counter = dataclasses.field(default_factory=Counter)  # failed attempts by reason


class ChatClient:
    def __init__(self, config: ChatConfig, sleep: Callable[[float], None] = time.sleep):
        self.config, self.stats, self._sleep = config, ChatStats(), sleep
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def body(self, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
        return {"model": self.config.model, "messages": messages, **options}

    def cache_key(self, body: dict[str, Any]) -> str:
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, body: dict[str, Any]) -> Path | None:
        if self.config.cache_dir is None:
            return None
        key = self.cache_key(body)
        return self.config.cache_dir / key[:2] / f"{key}.json"

    def _count(self, field: str, reason: str | None = None) -> None:
        with self._lock:
            if reason is None:
                setattr(self.stats, field, getattr(self.stats, field) + 1)
            else:
                self.stats.rejected[reason] += 1

    def _post(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        self._count("requests")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                raise ChatError(f"http_{exc.code}", f"{self.url} refused the request: HTTP {exc.code} "
                                f"(check --model name, key and URL)") from exc
            raise _Retry(f"http_{exc.code}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise _Retry("timeout") from exc
        except urllib.error.URLError as exc:
            reason = "timeout" if isinstance(exc.reason, (TimeoutError, socket.timeout)) else "connection_error"
            raise _Retry(reason, str(exc.reason)) from exc
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise _Retry("malformed_response", "not a chat-completions reply") from exc
        if not isinstance(content, str):
            raise _Retry("malformed_response", "choices[0].message.content is not a string")
        return content

    def complete(self, messages: list[dict[str, str]], accept: Callable[[str], Any] | None = None,
                 **options: Any) -> str:
        """The reply's content. ``accept(content)`` may raise ValueError to have the reply retried
        (and not cached; the error's ``reason`` attribute, if any, names the counter, else
        "rejected_reply"); ``options`` (temperature, max_tokens, ...) go into the request body."""
        body = self.body(messages, **options)
        cache = self._cache_path(body)
        if cache is not None and cache.is_file():
            self._count("cache_hits")
            return json.loads(cache.read_text(encoding="utf-8"))["content"]
        last = _Retry("unknown")
        for attempt in range(self.config.max_attempts):
            if attempt:
                self._count("retries")
                self._sleep(min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempt - 1)))
            try:
                content = self._post(body)
                if accept is not None:
                    try:
                        accept(content)
                    except ValueError as exc:  # an exception with a ``reason`` names its own counter
                        raise _Retry(getattr(exc, "reason", "rejected_reply"), str(exc), content) from exc
            except _Retry as exc:
                last = exc
                self._count("rejected", exc.reason)
                continue
            if cache is not None:
                atomic_write_text(cache, json.dumps({"content": content}, ensure_ascii=False))
            return content
        raise ChatError(last.reason, f"{self.url}: no usable reply after {self.config.max_attempts} tries "
                        f"(last: {last})", last.content)
