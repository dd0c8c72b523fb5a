"""Start an ``af2 serve`` app on 127.0.0.1 in a background thread, for tests and the benchmark."""

from __future__ import annotations

import base64
import threading
import time
from contextlib import contextmanager

import uvicorn

from af2.serve.app import ServeConfig, create_app


@contextmanager
def running_server(cfg: ServeConfig, loader, *, wait_ready: bool = True, timeout: float = 60.0):
    """Yield the base URL of a server bound to a free loopback port; stop it afterwards."""
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, loader), host="127.0.0.1", port=0, access_log=False,
                                           log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the test server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    if wait_ready:
        wait_healthy(url, deadline)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_healthy(url: str, deadline: float) -> None:
    import urllib.error
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy in time")


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def user(question: str, *parts: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question}, *parts]}]
