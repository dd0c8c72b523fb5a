"""A request's clip → the windows the engine encodes, plus what the model will hear.

Audio only ever arrives as bytes (inline base64, or fetched from an http(s) URL when the operator
allows it); no request can name a file on the server.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import torch

from af2 import tokens
from af2.audio import load_audio, make_windows
from af2.errors import AudioError
from af2.inference import AF2, AudioFacts
from af2.serve.protocol import ApiError, AudioRef, bad

_FETCH_TIMEOUT_S = 10.0


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only: no file:, ftp: or data: handlers, so a redirect cannot reach the server's disk."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.HTTPHandler, urllib.request.HTTPSHandler, urllib.request.HTTPRedirectHandler,
                    urllib.request.HTTPErrorProcessor, urllib.request.HTTPDefaultErrorHandler):
        opener.add_handler(handler())
    return opener


def fetch(ref: AudioRef, *, allow_remote: bool, max_bytes: int) -> bytes:
    """The clip's bytes; remote URLs only with ``allow_remote`` (no server-side request forgery)."""
    if ref.data is not None:
        return ref.data
    if not allow_remote:
        raise bad(ref.param, "remote audio URLs are refused by this server (start it with --allow-remote-audio); "
                             "send the audio inline as input_audio or a data: URL", "remote_audio_disabled")
    try:
        with _opener().open(ref.url, timeout=_FETCH_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise bad(ref.param, f"cannot fetch the audio URL: {exc}", "audio_fetch_failed") from None
    if len(data) > max_bytes:
        raise ApiError(413, f"the audio at the URL is larger than {max_bytes} bytes", ref.param, "audio_too_large")
    return data


def prepare(api: AF2, data: bytes, param: str, *, strict_length: bool) -> tuple[torch.Tensor, AudioFacts]:
    """Decode and window a clip with the model's audio settings; 400 when it cannot be used."""
    try:
        decoded = load_audio(data, sample_rate=api.audio_cfg.sample_rate, max_seconds=api.max_audio_seconds)
    except AudioError as exc:
        raise bad(param, str(exc), "invalid_audio") from None
    windows = make_windows(decoded.samples, api.audio_cfg)
    facts = AudioFacts("request", decoded.duration_s, decoded.kept_s, decoded.truncated_s, windows.shape[0])
    if strict_length and decoded.truncated_s:
        raise bad(param, f"the audio is {decoded.duration_s:.1f} s long; this server hears at most "
                         f"{api.max_audio_seconds:g} s (strict_length is set; drop it to have the audio truncated)",
                  "audio_too_long")
    return windows, facts


def prompt_ids(api: AF2, question: str) -> list[int]:
    """The question in AF2's inference template, tokenised (its text never becomes special tokens);
    400 when it is too long."""
    ids = tokens.prompt_ids(api.tokenizer, question, api.special)
    limit = api.model.cfg.tokens.max_tokens
    if len(ids) > limit:
        raise bad("messages", f"the question is {len(ids)} tokens long; the model takes at most {limit}",
                  "question_too_long")
    return ids
