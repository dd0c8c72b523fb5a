"""Run the server on a free loopback port in a background thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from af2.inference import AF2
from af2.serve.app import ServeConfig, create_app


@contextmanager
def running_server(cfg: ServeConfig, loader: Callable[[], AF2], *, wait_ready: bool = True,
                   timeout: float = 60.0) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) of a running server; stop it afterwards."""
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, loader), host="127.0.0.1", port=0, access_log=False,
                                           log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="af2-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"the server did not start within {timeout:g} s")
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        if wait_ready:
            wait_healthy(url, deadline)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_healthy(url: str, deadline: float) -> None:
    """Poll ``url``/health until it answers 200, or raise once ``deadline`` (monotonic) has passed."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy in time")
