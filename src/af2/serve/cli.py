"""``af2 serve``: the OpenAI-compatible HTTP server and its web page."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from af2.errors import RequestError
from af2.inference import DEFAULT_MODEL
from af2.registry import DEFAULT_MODEL_ENV


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API, with a web page",
                       description="Answer POST /v1/chat/completions (OpenAI's contract, audio as input_audio or a "
                                   "data: audio_url), GET /v1/models, /health, /metrics, and a web page at /. "
                                   "Concurrent requests share decoding steps (continuous batching).")
    p.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV, DEFAULT_MODEL),
                   help=f"af2 model folder, official checkpoint folder or hub id (default: ${DEFAULT_MODEL_ENV} or "
                        f"{DEFAULT_MODEL})")
    p.add_argument("--served-model-name", help="the id clients send as 'model' (default: --model as given)")
    p.add_argument("--base-lm", help="Qwen2.5 base (folder or hub id) for official checkpoints")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16", "int8"],
                   help="default auto: bfloat16 on CPUs with AVX512-BF16/AMX, else float32; int8 = int8 linear weights")
    p.add_argument("--max-batch", type=int, default=16, help="rows decoded together (default 16)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a batch row; more get 429 with Retry-After (default 64)")
    p.add_argument("--max-audio-seconds", type=float, default=300.0,
                   help="hear at most this much of each clip (default 300); longer clips are truncated and the "
                        "response says so (or 400 when the request sets strict_length)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="larger request bodies get 413 (default 32)")
    p.add_argument("--max-tokens", type=int, default=1024, help="the most tokens one request may ask for")
    p.add_argument("--default-max-tokens", type=int, default=256, help="answer length when a request sets none")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="require 'Authorization: Bearer KEY' where KEY is the value of environment variable VAR")
    p.add_argument("--allow-remote-audio", action="store_true",
                   help="let requests name http(s) audio URLs for the server to fetch (off: no server-side "
                        "request forgery)")
    p.set_defaults(func=_serve)


def _api_key(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var, "")
    if not value.strip():
        raise RequestError(f"--api-key-env {var}: the environment variable {var} is unset or empty; export the key")
    return value.strip()


def _check(args: argparse.Namespace) -> None:
    for name in ("max_batch", "max_tokens", "default_max_tokens"):
        if getattr(args, name) < 1:
            raise RequestError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_queue < 0 or args.max_body_mb <= 0 or args.max_audio_seconds <= 0:
        raise RequestError("--max-queue must be >= 0; --max-body-mb and --max-audio-seconds must be positive")
    if args.default_max_tokens > args.max_tokens:
        raise RequestError("--default-max-tokens cannot exceed --max-tokens")


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from af2.serve.app import ServeConfig, create_app
    except ImportError as exc:
        raise RequestError(f"af2 serve needs the serve extra ({exc.name} is missing): pip install 'af2[serve]'") from None
    from af2.inference import load
    from af2.model.cpu_decode import precompile

    _check(args)
    key = _api_key(args.api_key_env)
    fmt = "%(asctime)s %(name)s %(message)s"
    af2_log = logging.getLogger("af2")
    if af2_log.handlers:  # the af2 command line already logs the library to stderr: one line each, timestamped
        for handler in af2_log.handlers:
            handler.setFormatter(logging.Formatter(fmt))
    else:
        logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and key is None:
        logging.getLogger("af2.serve").warning("listening on %s without an API key: anyone who can reach this "
                                               "address can use the model (see --api-key-env)", args.host)
    cfg = ServeConfig(model_name=args.served_model_name or args.model, max_batch=args.max_batch,
                      max_queue=args.max_queue, max_body_mb=args.max_body_mb, max_tokens=args.max_tokens,
                      default_max_tokens=args.default_max_tokens, api_key=key,
                      allow_remote_audio=args.allow_remote_audio)

    def loader():
        api = load(args.model, device=args.device, dtype=args.dtype, base_lm=args.base_lm,
                   max_audio_seconds=args.max_audio_seconds, decode_batch=args.max_batch)
        seconds = precompile(api.model.lm)  # bf16 batches on CPUs: compiled now, not in the first requests
        if seconds:
            logging.getLogger("af2.serve").info("compiled the batched audio cross-attention in %.1f s", seconds)
        return api

    uvicorn.run(create_app(cfg, loader), host=args.host, port=args.port, access_log=False, log_level="info",
                timeout_graceful_shutdown=5)
    return 0
