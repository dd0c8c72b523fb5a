"""LLM-as-judge for open answers (LongAudioBench, CompA-R): an OpenAI-compatible chat endpoint
grades each answer 1-10 against the reference.

The prompt is ``judge_prompt.txt`` beside this file (published in the README, versioned by its
sha256 in every report). The judge runs at temperature 0 and may reason before its verdict; the
score is the last score statement in the reply (``Score: 8``, ``**Score:** 8``, ``a score of 6``,
``Score: 8/10``, a bare ``8.5``). Requests go through the shared ``af2.chat_client`` (retries on
429/5xx and timeouts, on-disk cache). A reply with no readable score is asked again a bounded
number of times; if it stays unreadable it is a counted failure, reported and left out of the
mean, never a guess. An endpoint that refuses requests fails the run loudly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from af2.chat_client import ChatClient, ChatConfig, ChatError

_NUMBER = r"(\d+(?:\.\d+)?)"
# "Score: 8", "**Score:** 8", "score = 7", "a score of 6", "Score: 8/10", "final score is 9".
_SCORE_STATEMENT = re.compile(rf"\bscore\b[\s*_:=]*(?:(?:of|is|would be|:)[\s*_:=]*)?{_NUMBER}(?!\d)", re.IGNORECASE)
_OUT_OF_TEN = re.compile(rf"(?<![\d.]){_NUMBER}\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_BARE = re.compile(rf"^[\s*_]*{_NUMBER}[\s*_.]*$")


def judge_prompt() -> str:
    return resources.files("af2.eval").joinpath("judge_prompt.txt").read_text(encoding="utf-8")


def prompt_sha256() -> str:
    return hashlib.sha256(judge_prompt().encode("utf-8")).hexdigest()


def parse_score(reply: str) -> float:
    """The 1-10 score a judge reply ends with; ValueError when there is none (see module docstring)."""
    for pattern in (_SCORE_STATEMENT, _OUT_OF_TEN, _BARE):
        found = list(pattern.finditer(reply))
        if found:
            value = float(found[-1].group(1))
            if not 1.0 <= value <= 10.0:
                raise ValueError(f"judge score {value:g} is outside 1..10: {reply[-200:]!r}")
            return value
    raise ValueError(f"judge reply has no score: {reply[-200:]!r}")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    cache_dir: Path
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable that holds the key, never the key
    max_retries: int = 3
    timeout_s: float = 120.0
    backoff_s: float = 1.0
    max_tokens: int = 1024  # room for reasoning before the verdict


@dataclasses.dataclass(frozen=True)
class Verdict:
    score: float | None  # None: no readable score after every try
    reply: str


class Judge:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.template = judge_prompt()
        self.prompt_hash = hashlib.sha256(self.template.encode("utf-8")).hexdigest()
        self.client = ChatClient(ChatConfig(
            base_url=config.url, model=config.model, api_key=os.environ.get(config.api_key_env, ""),
            timeout_s=config.timeout_s, max_attempts=config.max_retries + 1, backoff_s=config.backoff_s,
            cache_dir=config.cache_dir))

    @property
    def calls(self) -> int:
        """HTTP requests made (cache hits make none)."""
        return self.client.stats.requests

    def describe(self) -> dict[str, Any]:
        return {"url": self.config.url, "model": self.config.model, "prompt_sha256": self.prompt_hash,
                "temperature": 0.0, "max_tokens": self.config.max_tokens}

    def verdict(self, question: str, reference: str, prediction: str) -> Verdict:
        prompt = self.template.format(question=question, reference=reference, prediction=prediction or "(no answer)")
        try:
            reply = self.client.complete([{"role": "user", "content": prompt}], accept=parse_score,
                                         temperature=0.0, max_tokens=self.config.max_tokens)
        except ChatError as exc:
            if exc.reason != "rejected_reply":  # the endpoint failed, not the judge's reply
                raise
            return Verdict(None, exc.content or "")
        return Verdict(parse_score(reply), reply)
