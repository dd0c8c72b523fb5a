"""The OpenAI chat-completions contract, as vLLM implements it for audio models, for a single-turn AF2.

Requests are validated here, once: every parameter is either honoured, neutral (identifies the
caller only), or refused with a 400 that names it. Nothing is silently ignored.

Multi-turn policy: AF2 answers one question about one clip. A request holds exactly one message, a
user turn with one audio part and the question as text. Earlier turns and system prompts are
refused (400, ``param: "messages"``), since folding them into the question would change answers.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from af2.errors import RequestError
from af2.inference import AudioFacts
from af2.serve.sampling import RowOptions

AUDIO_FORMATS = frozenset({"wav", "mp3", "flac", "ogg", "opus", "oga", "m4a", "aac", "mp4", "webm", "pcm16"})
_HONOURED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                       "seed", "stop", "stream", "stream_options", "strict_length"})
_NEUTRAL = frozenset({"user", "metadata", "store", "service_tier"})
# Parameters AF2 cannot honour, with the value(s) that mean "not used" (and are therefore accepted).
_UNSUPPORTED = {"n": (1,), "logprobs": (False,), "top_logprobs": (0,), "tools": ([],), "functions": ([],),
                "tool_choice": ("none",), "function_call": ("none",), "parallel_tool_calls": (False, True),
                "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "repetition_penalty": (1, 1.0),
                "logit_bias": ({},), "modalities": (["text"],), "audio": (), "prediction": (),
                "response_format": ({"type": "text"},), "reasoning_effort": (), "web_search_options": ()}
_MAX_STOPS = 4


class ApiError(RequestError):
    """An error answered with an OpenAI-shaped body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class AudioRef:
    """Where the request's clip is: inline bytes, or a remote URL fetched only when allowed."""

    param: str  # the request field it came from, for error messages
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    question: str
    audio: AudioRef
    options: RowOptions
    max_tokens: int | None  # None = the server's default
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    strict_length: bool


# ---------------------------------------------------------------------------------------------
# parsing


def _number(body: dict, name: str, lo: float, hi: float, *, integer: bool = False, default=None):
    value = body.get(name, default)
    if value is None:
        return default
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise bad(name, f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}", "invalid_type")
    if not lo <= value <= hi:
        raise bad(name, f"{name} must be between {lo:g} and {hi:g}, got {value}")
    return value


def _check_unknown(body: dict) -> None:
    for name, value in body.items():
        if name in _HONOURED or name in _NEUTRAL:
            continue
        if name not in _UNSUPPORTED:
            raise bad(name, f"unknown parameter {name!r}; this server honours "
                            f"{', '.join(sorted(_HONOURED))}", "unknown_parameter")
        if value is not None and value not in _UNSUPPORTED[name]:
            raise bad(name, f"{name}={value!r} is not supported by AF2 (it answers with one text choice, "
                            "greedy or sampled, without tools, logprobs or penalties)", "unsupported_parameter")


def _decode_base64(data: Any, param: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise bad(param, f"{param} must be a non-empty base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad(param, f"{param} is not valid base64") from None


def _audio_part(part: dict, where: str) -> AudioRef:
    if part["type"] == "input_audio":
        spec = part.get("input_audio")
        if not isinstance(spec, dict):
            raise bad(f"{where}.input_audio", "input_audio must be an object {data, format}")
        fmt = spec.get("format")
        if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in AUDIO_FORMATS):
            raise bad(f"{where}.input_audio.format", f"audio format {fmt!r} is not supported; use one of "
                                                     f"{', '.join(sorted(AUDIO_FORMATS))}")
        return AudioRef(f"{where}.input_audio.data", data=_decode_base64(spec.get("data"),
                                                                        f"{where}.input_audio.data"))
    spec = part.get("audio_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    param = f"{where}.audio_url.url"
    if not isinstance(url, str) or not url:
        raise bad(param, "audio_url must be {\"url\": \"data:audio/...;base64,...\"}")
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise bad(param, "a data: URL must be base64-encoded (data:audio/wav;base64,...)")
        return AudioRef(param, data=_decode_base64(payload, param))
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return AudioRef(param, url=url)
    raise bad(param, f"audio URLs with scheme {scheme!r} are refused; send the audio inline (input_audio or a "
                     "data: URL)")


def _parts(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad(where, f"{where} must be a string or a list of content parts")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_audio", "audio_url"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise bad(f"{where}[{j}].type", f"content part type {kind!r} is not supported; AF2 takes 'text' and "
                                            "one 'input_audio' (or 'audio_url' with a data: URL)")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad(f"{where}[{j}].text", "a text part needs a string 'text'")
    return content


def _messages(messages: Any) -> tuple[str, AudioRef]:
    """The question and the audio of the conversation, under the single-turn policy above."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "messages must be a non-empty list")
    audio: list[AudioRef] = []
    texts: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise bad(f"messages[{i}].role", "each message needs a role: system, developer, user or assistant")
        parts = _parts(msg.get("content"), f"messages[{i}].content")
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            if part["type"] == "text":
                texts.append(part["text"].strip())
                continue
            if msg["role"] != "user":
                raise bad(where, f"audio in a {msg['role']} turn is not supported; put the clip in the user message")
            if audio:
                raise bad(where, "more than one audio clip; AF2 answers about exactly one clip per request")
            audio.append(_audio_part(part, where))
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise bad("messages", "AF2 is single-turn: send exactly one user message (no system prompt, no earlier "
                              "turns); put any context the answer needs into the question", "multi_turn")
    if not audio:
        raise bad("messages[0].content", "no audio in the message; add an input_audio part (base64 + format)")
    question = " ".join(t for t in texts if t)
    if not question:
        raise bad("messages[0].content", "no question: add a text part asking something about the audio")
    return question, audio[0]


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("stop", "stop must be a non-empty string or a list of them")
    if len(stops) > _MAX_STOPS:
        raise bad("stop", f"at most {_MAX_STOPS} stop strings, got {len(stops)}")
    return tuple(stops)


def parse_chat(body: Any, *, max_tokens_limit: int) -> ChatRequest:
    """A chat-completions request body → ChatRequest, or an ApiError naming the bad parameter."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object")
    _check_unknown(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "model is required (see GET /v1/models)")
    question, audio = _messages(body.get("messages"))
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, 1, max_tokens_limit, integer=True)
    temperature = _number(body, "temperature", 0, 2, default=0.0)
    top_p = _number(body, "top_p", 1e-9, 1, default=1.0)
    top_k = _number(body, "top_k", -1, 1 << 20, integer=True, default=0)
    seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "stream must be true or false", "invalid_type")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise bad("stream_options", "stream_options supports only {\"include_usage\": bool}")
    strict = body.get("strict_length", False)
    if not isinstance(strict, bool):
        raise bad("strict_length", "strict_length must be true or false", "invalid_type")
    return ChatRequest(model=model, question=question, audio=audio,
                       options=RowOptions(float(temperature), float(top_p), max(int(top_k), 0), seed),
                       max_tokens=max_tokens, stop=_stop(body.get("stop")), stream=stream,
                       include_usage=bool(stream_options.get("include_usage", False)), strict_length=strict)


# ---------------------------------------------------------------------------------------------
# responses


def usage(prompt_tokens: int, completion_tokens: int, audio_tokens: int) -> dict:
    """Token counts. The clip reaches AF2 through cross-attention, not as prompt tokens, so its
    tokens are reported under ``prompt_tokens_details.audio_tokens`` and not in ``prompt_tokens``."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"audio_tokens": audio_tokens, "cached_tokens": 0}}


def audio_extension(facts: AudioFacts, timings: dict[str, float] | None = None) -> dict:
    """The ``af2`` extension field: what the model heard, and where the time went."""
    out: dict[str, Any] = {"audio": {"duration_s": facts.duration_s, "kept_s": round(facts.kept_s, 3),
                                     "truncated_s": facts.truncated_s, "windows": facts.windows}}
    if timings is not None:
        out["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return out


def truncation_headers(facts: AudioFacts) -> dict[str, str]:
    if not facts.truncated_s:
        return {}
    note = (f"audio truncated: {facts.duration_s:.1f} s long, only the first {facts.kept_s:.1f} s were heard "
            f"({facts.truncated_s:.1f} s cut)")
    return {"X-AF2-Audio-Truncated-Seconds": f"{facts.truncated_s:.3f}", "Warning": f'299 af2 "{note}"'}


def completion(rid: str, created: int, model: str, text: str, reason: str, use: dict, extension: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason}],
            "usage": use, "af2": extension}


def chunk(rid: str, created: int, model: str, delta: dict, reason: str | None = None, **extra) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}], **extra}
