"""The HTTP service: ``create_app`` builds the FastAPI app that ``liqrisk serve`` runs.

Routes (scopes in brackets; see :mod:`liqrisk.serve.security`):

- ``GET /healthz``: the process is up. ``GET /readyz``: 200 once the model and the market
  data are loaded, else 503 with the reasons; names the model version and the latest bar.
  ``GET /metrics``: Prometheus metrics (:mod:`liqrisk.serve.metrics`).
- ``POST /v1/score`` [score]: accounts in, per account the probabilities per horizon, the
  rule baseline, the top reasons, the model version and the warning level.
- ``POST /v1/bars`` [ingest]: append bars to the market state, all or none; logged in the
  database first, so every process of the service (within ``bars_poll_seconds``) and a
  restart score them.
- ``GET /v1/warnings?after=&limit=`` [warnings:read]: the warnings feed, oldest first.
  ``GET /v1/accounts/{account_id}`` [warnings:read]: the level an account holds, the score
  that set it and its latest warning.
- ``POST/GET /v1/webhooks``, ``GET/DELETE /v1/webhooks/{id}``,
  ``GET /v1/webhooks/{id}/deliveries``, ``GET /v1/deliveries?warning_id=`` [webhooks:admin].
- ``POST /v1/admin/reload`` [admin]: check the alias now instead of at the next poll.

Choices, stated once:

- **Warnings are stored before the answer.** ``/v1/score`` scores, then records every scored
  account's P(negative) at ``level_horizon`` with :func:`~liqrisk.serve.store.record_scores`
  (one committed transaction: levels, warnings, outbox rows), and only then responds. If the
  store fails the request fails (503, "nothing acknowledged"): a client never holds a score
  whose warning was not stored. A failure after the commit loses nothing; a retry scores again
  and raises nothing twice (hysteresis holds the level). The ``scored_at`` of each event is
  the snapshot's ``as_of``, so snapshots that arrive out of order cannot move a level back.
- **Concurrent score requests are served together** (:mod:`liqrisk.serve.batching`): while
  one batch is scored, arriving requests queue, and the next batch scores all of them in one
  scorer call and stores their warnings in one transaction. A request that finds the scorer
  idle runs at once; each request gets exactly its own rows; a store failure fails every
  request of its batch (none acknowledged). Its answer's ``Server-Timing`` header says where
  its time went: ``wait`` (the batch ahead), ``score`` and ``store`` (its batch's), ``resume``
  (the event loop taking the answer back) and ``batch`` (accounts scored together).
- **An account already in liquidation is ``critical``.** It is not scored (its ``horizons``
  are empty), but it is past every threshold: the engine already meets ``E <= MM``. It is
  recorded as probability 1.0, so the feed and the webhooks say "critical" for it once, as for
  any other account that reaches the level, and a later healthy score releases it as usual.
  Accounts with ``status: error`` get no level (``null``) and change nothing.
- **One bad account never stops the others** (as in ``liqrisk replay``): each account is
  validated on its own and an invalid one becomes an ``error`` row naming its field path;
  only a wrong envelope (no ``accounts``, a bad ``what_if``) refuses the whole request.
- **Errors.** 401/403 from the key check; 413 above ``max_body_bytes`` (by ``Content-Length``,
  or while a chunked body streams in); 422 for validation with every
  field path (``body.bars[3].close``, with the bar's symbol) and for
  :class:`~liqrisk.features.errors.InputError` with its text; 503 while not ready; anything
  unexpected is logged with a request id and answered ``{"detail": "internal error",
  "request_id": ...}``, never with a trace. Every response carries ``X-Request-ID``.
"""

import functools
import ipaddress
import json
import logging
import math
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import pandas as pd
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from liqrisk.features.errors import InputError
from liqrisk.serve import store
from liqrisk.serve.batching import Batcher, Job, Overloaded
from liqrisk.serve.metrics import CONTENT_TYPE, ServiceMetrics
from liqrisk.serve.runtime import NotReady, Runtime, Served
from liqrisk.serve.schemas import (
    NOT_FOUND,
    NOT_READY,
    PAGE_LIMIT,
    AccountStateOut,
    BarsRequest,
    BarsResponse,
    DeliveryOut,
    ErrorOut,
    FieldError,
    Health,
    MarketInfo,
    ModelInfo,
    Readiness,
    ReloadOut,
    ScoreRequest,
    ScoreResponse,
    ValidationErrorOut,
    WarningOut,
    WarningsPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    field_path,
    responses,
)
from liqrisk.serve.scoring import with_default_as_of
from liqrisk.serve.security import SettingsDep, require
from liqrisk.serve.settings import ApiKey, Scope, ServeSettings
from liqrisk.serve.webhooks import warning_data

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
IN_LIQUIDATION_PROBABILITY = 1.0  # recorded for accounts already in liquidation (see above)
MAX_DB_INT = 2**63 - 1
MAX_ACCOUNT_ID = 200  # the store's column
_MAX_LISTED_ERRORS = 10


# --- app -------------------------------------------------------------------------------------


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The service, configured by ``settings`` (default: read from the environment).

    Parameters
    ----------
    settings : ServeSettings, optional

    Returns
    -------
    FastAPI
        Its lifespan opens the store, starts the webhook sender and loads the market and the
        model in the background; ``app.state.runtime`` holds them while it runs.
    """
    settings = settings if settings is not None else ServeSettings()
    app = FastAPI(
        title="liqrisk",
        summary="Liquidation and bad-debt risk of leveraged accounts, with warnings.",
        version=_package_version(),
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(NotReady, _not_ready)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(probes)
    app.include_router(api)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    runtime = Runtime(settings)
    runtime.open()
    app.state.runtime = runtime
    metrics = app.state.metrics = ServiceMetrics(runtime)
    batcher = Batcher(
        functools.partial(_score_batch, metrics=metrics),
        max_size=settings.max_accounts,
        max_queued=settings.max_queued,
    )
    app.state.batcher = batcher
    runtime.start()
    try:
        yield
    finally:
        batcher.close()
        runtime.close()


def _package_version() -> str:
    try:
        return version("liqrisk")
    except PackageNotFoundError:
        return "0"


async def get_runtime(request: Request) -> Runtime:
    """The running service's state (async: it never blocks, so no thread hop; see security.py)."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("the service is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


# --- request ids and errors ------------------------------------------------------------------


class RequestIdMiddleware:
    """Gives each request an id (``request.state.request_id``) and returns it as a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for a body above ``max_bytes``: at once when ``Content-Length`` says so, else as
    soon as the streamed body passes the limit (the route's body reader re-raises the
    HTTPException, so it is answered as JSON like every other error)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"detail": BodyTooLarge(self.max_bytes).detail}, status_code=413
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class ScoreJSONResponse(JSONResponse):
    """JSON encoded by orjson: the answer for 1,000 accounts is ~1.4 MB, which the standard
    library encodes in ~19 ms and orjson in ~1.3 ms (the same JSON values; NaN cannot occur,
    the scorer gives None for it)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _OrjsonRequest(Request):
    """A request whose JSON body orjson parses: 1.5 ms for a body of 1,000 accounts against
    4.0 ms for the standard library. A body orjson refuses goes to the standard library, so what
    was accepted before still is (the literals ``NaN`` and ``Infinity``, which Python's
    ``json.dumps`` writes, are read and become an account's own error) and invalid JSON gets
    the standard library's error and position."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)
        return self._json


class _OrjsonRoute(APIRoute):
    """A route reading its body with :class:`_OrjsonRequest` (FastAPI's custom route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    log.error("request %s: %s %s failed", rid, request.method, request.url.path, exc_info=exc)
    body = ErrorOut(detail="internal error", request_id=rid)
    return JSONResponse(body.model_dump(), status_code=500, headers={REQUEST_ID_HEADER: rid})


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    body = ValidationErrorOut(detail=str(exc))
    return JSONResponse(body.model_dump(), status_code=422)


async def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_field_error(e, exc.body) for e in exc.errors()]
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:_MAX_LISTED_ERRORS])
    if len(errors) > _MAX_LISTED_ERRORS:
        shown += f"; and {len(errors) - _MAX_LISTED_ERRORS} more"
    body = ValidationErrorOut(detail=shown, errors=errors[:100])
    return JSONResponse(jsonable_encoder(body), status_code=422)


def _field_error(error: Any, body: Any) -> FieldError:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        at = loc[1] if len(loc) > 1 else "?"
        reason = (error.get("ctx") or {}).get("error", "")
        return FieldError(
            field="body", message=f"invalid JSON at character {at}: {reason}", type="json_invalid"
        )
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    symbol = _bar_symbol(loc, body)
    if symbol is not None:
        message += f" (symbol={symbol})"
    return FieldError(field=field_path(loc), message=message, type=str(error.get("type", "")))


def _bar_symbol(loc: tuple, body: Any) -> str | None:
    """The symbol of the bar an error is in, so a bad bar is named by row and symbol."""
    if len(loc) < 3 or loc[:2] != ("body", "bars") or not isinstance(loc[2], int):
        return None
    try:
        symbol = body["bars"][loc[2]]["symbol"]
    except (KeyError, IndexError, TypeError):
        return None
    return symbol if isinstance(symbol, str) else None


def _store_unavailable(exc: sa.exc.SQLAlchemyError) -> HTTPException:
    log.error("warnings store failed", exc_info=exc)
    return HTTPException(
        status_code=503,
        detail="warnings store unavailable: nothing was acknowledged, retry the request",
        headers={"Retry-After": "5"},
    )


# --- probes ----------------------------------------------------------------------------------

probes = APIRouter(tags=["probes"])


@probes.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (says nothing about the model)."""
    return Health()


@probes.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `reasons` says why."}},
)
def readyz(request: Request) -> JSONResponse:
    """Ready once the model and the market data are loaded."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        body = Readiness(ready=False, model=None, market=None, reasons=["starting"])
        return JSONResponse(jsonable_encoder(body), status_code=503)
    served, market = runtime.served, runtime.market
    body = Readiness(
        ready=served is not None and market is not None,
        model=None if served is None else _model_info(served),
        market=None if market is None else _market_info(market),
        reasons=runtime.reasons(market, served),
    )
    return JSONResponse(jsonable_encoder(body), status_code=200 if body.ready else 503)


@probes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
)
def get_metrics(request: Request) -> Response:
    """Prometheus metrics: work done (accounts scored, batch and store times, warnings raised)
    and state (model version, each symbol's latest bar, the webhook backlog)."""
    held: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
    if held is None:
        raise HTTPException(status_code=503, detail="starting")
    return Response(held.render(), media_type=CONTENT_TYPE)


def _model_info(served: Served) -> ModelInfo:
    return ModelInfo(
        name=served.name,
        version=served.version,
        uri=served.uri,
        horizons=list(served.model.horizons),
        loaded_at=served.loaded_at,
    )


def _market_info(market: Any) -> MarketInfo:
    latest = market.latest
    if isinstance(latest, dict | pd.Series):
        values = [pd.Timestamp(v) for v in dict(latest).values() if v is not None]
        latest = max(values) if values else None
    return MarketInfo(
        symbols=len(market.symbols()),
        latest=_to_datetime(latest),
        bars_logged=market.view().logged,
    )


def _to_datetime(value: Any) -> datetime | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(UTC)
    return ts.to_pydatetime()


# --- the API ---------------------------------------------------------------------------------

api = APIRouter(prefix="/v1", route_class=_OrjsonRoute)


@api.post(
    "/score",
    response_model=ScoreResponse,
    responses=responses(NOT_READY),
    tags=["scoring"],
)
async def score(
    request: Request,
    body: ScoreRequest,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _key: Annotated[ApiKey, Depends(require(Scope.SCORE))],
) -> JSONResponse:
    """Score accounts; warnings they raise are stored before this answers."""
    if len(body.accounts) > settings.max_accounts:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "accounts"),
                    "msg": f"at most {settings.max_accounts} accounts per request, "
                    f"got {len(body.accounts)}",
                    "type": "too_long",
                }
            ]
        )
    served = runtime.require_served()
    call = _ScoreCall(
        runtime=runtime,
        served=served,
        engine=runtime.require_engine(),
        settings=settings,
        accounts=[with_default_as_of(a, body.as_of) for a in body.accounts],
        what_if=None if body.what_if is None else body.what_if.model_dump(exclude_none=True),
    )
    key = (id(served), id(call.engine), tuple(sorted((call.what_if or {}).items())))
    job = Job(call, size=len(call.accounts), key=key)
    try:
        results = await request.app.state.batcher.submit(job)
    except Overloaded as exc:
        request.app.state.metrics.refused.inc()
        raise HTTPException(
            status_code=503,
            detail=f"overloaded: {exc}; nothing was scored, retry the request",
            headers={"Retry-After": "1"},
        ) from None
    # The scorer's rows are already plain JSON values in the documented shape (the tests hold
    # them to ScoreResponse); validating 1,000 nested rows again would cost more than scoring.
    return ScoreJSONResponse(
        {
            "model": {
                "name": served.name,
                "version": served.version,
                "kinds": dict(served.model.kinds),
                "reasons_for": served.scorer.reasons_for,
            },
            "level_horizon": settings.level_horizon,
            "results": results,
        },
        headers={"Server-Timing": _server_timing(job)},
    )


def _server_timing(job: Job) -> str:
    """Where the request's time went on the server (W3C Server-Timing, milliseconds): waiting
    for the batch ahead, scoring and storing its batch, the event loop taking the answer back;
    ``batch``: how many accounts its batch scored."""
    score, store_s = job.timings.get("score", 0.0), job.timings.get("store", 0.0)
    resume = time.perf_counter() - job.started_at - score - store_s
    parts = {
        "wait": job.started_at - job.queued_at,
        "score": score,
        "store": store_s,
        "resume": resume,
    }
    timed = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in parts.items())
    return f'{timed}, batch;desc="{job.timings.get("accounts", 0):.0f} accounts"'


@dataclass(frozen=True)
class _ScoreCall:
    """One ``/v1/score`` request as the batcher carries it (accounts with their as_of filled in)."""

    runtime: Runtime
    served: Served
    engine: sa.Engine
    settings: ServeSettings
    accounts: list[Any]
    what_if: dict[str, float] | None


def _score_batch(jobs: Sequence[Job], *, metrics: ServiceMetrics) -> None:
    """Score the accounts of concurrent requests in one scorer call, store the warnings they
    raise in one transaction, then give each request its rows (:mod:`liqrisk.serve.batching`).
    A store failure fails every request of the batch: none of them is acknowledged."""
    first: _ScoreCall = jobs[0].payload
    accounts = [a for job in jobs for a in job.payload.accounts]
    started = time.perf_counter()
    results = _score_accounts(first.served, accounts, first.what_if)
    events = _score_events(
        results, horizon=first.settings.level_horizon, model_version=first.served.version
    )
    scored = time.perf_counter()
    try:
        recorded = store.record_scores(first.engine, events, first.settings.thresholds)
    except sa.exc.SQLAlchemyError as exc:
        metrics.store_errors.inc()
        raise _store_unavailable(exc) from exc
    timings = {
        "score": scored - started,
        "store": time.perf_counter() - scored,
        "accounts": len(accounts),
    }
    for job in jobs:
        job.timings.update(timings)
    raised, levels = recorded.warnings, recorded.levels
    if raised and first.runtime.outbox is not None:
        first.runtime.outbox.notify()
    raised_ids = {w.account_id: w.id for w in raised}
    for row in results:
        row |= {"level": None, "warning_id": None}
        if row.get("status") in ("ok", "in_liquidation") and row.get("account_id") in levels:
            row["level"] = levels[row["account_id"]].label
            row["warning_id"] = raised_ids.get(row["account_id"])
    start = 0
    for job in jobs:
        job.resolve(results[start : start + job.size])
        start += job.size
    _count_batch(metrics, jobs, results, raised)  # after: counting never fails a request


def _count_batch(
    metrics: ServiceMetrics,
    jobs: Sequence[Job],
    results: list[dict[str, Any]],
    raised: Sequence[store.AccountWarning],
) -> None:
    """The batch's work in the metrics (its jobs' timings are set)."""
    timings = jobs[0].timings
    metrics.batches.observe(timings["accounts"])
    metrics.score_seconds.observe(timings["score"])
    metrics.store_seconds.observe(timings["store"])
    for job in jobs:
        metrics.wait_seconds.observe(job.started_at - job.queued_at)
    for status, n in Counter(row.get("status") for row in results).items():
        metrics.accounts.labels(status=str(status)).inc(n)
    for level, n in Counter(w.level.label for w in raised).items():
        metrics.warnings.labels(level=level).inc(n)


def _score_accounts(
    served: Served, accounts: list[Any], what_if: dict[str, float] | None
) -> list[dict[str, Any]]:
    """The scorer's result per account, in input order; ids too long to store become errors."""
    results = served.scorer.score(accounts, what_if=what_if)
    if len(results) != len(accounts):
        raise RuntimeError(f"scorer returned {len(results)} results for {len(accounts)} accounts")
    for row in results:
        account_id = row.get("account_id")
        if isinstance(account_id, str) and len(account_id) > MAX_ACCOUNT_ID:
            row |= {
                "status": "error",
                "error": f"account_id: at most {MAX_ACCOUNT_ID} characters, got {len(account_id)}",
                "horizons": None,
                "baseline": None,
                "reasons": [],
                "what_if": None,
            }
    return results


def _score_events(
    results: list[dict[str, Any]], *, horizon: str, model_version: str
) -> list[store.ScoreEvent]:
    events = []
    times: dict[Any, datetime | None] = {}  # a batch's rows share a few as_of texts: parse each once
    for row in results:
        state = row.get("status")
        if state == "ok":
            probability = row["horizons"][horizon]["p_negative"]
            probability = math.nan if probability is None else float(probability)
        elif state == "in_liquidation":
            probability = IN_LIQUIDATION_PROBABILITY
        else:
            continue
        if not math.isfinite(probability):
            log.warning(
                "account %r: P(negative) is %s; not recorded", row["account_id"], probability
            )
            continue
        if not 0.0 <= probability <= 1.0:  # clamped without min/max calls: a fifth of the loop
            probability = 0.0 if probability < 0.0 else 1.0
        events.append(
            store.ScoreEvent(  # positional: a third cheaper than by keyword, for 1,000 rows
                row["account_id"],
                probability,
                _scored_at(row.get("as_of"), times) or datetime.now(UTC),
                model_version,
            )
        )
    return events


def _scored_at(as_of: Any, times: dict[Any, datetime | None]) -> datetime | None:
    """``as_of`` as an aware datetime (None if missing), parsed once per batch in ``times``."""
    try:
        return times[as_of]
    except KeyError:
        at = times[as_of] = _to_datetime(as_of)
        return at


@api.post(
    "/bars",
    response_model=BarsResponse,
    responses=responses(NOT_READY),
    tags=["market"],
)
def post_bars(
    request: Request,
    body: BarsRequest,
    runtime: RuntimeDep,
    _key: Annotated[ApiKey, Depends(require(Scope.INGEST))],
) -> BarsResponse:
    """Append bars to the market state: all of them, or none (422 naming row, symbol, field)."""
    metrics: ServiceMetrics = request.app.state.metrics
    frame = pd.DataFrame([b.model_dump() for b in body.bars])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[us, UTC]")
    for column in ("open", "high", "low", "close", "volume"):
        frame[column] = frame[column].astype("float64")
    try:
        appended = runtime.ingest(frame)
    except sa.exc.SQLAlchemyError as exc:
        log.error("bars log failed", exc_info=exc)
        raise HTTPException(
            status_code=503,
            detail="bars log unavailable: nothing was appended, retry the request",
            headers={"Retry-After": "5"},
        ) from exc
    metrics.bars.inc(appended)
    latest = frame.groupby("symbol")["ts"].max()
    return BarsResponse(
        appended=int(appended),
        latest={str(s): ts.to_pydatetime() for s, ts in latest.items()},
    )


@api.get(
    "/warnings",
    response_model=WarningsPage,
    responses=responses(NOT_READY),
    tags=["warnings"],
)
def get_warnings(
    runtime: RuntimeDep,
    _key: Annotated[ApiKey, Depends(require(Scope.WARNINGS_READ))],
    after: Annotated[
        str | None,
        Query(
            max_length=19, description="`next_cursor` of the previous page; empty: from the start"
        ),
    ] = None,
    limit: Annotated[int, PAGE_LIMIT] = 100,
) -> WarningsPage:
    """Warnings after ``after``, oldest first; each appears exactly once across pages."""
    if after and after.isascii() and after.isdigit() and int(after) > MAX_DB_INT:
        raise InputError(
            f"warnings feed: after must be a cursor from a previous page, got {after!r}"
        )
    try:
        page = store.warnings_after(runtime.require_engine(), after, limit)
    except sa.exc.SQLAlchemyError as exc:
        raise _store_unavailable(exc) from exc
    return WarningsPage(
        items=[WarningOut.model_validate(warning_data(w)) for w in page.items],
        next_cursor=page.next_cursor,
        has_more=page.has_more,
    )


@api.get(
    "/accounts/{account_id:path}",
    response_model=AccountStateOut,
    responses=responses(NOT_FOUND, NOT_READY),
    tags=["warnings"],
)
def get_account(
    account_id: Annotated[str, Path(min_length=1, max_length=MAX_ACCOUNT_ID)],
    runtime: RuntimeDep,
    _key: Annotated[ApiKey, Depends(require(Scope.WARNINGS_READ))],
) -> AccountStateOut:
    """The level an account holds now, the score that set it and its latest warning (what a
    risk officer or a reconnecting platform asks of one account, without scoring it again)."""
    try:
        state = store.account_state_of(runtime.require_engine(), account_id)
    except sa.exc.SQLAlchemyError as exc:
        raise _store_unavailable(exc) from exc
    if state is None:
        raise HTTPException(status_code=404, detail=f"account {account_id!r} was never scored")
    return AccountStateOut(
        account_id=state.account_id,
        level=state.level.label,
        probability=state.probability,
        scored_at=state.scored_at,
        last_warning=None if state.last_warning is None else WarningOut.model_validate(warning_data(state.last_warning)),
    )


WebhooksKey = Annotated[ApiKey, Depends(require(Scope.WEBHOOKS_ADMIN))]


@api.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    responses=responses(NOT_READY),
    tags=["webhooks"],
)
def post_webhook(
    body: WebhookIn, runtime: RuntimeDep, settings: SettingsDep, _key: WebhooksKey
) -> WebhookCreated:
    """Register an endpoint for signed warnings; the secret is shown only in this answer."""
    check_webhook_url(body.url, allow_private=settings.webhook_allow_private)
    hook = store.register_webhook(
        runtime.require_engine(), body.url, secret=body.secret, description=body.description
    )
    return WebhookCreated(**_webhook_fields(hook), secret=hook.secret)


@api.get(
    "/webhooks", response_model=list[WebhookOut], responses=responses(NOT_READY), tags=["webhooks"]
)
def get_webhooks(runtime: RuntimeDep, _key: WebhooksKey) -> list[WebhookOut]:
    """Registered webhooks, oldest first (secrets are not shown)."""
    return [WebhookOut(**_webhook_fields(h)) for h in store.list_webhooks(runtime.require_engine())]


@api.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    responses=responses(NOT_READY, NOT_FOUND),
    tags=["webhooks"],
)
def get_webhook(webhook_id: str, runtime: RuntimeDep, _key: WebhooksKey) -> WebhookOut:
    hook = store.get_webhook(runtime.require_engine(), webhook_id)
    if hook is None:
        raise HTTPException(404, detail=f"no webhook {webhook_id!r}")
    return WebhookOut(**_webhook_fields(hook))


@api.delete(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    responses=responses(NOT_READY, NOT_FOUND),
    tags=["webhooks"],
)
def delete_webhook(webhook_id: str, runtime: RuntimeDep, key: WebhooksKey) -> WebhookOut:
    """Disable a webhook: nothing more is sent to it; its pending deliveries fail."""
    engine = runtime.require_engine()
    if store.get_webhook(engine, webhook_id) is None:
        raise HTTPException(404, detail=f"no webhook {webhook_id!r}")
    store.disable_webhook(engine, webhook_id, reason=f"disabled through the API by {key.name!r}")
    hook = store.get_webhook(engine, webhook_id)
    assert hook is not None
    return WebhookOut(**_webhook_fields(hook))


@api.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    responses=responses(NOT_READY, NOT_FOUND),
    tags=["webhooks"],
)
def get_webhook_deliveries(
    webhook_id: str, runtime: RuntimeDep, _key: WebhooksKey
) -> list[DeliveryOut]:
    """Every delivery to one webhook, oldest first, with its state."""
    engine = runtime.require_engine()
    if store.get_webhook(engine, webhook_id) is None:
        raise HTTPException(404, detail=f"no webhook {webhook_id!r}")
    return [_delivery_out(d) for d in store.delivery_state(engine, webhook_id=webhook_id)]


@api.get(
    "/deliveries",
    response_model=list[DeliveryOut],
    responses=responses(NOT_READY),
    tags=["webhooks"],
)
def get_deliveries(
    runtime: RuntimeDep,
    _key: WebhooksKey,
    warning_id: Annotated[int, Query(ge=1, le=MAX_DB_INT, description="A warning's feed id")],
) -> list[DeliveryOut]:
    """The deliveries of one warning, one per webhook, with their state."""
    return [
        _delivery_out(d)
        for d in store.delivery_state(runtime.require_engine(), warning_id=warning_id)
    ]


@api.post(
    "/admin/reload",
    response_model=ReloadOut,
    responses=responses(NOT_READY),
    tags=["admin"],
)
def admin_reload(
    runtime: RuntimeDep, _key: Annotated[ApiKey, Depends(require(Scope.ADMIN))]
) -> ReloadOut:
    """Check the model alias now and move to a new version (loaded fully before the swap)."""
    result = runtime.refresh()
    if result.error:
        raise HTTPException(503, detail=f"reload failed: {result.detail}")
    served = runtime.served
    return ReloadOut(
        changed=result.changed,
        model=None if served is None else _model_info(served),
        detail=result.detail,
    )


def _webhook_fields(hook: store.Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "description": hook.description,
        "active": hook.active,
        "created_at": hook.created_at,
        "disabled_at": hook.disabled_at,
        "disabled_reason": hook.disabled_reason,
    }


def _delivery_out(d: store.Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        warning_id=d.warning_id,
        webhook_id=d.webhook_id,
        message_id=d.message_id,
        status=d.status.value,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
    )


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that cannot be parsed and, unless ``allow_private``, URLs whose host is or
    resolves to a loopback, private, link-local or otherwise non-public address (SSRF guard).

    Raises
    ------
    InputError
    """
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise InputError(f"webhook: url is not a valid URL ({exc}): {url!r}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise InputError(f"webhook: url must be an http(s) URL with a host, got {url!r}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"webhook: host {host!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise InputError(
                f"webhook: host {host!r} is a non-public address ({address}); private targets "
                "need LIQRISK_SERVE__WEBHOOK_ALLOW_PRIVATE=true"
            )
