"""Request pieces for the serve tests."""

from __future__ import annotations

import base64


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def user(question: str, *parts: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question}, *parts]}]
