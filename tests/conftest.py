"""Shared test helpers: the golden fixture's location and tiny models. Everything is offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AF2_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "af2-golden-a"
TRAIN_FIXTURE = SHARED / "fixtures" / "af2-train-golden-a"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.fail(f"golden fixture not found at {FIXTURE}; set AF2_SHARED to the shared/ folder")
    return FIXTURE


@pytest.fixture(scope="session")
def train_fixture_dir() -> Path:
    if not TRAIN_FIXTURE.is_dir():
        pytest.fail(f"training fixture not found at {TRAIN_FIXTURE}; set AF2_SHARED to the shared/ folder")
    return TRAIN_FIXTURE


@pytest.fixture(scope="session")
def official_model(fixture_dir):
    """The fixture's tiny official checkpoint loaded through our strict loader (model, tokenizer, ids)."""
    from af2.checkpoint.official import load_official
    from af2.parity import fixture_config

    return load_official(fixture_dir / "checkpoint", cfg=fixture_config(fixture_dir))


def randomize_gates(model, generator: torch.Generator) -> None:
    """Open every cross-attention gate so that audio moves the logits (gates start at zero)."""
    with torch.no_grad():
        for layer in model.decoder_layers:
            if layer.xattn is not None:
                layer.xattn.attn_gate.uniform_(0.3, 1.0, generator=generator)
                layer.xattn.ff_gate.uniform_(0.3, 1.0, generator=generator)


@pytest.fixture(scope="session")
def open_gates():
    return randomize_gates


@pytest.fixture
def three_rows(official_model):
    """``make(dtype)`` → (model, run): a copy of the fixture model in ``dtype`` with open gates, and
    ``run(rows)`` → (greedy tokens, stacked per-step logits) for those of three prompts over three
    two-window clips (row 1's second window padded), 6 new tokens each."""
    import copy

    from af2.generate import GenerationConfig, generate, left_pad

    def make(dtype: torch.dtype):
        model = copy.deepcopy(official_model[0]).to(dtype).eval()
        randomize_gates(model, torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(0)
        windows = torch.rand(3, 2, 160_000, generator=g) - 0.5
        mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        with torch.inference_mode():
            audio = model.encode_audio(windows, mask.to(dtype), cache_kv=True)
        prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]

        def run(rows: list[int]):
            logits: list[torch.Tensor] = []
            ids, attn = left_pad([prompts[r] for r in rows], 0)
            with torch.inference_mode():  # as af2's API makes contexts
                context = audio.select(torch.tensor(rows))
            tokens = generate(model, context, ids, attn, GenerationConfig(max_new_tokens=6), (), 0, logits)
            return tokens, torch.stack(logits)

        return model, run

    return make


class ChatServer:
    """A chat-completions server on 127.0.0.1 for the judge and QA-generator clients. ``reply(body)``
    returns (HTTP status, content string, seconds to wait); content None sends a non-chat body.
    Every request body is kept in ``requests`` (with its ``_path`` and ``_auth`` header);
    ``max_inflight`` is the most requests served at once."""

    def __init__(self, reply):
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests, lock, outer = [], threading.Lock(), self
        self.inflight = self.max_inflight = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append({**body, "_path": self.path, "_auth": self.headers.get("Authorization")})
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                    status, content, delay = reply(body)
                try:
                    time.sleep(delay)
                    self._send(status, content)
                finally:
                    with lock:
                        outer.inflight -= 1

            def _send(self, status, content):
                if status != 200:
                    self.send_error(status)
                    return
                payload = b"<html>oops" if content is None else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first, as a test intends

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    """Start ``ChatServer(reply)`` servers; all are closed after the test."""
    servers = []

    def start(reply):
        servers.append(ChatServer(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
