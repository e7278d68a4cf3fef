"""The HTTP server: `python -m serving PACKAGE --port 8000` (FastAPI app, run by uvicorn).

    POST /v1/classify   {"texts": [...]}  -> {"results": [{"label", "probabilities"}, ...]}
    POST /v1/translate  {"texts": [...], "num_beams": 4}  -> {"results": [{"translation"}, ...]}
    GET  /health        200 while the process runs (liveness)
    GET  /ready         200 once the model is loaded, 503 before and while draining (readiness)
    GET  /metadata      task, labels or languages, package, manifest digest, export metrics,
                        execution providers, precision, intra-op threads, limits
    GET  /metrics       Prometheus text exposition (serving/metrics.py)

Results come in the order of the request's texts. Concurrent requests are merged into model
calls by serving.batching.DynamicBatcher (translation: only requests with the same num_beams).
The endpoint of the other task answers 409. Every error is {"error": "one line"}: 413 for more
texts or longer texts than the limits, 422 for a body that is not what the endpoint reads,
500 when a model call fails (only the requests in that call), 503 while loading or draining;
no traceback is ever sent.

Every answer names the model that computed it: {"results": [...], "model_version": "v2.0.0"}
(the package folder's name when following a registry, else "sha256:" + the manifest digest's
first 12 hex digits).

Hot swap (--follow DIR): DIR/current is a symlink to a complete package folder, DIR/<version>/,
replaced atomically when the champion changes (`python -m flows.release sync --into DIR`, which
has DVC and GTO; this server has neither). Every --follow-interval seconds the server resolves
the link; a new target is loaded and verified in a thread of its own while the old model keeps
answering, then swapped in between two model calls: no request is dropped or failed, each
answer is wholly the old model's or the new one's (a request split over calls that straddle the
swap names both). A target that fails to load is logged in one line and not retried until the
link moves again; the old model keeps serving.

Startup: the manifest's fields, digest and every file's hash are checked before the server
listens (a bad package, or an address it cannot listen on: one line on stderr, exit code 1);
the onnxruntime sessions are then
built while the server already answers /health (and 503 on /ready). SIGTERM or SIGINT: stop
accepting, answer every request already received (queued texts go out without waiting for
more), then exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException

from serving.batching import BatcherClosed, BatchError, DynamicBatcher, one_line
from serving.classifier import softmax
from serving.metrics import ServerMetrics
from serving.package import PackageError, is_blank, precision_warning

logger = logging.getLogger("uvicorn.error")  # uvicorn's own log (stderr)

ENDPOINTS = {"classification": "/v1/classify", "translation": "/v1/translate"}
KNOWN_PATHS = frozenset({*ENDPOINTS.values(), "/health", "/ready", "/metadata", "/metrics"})
MAX_BEAMS = 16  # a request's num_beams; beams multiply a call's work
MODEL_OPTIONS = ("threads", "precision")  # the Settings fields that are not request limits
FOLLOW_LINK = "current"  # --follow DIR: DIR/current -> DIR/<version>/ (flows.release sync)


@dataclass(frozen=True)
class Settings:
    max_batch_size: int = 32  # texts per model call
    max_delay_ms: float = 5.0  # the longest a text waits for others to share its call
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    # The model's own options, not limits (so not in /metadata's "limits").
    threads: Optional[int] = None  # intra-op threads per graph (None: the runtime's default)
    precision: str = "auto"  # "auto" (the manifest's serve_precision), "fp32" or "int8"

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_texts", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")


# ---------------------------------------------------------------- requests


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]


class TranslateRequest(ClassifyRequest):
    num_beams: Optional[StrictInt] = Field(default=None, ge=1, le=MAX_BEAMS)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def field_name(loc) -> str:
    """("body", "texts", 3) -> "texts[3]"."""
    name = ""
    for part in loc:
        if part == "body" and not name:
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def describe_validation(errors: list) -> str:
    """pydantic's errors as one line naming the field(s): "texts[2]: Input should be a valid string"."""
    parts = []
    for item in errors:
        if item.get("type") == "json_invalid":
            detail = (item.get("ctx") or {}).get("error")
            parts.append("the request body is not valid JSON" + (f" ({detail})" if detail else ""))
            continue
        name = field_name(item.get("loc", ()))
        if not name and item.get("type") in ("missing", "model_attributes_type", "dict_type"):
            # also what a body sent without content-type: application/json looks like
            parts.append('request body: expected a JSON object such as {"texts": [...]}, sent as content-type: application/json')
            continue
        message = str(item.get("msg", "invalid")).splitlines()[0] if item.get("msg") else "invalid"
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{name}: {message}" if name else f"request body: {message}")
    extra = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + extra if parts else "the request body is not valid"


def lone_surrogate(text: str) -> Optional[int]:
    """Where `text` holds a lone UTF-16 surrogate (JSON lets `"\\ud800"` through), or None. The
    tokenizer cannot take such a text, and a text that fails a model call fails every request
    batched with it, so it is refused before it is queued."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def check_texts(texts: list[str], settings: Settings) -> Optional[JSONResponse]:
    """The request limits, each refusal naming the limit (and the text's index)."""
    if not texts:
        return error(422, "texts is empty: send at least one text")
    if len(texts) > settings.max_texts:
        return error(413, f"texts holds {len(texts)} texts; the limit is {settings.max_texts} per request (--max-texts)")
    for i, text in enumerate(texts):
        if is_blank(text):
            return error(422, f"texts[{i}] is empty")
        if len(text) > settings.max_chars:
            return error(
                413, f"texts[{i}] has {len(text)} characters; the limit is {settings.max_chars} per text (--max-chars)"
            )
        surrogate = lone_surrogate(text)
        if surrogate is not None:
            return error(422, f"texts[{i}] is not valid Unicode: a lone surrogate (U+{ord(text[surrogate]):04X}) "
                              f"at character {surrogate}; send the character's full escape pair, or UTF-8")
    return None


# ---------------------------------------------------------------- the model side (worker thread)


def load_model(package: str | Path, task: str, settings: Settings, verify: bool = True):
    if task == "translation":
        from serving.translator import OnnxTranslator

        return OnnxTranslator(package, verify=verify, threads=settings.threads, precision=settings.precision)
    from serving.classifier import OnnxClassifier

    return OnnxClassifier(package, verify=verify, threads=settings.threads, precision=settings.precision)


def classify_fn(model) -> Callable[[list[str], Hashable], list[dict]]:
    labels = list(model.labels)

    def run(texts: list[str], key: Hashable) -> list[dict]:
        logits = model.logits(texts)
        return [
            {"label": labels[int(row.argmax())], "probabilities": dict(zip(labels, probs.tolist()))}
            for row, probs in zip(logits, softmax(logits))
        ]

    return run


def translate_fn(model) -> Callable[[list[str], Hashable], list[dict]]:
    def run(texts: list[str], num_beams: Hashable) -> list[dict]:
        options = model.decoding(num_beams=num_beams)
        return [{"translation": text} for text in model.translate(texts, **options)]

    return run


def tagged(run: Callable[[list[str], Hashable], list[dict]], version: str) -> Callable[[list[str], Hashable], list]:
    """The model call with each result paired with the version that computed it."""
    return lambda texts, key: [(version, result) for result in run(texts, key)]


def followed_package(follow: Path) -> Path:
    """The package folder DIR/current points at."""
    link = follow / FOLLOW_LINK
    target = link.resolve()
    if not target.is_dir():
        raise PackageError(f"{link} does not point at a package folder (python -m flows.release sync --into {follow})")
    return target


def version_of(model, package: Path, following: bool) -> str:
    if following:
        return package.name
    return "sha256:" + str(model.manifest.get("manifest_sha256") or "")[:12]


def sessions(model) -> list:
    names = ("session", "encoder", "decoder", "decoder_with_past", "reorder")
    return [getattr(model, name) for name in names if getattr(model, name, None) is not None]


def intra_op_threads(model) -> Optional[int]:
    """Read back from the sessions (all of a model's share one setting), as the translator's
    default comes from TRANSLATOR_THREADS; None: onnxruntime's default, one per physical core."""
    return sessions(model)[0].get_session_options().intra_op_num_threads or None


def describe_model(model, package: Path, task: str, settings: Settings) -> dict:
    manifest = model.manifest
    providers: list[str] = []
    for session in sessions(model):
        providers += [name for name in session.get_providers() if name not in providers]
    info: dict[str, Any] = {
        "task": task,
        "package": str(package.resolve()),
        "manifest_sha256": manifest.get("manifest_sha256"),
        "format_version": manifest.get("format_version"),
        "opset": manifest.get("opset"),
        "max_length": manifest.get("max_length"),
        "export_metrics": {name: manifest[name] for name in ("parity", "gate") if name in manifest},
        "providers": providers,
        "precision": getattr(model, "precision", "fp32"),
        "threads": intra_op_threads(model),
        "versions": manifest.get("versions"),
        "limits": {key: value for key, value in asdict(settings).items() if key not in MODEL_OPTIONS},
        "endpoint": ENDPOINTS[task],
    }
    if task == "classification":
        info["labels"] = list(model.labels)
    else:
        info["languages"] = manifest.get("languages")
        info["language_tag"] = manifest.get("language_tag")
        # where the KV cache lives between decoding steps: "host" (numpy) or the device's name
        info["kv_cache"] = "host" if model.device is None else model.device[0]
        # what scores a beam step's candidates: search.onnx ("graph") or numpy (older packages)
        info["search"] = "numpy" if model.search is None else "graph"
        info["decoding"] = model.decoding()
        info["limits"]["max_num_beams"] = MAX_BEAMS
    return info


# ---------------------------------------------------------------- the app


class ServerState:
    """What one app instance serves: the model once loaded, its batcher, its metrics."""

    def __init__(self, package: Path, task: str, settings: Settings, loader: Callable[[], Any],
                 on_load_error: Optional[Callable[[str], None]] = None,
                 follow: Optional[Path] = None, follow_interval: float = 5.0):
        self.package, self.task, self.settings, self.loader = package, task, settings, loader
        self.on_load_error = on_load_error
        self.follow, self.follow_interval = follow, follow_interval
        self.version = ""
        self.refused: Optional[Path] = None  # a followed target that failed to load
        self.metrics = ServerMetrics()
        self.model: Any = None
        self.info: Optional[dict] = None
        self.batcher: Optional[DynamicBatcher] = None
        self.load_error: Optional[str] = None
        self.draining = False
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.executor: Optional[ThreadPoolExecutor] = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining

    def not_ready(self) -> JSONResponse:
        if self.load_error:
            return error(503, f"the model failed to load: {self.load_error}")
        if self.draining:
            return error(503, "the server is shutting down")
        return error(503, "the model is loading")

    async def load(self) -> None:
        try:
            model = await asyncio.get_running_loop().run_in_executor(self.executor, self.loader)
            run = self.adopt(model, self.package)
        except Exception as err:  # PackageError, onnxruntime's own errors: one line, the server stops
            self.load_error = load_failure(err)
            if self.on_load_error is not None:
                self.on_load_error(self.load_error)
            return
        batcher = DynamicBatcher(run, self.settings.max_batch_size, self.settings.max_delay_ms,
                                 executor=self.executor, on_batch=self.metrics.observe_batch)
        batcher.start()
        if self.draining:
            batcher.hurry()
        self.metrics.track_queue(lambda: batcher.queue_depth)
        self.model, self.batcher = model, batcher
        logger.info("Model ready: %s package %s (%s, %s)", self.task, self.package,
                    ", ".join(self.info["providers"]), self.info["precision"])
        warning = precision_warning(self.info["providers"], self.info["precision"])
        if warning:
            logger.warning(warning)

    def adopt(self, model, package: Path) -> Callable[[list[str], Hashable], list]:
        """Describe `model` as the one served; its call, results tagged with its version."""
        version = version_of(model, package, self.follow is not None)
        info = describe_model(model, package, self.task, self.settings)
        info["model_version"] = version
        if self.follow is not None:
            info["follow"] = str(self.follow)
        run = translate_fn(model) if self.task == "translation" else classify_fn(model)
        self.info, self.package, self.version = info, package, version
        return tagged(run, version)

    async def follow_registry(self) -> None:
        """--follow: swap in the package DIR/current points at whenever it moves."""
        while not self.draining:
            await asyncio.sleep(self.follow_interval)
            try:
                target = followed_package(self.follow)
            except PackageError as err:
                logger.warning("Follow: %s; still serving %s", err, self.version)
                continue
            if target in (self.package, self.refused) or self.batcher is None:
                continue
            await self.swap_to(target)

    async def swap_to(self, target: Path) -> None:
        """Load `target` in a thread of its own (the old model keeps answering), then hand the
        batcher the new call: the next model call is the new model's, none is interrupted."""
        try:
            model = await asyncio.to_thread(load_model, target, self.task, self.settings)
        except Exception as err:
            self.refused = target
            logger.warning("Follow: %s failed to load, still serving %s: %s", target, self.version, load_failure(err))
            return
        old, self.model = self.version, model
        self.batcher.model = self.adopt(model, target)
        self.refused = None
        logger.info("Follow: swapped %s -> %s (%s)", old, self.version, target)

    def begin_drain(self) -> None:
        """SIGTERM/SIGINT: /ready turns 503 and queued texts stop waiting for company."""
        self.draining = True
        if self.batcher is not None:
            self.batcher.hurry()

    async def answer(self, task: str, texts: list[str], key: Hashable = None) -> JSONResponse:
        if task != self.task:
            return error(409, f"this server runs a {self.task} package ({self.package}): "
                              f"use POST {ENDPOINTS[self.task]}, not {ENDPOINTS[task]}")
        refused = check_texts(texts, self.settings)
        if refused is not None:
            return refused
        if self.batcher is None:
            return self.not_ready()
        try:
            tagged_results = await self.batcher.submit(texts, key)
        except BatcherClosed:
            return error(503, "the server is shutting down")
        except BatchError as err:
            return error(500, f"the model call failed: {err}")
        versions = sorted({version for version, _ in tagged_results})
        return JSONResponse({"results": [result for _, result in tagged_results],
                             "model_version": versions[0] if len(versions) == 1 else versions})


class BodyLimit:
    """A body beyond what the limits allow is refused (413): max_texts texts of max_chars
    characters, each character as a 12-byte JSON escape at most (a character outside the BMP is
    a surrogate pair, `\\ud83d\\ude00`, as Python's json.dumps and `requests` send it). A
    Content-Length over it is refused unread; a body sent without one (chunked) is read up to the
    limit and refused as soon as it passes it, so it is never held in memory whole."""

    BYTES_PER_CHAR = 12

    def __init__(self, app, settings: Settings):
        self.app = app
        self.limit = self.BYTES_PER_CHAR * settings.max_texts * settings.max_chars + 65536

    def too_large(self, size: str) -> JSONResponse:
        return error(413, f"the request body has {size} bytes; the limit is {self.limit} (from --max-texts and --max-chars)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                return await self.too_large(str(int(length)))(scope, receive, send)
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        replay = await self.read_up_to_limit(receive)
        if replay is None:
            return await self.too_large(f"more than {self.limit}")(scope, receive, send)
        return await self.app(scope, replay, send)

    async def read_up_to_limit(self, receive):
        """A body without Content-Length read whole when within the limit, as a `receive` that
        hands it to the app again; None as soon as it is over the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees that
                first = message
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return None
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return first

        return replay


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint (unknown paths: "other") and status."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status, started = 500, time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


def create_app(
    package: str | Path,
    task: str,
    settings: Settings = Settings(),
    loader: Optional[Callable[[], Any]] = None,
    on_load_error: Optional[Callable[[str], None]] = None,
    follow: Optional[Path] = None,
    follow_interval: float = 5.0,
) -> FastAPI:
    """The app for a `task` package. `loader()` builds the model (default: load_model with
    hash checks); it runs in the model's worker thread once the app starts. `follow`: the
    folder whose `current` link the server follows (hot swap), `package` being its target now."""
    package = Path(package)
    if loader is None:
        loader = lambda: load_model(package, task, settings)
    state = ServerState(package, task, settings, loader, on_load_error, follow, follow_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop = asyncio.get_running_loop()
        state.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        loading = asyncio.create_task(state.load())
        following = asyncio.create_task(state.follow_registry()) if follow is not None else None
        try:
            yield
        finally:
            state.draining = True
            if following is not None:
                following.cancel()
            if not loading.done():
                loading.cancel()
            if state.batcher is not None:
                await state.batcher.close()  # every request already queued is answered
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="transfer-serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # added last: outermost, it sees every answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, describe_validation(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else one_line(exc)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}")

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> JSONResponse:
        return await state.answer("classification", body.texts)

    @app.post("/v1/translate")
    async def translate(body: TranslateRequest) -> JSONResponse:
        if state.model is not None and state.task == "translation":
            key = state.model.decoding(num_beams=body.num_beams)["num_beams"]
        else:
            key = body.num_beams
        return await state.answer("translation", body.texts, key)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"}) if state.ready else state.not_ready()

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        return JSONResponse(state.info) if state.info is not None else state.not_ready()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=state.metrics.content_type)

    return app


# ---------------------------------------------------------------- running it


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the app when a signal starts the shutdown (so the batcher
    stops waiting for more texts and /ready turns 503)."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self.state.loop is not None and not self.state.loop.is_closed():
            self.state.loop.call_soon_threadsafe(self.state.begin_drain)


class ListenError(Exception):
    """The address given cannot be bound (in use, not this machine's, not resolvable)."""


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here rather than by uvicorn: a failure is then ours to report
    in one line (uvicorn logs it and exits 3), and uvicorn serves this very socket, so nothing
    can take the port between a check and the bind. Bound as uvicorn binds (SO_REUSEADDR, so
    a restart is not refused while the last run's connections sit in TIME_WAIT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = (err.strerror or str(err)).lower()
        raise ListenError(f"cannot listen on {address(host, port)}: {reason}") from None
    return sock


def load_failure(err: Exception) -> str:
    return str(err).splitlines()[0] if isinstance(err, PackageError) else one_line(err)


def report(message: str) -> None:
    print(f"error: serve: {message}", file=sys.stderr, flush=True)


def run_server(
    package: str | Path,
    task: str,
    host: str,
    port: int,
    settings: Settings,
    log_level: str = "info",
    access_log: bool = True,
    graceful_timeout: Optional[float] = 30.0,
    follow: Optional[Path] = None,
    follow_interval: float = 5.0,
) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (1 when the address cannot be bound or the
    model failed to load). The package's hashes are expected to be checked already (the model
    is built without)."""
    try:
        sock = listening_socket(host, port)
    except ListenError as err:
        report(str(err))
        return 1
    app = create_app(package, task, settings, loader=lambda: load_model(package, task, settings, verify=False),
                     follow=follow, follow_interval=follow_interval)
    state: ServerState = app.state.server
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=graceful_timeout, lifespan="on")
    server = GracefulServer(config, state)

    def failed(message: str) -> None:
        report(message)
        server.should_exit = True

    state.on_load_error = failed
    # uvicorn re-raises the signal that stopped it once it is done; with these handlers that
    # ends in a return (exit code 0: a requested stop) instead of a kill by the signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    # uvicorn logs its address only when it binds the socket itself.
    logger.info("Listening on http://%s (SIGTERM or Ctrl+C to stop)", address(host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if state.load_error else 0
