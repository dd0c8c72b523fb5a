"""The HTTP application: routes parse and validate, then hand the request to the engine.

    GET  /                      the web page (one static file, works offline)
    GET  /health                200 once the model is loaded, 503 before
    GET  /metrics               Prometheus text
    GET  /v1/models             the served model
    POST /v1/chat/completions   OpenAI chat completions with audio (streamed or not)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from af2.inference import AF2, AudioFacts
from af2.model.af2 import TOKENS_PER_WINDOW
from af2.serve import protocol
from af2.serve.engine import Delta, Engine, Failed, Finished, Job, QueueFull
from af2.serve.inputs import fetch, prepare, prompt_ids
from af2.serve.metrics import Metrics
from af2.serve.protocol import ApiError

log = logging.getLogger("af2.serve")


@dataclass(frozen=True)
class ServeConfig:
    """What ``af2 serve`` was asked for. Limits bound memory: at most ``max_batch`` rows decode and
    ``max_queue`` requests wait; bodies, audio and answers have caps."""

    model_name: str  # the id clients send as "model"
    max_batch: int = 16
    max_queue: int = 64
    max_body_mb: float = 32.0
    max_tokens: int = 1024  # the most one request may ask for
    default_max_tokens: int = 256
    api_key: str | None = None  # Bearer token; None = no authentication
    allow_remote_audio: bool = False

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


class _RequestLog:
    """One log line and one metrics update per request, however it ends."""

    def __init__(self, rid: str, metrics: Metrics):
        self.rid, self.metrics, self.t0, self.logged = rid, metrics, time.perf_counter(), False
        self.audio_s, self.tokens, self.first_s = 0.0, 0, None

    def done(self, status: int) -> None:
        if self.logged:
            return
        self.logged = True
        latency = time.perf_counter() - self.t0
        self.metrics.request_done(status, latency, self.audio_s)
        ttft = "-" if self.first_s is None else f"{self.first_s:.3f}"
        log.info("%s status=%d audio_s=%.1f tokens=%d ttft_s=%s latency_s=%.3f", self.rid, status, self.audio_s,
                 self.tokens, ttft, latency)


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc)


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ApiError(413, f"the request body is larger than the server's limit of {limit / 2**20:g} MB "
                            "(--max-body-mb); send a shorter or more compressed clip", None, "body_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    size, pieces = 0, []
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise too_big
        pieces.append(piece)
    return b"".join(pieces)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Gone(Exception):
    pass


async def _events(job: Job, queue: asyncio.Queue, request: Request) -> AsyncIterator:
    """The job's events until it finishes; a client disconnect cancels its row."""
    watcher = asyncio.ensure_future(_disconnected(request))
    getter = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                raise _Gone
            event = getter.result()
            yield event
            if isinstance(event, (Finished, Failed)):
                return
    finally:
        for task in (watcher, getter):
            if task is not None:
                task.cancel()
        job.cancel()


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@dataclass
class _Reply:
    """One accepted request on its way back: what the response needs besides the engine's events."""

    rid: str
    created: int
    req: protocol.ChatRequest
    job: Job
    queue: asyncio.Queue
    facts: AudioFacts
    prompt_tokens: int
    record: _RequestLog

    def usage(self, end: Finished) -> dict:
        return protocol.usage(self.prompt_tokens, end.completion_tokens, self.facts.windows * TOKENS_PER_WINDOW)

    def extension(self, end: Finished) -> dict:
        return protocol.audio_extension(self.facts, {"queued_s": end.queued_s, "first_token_s": end.first_token_s,
                                                     "total_s": time.perf_counter() - self.record.t0})

    def finished(self, end: Finished) -> None:
        self.record.tokens, self.record.first_s = end.completion_tokens, end.first_token_s


class _Service:
    """The routes' shared state: configuration, the model and engine once loaded, metrics."""

    def __init__(self, cfg: ServeConfig, loader: Callable[[], AF2]):
        self.cfg, self.loader = cfg, loader
        self.api: AF2 | None = None
        self.engine: Engine | None = None
        self.error: str | None = None
        self.metrics = Metrics()

    def load(self) -> None:
        try:
            api = self.loader()
            engine = Engine(api, max_batch=self.cfg.max_batch, max_queue=self.cfg.max_queue, metrics=self.metrics)
            engine.start()
            self.api, self.engine = api, engine
            log.info("model %s loaded; ready", self.cfg.model_name)
        except Exception as exc:  # noqa: BLE001 - reported by /health and every request
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load model %s: %s", self.cfg.model_name, self.error)

    def authorize(self, request: Request) -> None:
        if self.cfg.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.cfg.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key; send 'Authorization: Bearer KEY'", None,
                           "invalid_api_key")

    def ready(self) -> tuple[AF2, Engine]:
        if self.engine is None:
            message = f"the model failed to load: {self.error}" if self.error else "the model is still loading"
            raise ApiError(503, message, None, "model_not_ready", "server_error", {"Retry-After": "5"})
        return self.api, self.engine

    # -- routes ---------------------------------------------------------------------------------

    async def page(self) -> HTMLResponse:
        return HTMLResponse((resources.files("af2.serve") / "static" / "index.html").read_text(encoding="utf-8"))

    async def health(self) -> JSONResponse:
        if self.engine is not None:
            return JSONResponse({"status": "ok", "model": self.cfg.model_name, "auth": self.cfg.api_key is not None})
        return JSONResponse({"status": "error" if self.error else "loading", "message": self.error}, status_code=503)

    async def metrics_text(self, request: Request) -> PlainTextResponse:
        self.authorize(request)
        engine = self.engine
        body = self.metrics.render(queue_depth=engine.queue_depth if engine else 0,
                                   running=len(engine.rows) if engine else 0, ready=engine is not None)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    async def models(self, request: Request) -> JSONResponse:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [{"id": self.cfg.model_name, "object": "model",
                                                         "created": 0, "owned_by": "af2"}]})

    async def chat(self, request: Request) -> Response:
        record = _RequestLog(f"chatcmpl-{uuid.uuid4().hex[:24]}", self.metrics)
        try:
            self.authorize(request)
            api, engine = self.ready()
            try:
                body = json.loads(await _read_body(request, self.cfg.max_body_bytes))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ApiError(400, f"the body is not valid JSON: {exc}", None, "invalid_json") from None
            req = protocol.parse_chat(body, max_tokens_limit=self.cfg.max_tokens)
            if req.model != self.cfg.model_name:
                raise ApiError(404, f"model {req.model!r} is not served here; use {self.cfg.model_name!r}", "model",
                               "model_not_found")
            reply = await self._submit(req, api, engine, record)
        except ApiError as err:
            record.done(err.status)
            return _error_response(err)
        headers = protocol.truncation_headers(reply.facts)
        if req.stream:
            return StreamingResponse(self._stream(reply, request), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self._collect(reply, request, headers)

    # -- a request's life -----------------------------------------------------------------------

    async def _submit(self, req: protocol.ChatRequest, api: AF2, engine: Engine, record: _RequestLog) -> _Reply:
        """Claim a queue place, decode the clip off the event loop, hand the job to the engine."""
        try:
            engine.reserve()
        except QueueFull as exc:
            latency = self.metrics.latency
            wait = max(1, min(30, math.ceil(latency.total / max(sum(latency.counts), 1))))
            raise ApiError(429, f"the server is busy: {exc}; retry in {wait} s", None, "rate_limit_exceeded",
                           "rate_limit_error", {"Retry-After": str(wait)}) from None
        try:
            data = await run_in_threadpool(fetch, req.audio, allow_remote=self.cfg.allow_remote_audio,
                                           max_bytes=self.cfg.max_body_bytes)
            windows, facts = await run_in_threadpool(prepare, api, data, req.audio.param,
                                                     strict_length=req.strict_length)
            prompt = prompt_ids(api, req.question)
        except BaseException:
            engine.release()
            raise
        record.audio_s = facts.kept_s
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        job = Job(record.rid, prompt, windows, facts, req.options, req.max_tokens or self.cfg.default_max_tokens,
                  req.stop, emit)
        engine.submit(job)
        return _Reply(record.rid, int(time.time()), req, job, queue, facts, len(prompt), record)

    async def _collect(self, reply: _Reply, request: Request, headers: dict[str, str]) -> Response:
        text, end = [], None
        try:
            async for event in _events(reply.job, reply.queue, request):
                if isinstance(event, Delta):
                    text.append(event.text)
                elif isinstance(event, Failed):
                    err = ApiError(500, event.message, None, "internal_error", "server_error")
                    reply.record.done(500)
                    return _error_response(err)
                else:
                    end = event
        except _Gone:
            reply.record.done(499)  # nginx's "client closed request"
            return Response(status_code=499)
        reply.finished(end)
        body = protocol.completion(reply.rid, reply.created, self.cfg.model_name, "".join(text), end.reason,
                                   reply.usage(end), reply.extension(end))
        reply.record.done(200)
        return JSONResponse(body, headers=headers)

    async def _stream(self, reply: _Reply, request: Request) -> AsyncIterator[str]:
        status, name = 499, self.cfg.model_name
        extra = {"usage": None} if reply.req.include_usage else {}
        try:
            yield _sse(protocol.chunk(reply.rid, reply.created, name, {"role": "assistant", "content": ""}, **extra))
            async for event in _events(reply.job, reply.queue, request):
                if isinstance(event, Delta):
                    yield _sse(protocol.chunk(reply.rid, reply.created, name, {"content": event.text}, **extra))
                elif isinstance(event, Failed):
                    status = 500
                    yield _sse(ApiError(500, event.message, None, "internal_error", "server_error").body())
                else:
                    reply.finished(event)
                    status = 200
                    yield _sse(protocol.chunk(reply.rid, reply.created, name, {}, event.reason,
                                              af2=reply.extension(event), **extra))
                    if reply.req.include_usage:
                        yield _sse({"id": reply.rid, "object": "chat.completion.chunk", "created": reply.created,
                                    "model": name, "choices": [], "usage": reply.usage(event)})
            yield "data: [DONE]\n\n"
        except _Gone:
            pass
        finally:
            reply.record.done(status)


def create_app(cfg: ServeConfig, loader: Callable[[], AF2]) -> FastAPI:
    """The app; ``loader`` runs in a background thread at start-up, so /health answers at once."""
    service = _Service(cfg, loader)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        threading.Thread(target=service.load, name="af2-load", daemon=True).start()
        yield
        if service.engine is not None:
            await run_in_threadpool(service.engine.stop)

    app = FastAPI(title="af2", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, _api_error)
    app.add_api_route("/", service.page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_api_route("/metrics", service.metrics_text, methods=["GET"])
    app.add_api_route("/v1/models", service.models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", service.chat, methods=["POST"])
    return app
