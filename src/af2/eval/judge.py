"""LLM-as-judge for open answers (the LongAudioBench protocol): an OpenAI-compatible
``/v1/chat/completions`` endpoint grades each answer 1-10 against the reference; the task score is
the mean × 10.

The prompt is ``judge_prompt.txt`` beside this file (published, versioned by its sha256 in every
report). The judge runs at temperature 0. Every verdict is cached on disk under a key made of the
endpoint's model name, the prompt hash, the question, the reference and the answer, so a rerun
costs no calls. Network errors, HTTP 429/5xx and unparseable replies are retried a bounded number
of times with exponential back-off; then the run fails loudly (a missing verdict is never scored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

_SCORE = re.compile(r"score\s*[:=]\s*(\d+)", re.IGNORECASE)


def judge_prompt() -> str:
    return resources.files("af2.eval").joinpath("judge_prompt.txt").read_text(encoding="utf-8")


def prompt_sha256() -> str:
    return hashlib.sha256(judge_prompt().encode("utf-8")).hexdigest()


def parse_score(reply: str) -> int:
    """The 1-10 integer in a ``Score: N`` reply; ValueError when there is none."""
    found = _SCORE.search(reply)
    if not found or not 1 <= int(found.group(1)) <= 10:
        raise ValueError(f"judge reply has no 'Score: N' with N in 1..10: {reply[:200]!r}")
    return int(found.group(1))


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1 (".../chat/completions" is appended)
    model: str
    cache_dir: Path
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable that holds the key, never the key
    max_retries: int = 3
    timeout_s: float = 60.0
    backoff_s: float = 1.0


class Judge:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.template = judge_prompt()
        self.prompt_hash = hashlib.sha256(self.template.encode("utf-8")).hexdigest()
        self.calls = 0  # HTTP requests made (cache hits make none)

    def _cache_path(self, question: str, reference: str, prediction: str) -> Path:
        key = json.dumps([self.config.model, self.prompt_hash, question, reference, prediction])
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.config.cache_dir / digest[:2] / f"{digest}.json"

    def _post(self, prompt: str) -> str:
        body = {"model": self.config.model, "temperature": 0.0, "max_tokens": 16,
                "messages": [{"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.config.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers)
        self.calls += 1
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            payload = json.loads(response.read().decode("utf-8"))
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"judge endpoint {url} returned no choices[0].message.content: {payload}") from exc

    def score(self, question: str, reference: str, prediction: str) -> int:
        path = self._cache_path(question, reference, prediction)
        if path.exists():
            return int(json.loads(path.read_text(encoding="utf-8"))["score"])
        prompt = self.template.format(question=question, reference=reference, prediction=prediction or "(no answer)")
        last_error: Exception | None = None
        for attempt in range(self.config.max_retries + 1):
            try:
                reply = self._post(prompt)
                score = parse_score(reply)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    raise ValueError(f"judge endpoint {self.config.url} refused the request: HTTP {exc.code}") from exc
                last_error = exc
            except (urllib.error.URLError, TimeoutError, ValueError) as exc:
                last_error = exc
            if attempt < self.config.max_retries:
                time.sleep(self.config.backoff_s * 2**attempt)
        else:
            raise ValueError(
                f"judge at {self.config.url} gave no usable verdict after {self.config.max_retries + 1} tries: {last_error}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"score": score, "reply": reply, "model": self.config.model}), encoding="utf-8")
        return score
