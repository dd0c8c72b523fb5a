"""QA generation with an LLM behind the OpenAI-compatible chat-completions API (vLLM, llama.cpp, ...).

Requests go through the shared ``af2.chat_client`` (the evaluation judge uses the same one). Per
item: one request (cached on disk by sha256 of the request body: model, prompt, input,
temperature), retried with bounded exponential back-off on timeouts, connection errors, HTTP
429/5xx, malformed JSON and replies that fail the JSON schema. An item whose attempts are all
used up, or that the endpoint refuses, is returned as a rejection with its reason, never dropped;
every bad reply is counted by reason in ``LLMStats.rejected``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from af2.chat_client import ChatClient, ChatConfig, ChatError
from af2.data.qa import SKILLS, QAPair
from af2.errors import ConfigError

PROMPT_ID = "audioskills-v1"
SYSTEM_PROMPT = (
    "You write question-answer pairs about an audio clip for training an audio-language model. You cannot "
    "hear the audio; you are given its metadata (caption, labels, timestamps, transcript, music attributes). "
    "Write questions a listener could answer from the audio alone, with answers fully supported by the "
    "metadata. Cover these skills where the metadata allows: " + ", ".join(SKILLS) + ". "
    'Reply with JSON only: {"qa": [{"skill": <one of the skills>, "question": <string>, "answer": <string>, '
    '"options": <optional list of 2-6 strings containing the answer>}]}.'
)
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["qa"], "additionalProperties": False,
    "properties": {"qa": {"type": "array", "minItems": 1, "maxItems": 20, "items": {
        "type": "object", "required": ["skill", "question", "answer"], "additionalProperties": False,
        "properties": {"skill": {"type": "string", "enum": list(SKILLS)},
                       "question": {"type": "string", "minLength": 5},
                       "answer": {"type": "string", "minLength": 1},
                       "options": {"type": "array", "minItems": 2, "maxItems": 6,
                                   "items": {"type": "string", "minLength": 1}}}}}},
}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against a JSON-schema subset (type, required, properties,
    additionalProperties, items, enum, minLength, minItems, maxItems)."""
    types = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int, "boolean": bool}
    kind = schema.get("type")
    if kind and not isinstance(value, types[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    if isinstance(value, str) and len(value.strip()) < schema.get("minLength", 0):
        errors.append(f"{path}: string shorter than {schema['minLength']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items, need {schema.get('minItems', 0)}..{schema.get('maxItems')}")
        for i, v in enumerate(value):
            errors += validate(v, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is False:
            errors += [f"{path}: unexpected {k!r}" for k in value if k not in props]
        errors += [e for k, v in value.items() if k in props for e in validate(v, props[k], f"{path}.{k}")]
    return errors


@dataclass(frozen=True)
class LLMConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = ""
    concurrency: int = 4
    max_attempts: int = 4  # total tries per item, so at most max_attempts - 1 retries
    timeout_s: float = 60.0
    backoff_s: float = 1.0  # doubled per retry, capped at backoff_max_s
    backoff_max_s: float = 30.0
    temperature: float = 0.2
    cache_dir: Path | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> "LLMConfig":
        """Flags win over AF2_LLM_BASE_URL / AF2_LLM_MODEL / AF2_LLM_API_KEY (or OPENAI_*)."""
        env = {"base_url": os.environ.get("AF2_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL"),
               "model": os.environ.get("AF2_LLM_MODEL"),
               "api_key": os.environ.get("AF2_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY", "")}
        merged = {**{k: v for k, v in env.items() if v is not None},
                  **{k: v for k, v in overrides.items() if v is not None}}
        for key in ("base_url", "model"):
            if not merged.get(key):
                raise ConfigError(f"LLM back end: no {key}; pass --llm-{key.replace('_', '-')} or set AF2_LLM_{key.upper()}")
        return cls(**merged)


@dataclass
class LLMStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    accepted_items: int = 0
    failed_items: int = 0
    rejected: Counter = field(default_factory=Counter)  # bad replies by reason


@dataclass(frozen=True)
class LLMResult:
    item_id: str
    pairs: tuple[QAPair, ...]
    error: str | None = None  # reason of the last failure when every attempt failed


class _Reject(ValueError):
    """A reply to ask again; ``reason`` names its counter in ``LLMStats.rejected``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LLMGenerator:
    def __init__(self, cfg: LLMConfig, sleep=time.sleep):
        self.cfg = cfg
        self.client = ChatClient(ChatConfig(base_url=cfg.base_url, model=cfg.model, api_key=cfg.api_key,
                                            timeout_s=cfg.timeout_s, max_attempts=cfg.max_attempts,
                                            backoff_s=cfg.backoff_s, backoff_max_s=cfg.backoff_max_s,
                                            cache_dir=cfg.cache_dir), sleep=sleep)
        self._lock = threading.Lock()
        self._accepted = self._failed = 0

    @property
    def stats(self) -> LLMStats:
        c = self.client.stats
        return LLMStats(requests=c.requests, cache_hits=c.cache_hits, retries=c.retries,
                        accepted_items=self._accepted, failed_items=self._failed, rejected=Counter(c.rejected))

    def _messages(self, meta: dict[str, Any]) -> list[dict[str, str]]:
        public = {k: v for k, v in meta.items() if k not in ("audio",)}
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps(public, ensure_ascii=False, sort_keys=True)}]

    def _body_options(self) -> dict[str, Any]:
        return {"temperature": self.cfg.temperature, "response_format": {"type": "json_object"}}

    def cache_key(self, meta: dict[str, Any]) -> str:
        return self.client.cache_key(self.client.body(self._messages(meta), **self._body_options()))

    def _parse(self, content: str, meta: dict[str, Any]) -> tuple[QAPair, ...]:
        try:
            reply = json.loads(content)
        except (json.JSONDecodeError, TypeError) as exc:
            raise _Reject("malformed_json") from exc
        errors = validate(reply, REPLY_SCHEMA)
        if errors:
            raise _Reject("schema", errors[0])
        pairs = []
        for i, qa in enumerate(reply["qa"]):
            options = tuple(qa.get("options", ()))
            if options and qa["answer"] not in options:
                raise _Reject("schema", f"$.qa[{i}]: answer not among options")
            question = qa["question"]
            if options:
                question += " " + " ".join(f"({'ABCDEF'[j]}) {o}." for j, o in enumerate(options))
            answer = f"({'ABCDEF'[options.index(qa['answer'])]}) {qa['answer']}" if options else qa["answer"]
            pairs.append(QAPair(question=question, answer=answer, skill=qa["skill"], generator=f"llm:{self.cfg.model}",
                                template=PROMPT_ID, sources=(meta["id"],), options=options))
        return tuple(pairs)

    def generate_one(self, meta: dict[str, Any]) -> LLMResult:
        try:
            content = self.client.complete(self._messages(meta), accept=lambda c: self._parse(c, meta),
                                           **self._body_options())
        except ChatError as exc:
            with self._lock:
                self._failed += 1
            return LLMResult(item_id=meta["id"], pairs=(), error=f"{exc.reason}: {exc}")
        pairs = self._parse(content, meta)
        with self._lock:
            self._accepted += 1
        return LLMResult(item_id=meta["id"], pairs=pairs)

    def generate(self, metas: Sequence[dict[str, Any]]) -> list[LLMResult]:
        """One result per input, in input order, with at most ``concurrency`` requests in flight."""
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(self.generate_one, metas))
