"""What the running service holds: the warnings store, the market state, the served model, and
the background threads that load and reload them.

Choices, stated once:

- **Start fast, become ready later.** Loading the market data (with its per-symbol feature
  tables, so the first requests are as fast as the rest) and the model takes seconds, so
  the app starts at once (``/healthz`` answers) and a background thread loads both;
  ``/readyz`` is 503, and the routes that need them answer 503, until both are there. A load
  that fails (no champion yet, a bad data folder) is reported by ``/readyz`` and retried on
  every poll, so a service started before the first ``liqrisk train`` becomes ready after it.
- **One swap, never half a model.** A new version is loaded fully (MLflow artifact, unwrapped
  :class:`RiskModel`, its :class:`Scorer` with its fast paths built, checks) on the poller's
  thread while the old one keeps serving; then one attribute assignment,
  :attr:`Runtime.served`, switches. A request reads that reference once and uses the same
  :class:`Served` to the end, so each response is entirely one version's.
- **Versions, not aliases, are loaded.** The alias is resolved to a version first and that
  version is loaded (``models:/name/7``), so the alias moving during a load cannot mix two
  versions; the next check picks the newer one up. Checks run one at a time (a lock), so an
  older version's slow load can never overwrite a newer one.
- **The loaded state is frozen for the garbage collector.** The market and the model are
  hundreds of thousands of long-lived objects; a full collection walking them paused a
  scoring call for 100+ ms (p99 of 1,000 accounts: 174 ms, median 48 ms). After each load
  :func:`gc.freeze` moves everything alive to the permanent generation, so collections only
  walk what requests allocate (p99 54 ms). Each model swap unfreezes, collects once (so the
  previous version's cycles are freed) and freezes again.
- **Bars are logged, then applied.** ``POST /v1/bars`` goes through :meth:`Runtime.ingest`:
  holding the database's bars log, the market screens the bars and the new ones are committed
  to the log, then applied. After the market is loaded, and then every ``bars_poll_seconds``
  on a thread of its own (never the scoring one), a process applies what others logged
  (:meth:`Runtime.catch_up`), so every replica scores the same bars and a restarted service
  still has the bars it acknowledged.
- **The store is checkpointed off the request path.** On SQLite a thread of its own
  checkpoints the WAL every :data:`CHECKPOINT_SECONDS`; commits would otherwise checkpoint
  (and flush the database file) every 1,000 pages, inside the request that crossed it.
- **MLflow's URIs are process-wide.** ``mlflow.pyfunc.load_model`` resolves ``models:/`` URIs
  through the global registry URI, so :meth:`Runtime.open` sets the tracking and registry URI
  of the process to the configured store; a service process serves from one store.
"""

import functools
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import Engine, make_url

from liqrisk.features.errors import InputError
from liqrisk.models.bundle import RiskModel
from liqrisk.models.promote import current_champion
from liqrisk.serve import store
from liqrisk.serve.market import MarketState
from liqrisk.serve.scoring import Scorer
from liqrisk.serve.settings import ServeSettings
from liqrisk.serve.store import create_engine_for, create_schema
from liqrisk.serve.webhooks import OutboxWorker

log = logging.getLogger(__name__)

RETRY_NOT_READY_S = 30.0  # retry interval of a failed first load when polling is off
CHECKPOINT_SECONDS = 1.0  # how often the service checkpoints a SQLite store's WAL
SERVICE_AUTOCHECKPOINT = 10_000  # WAL pages (~40 MB): a commit checkpoints only if the thread lags


@dataclass(frozen=True)
class Served:
    """One loaded model version and the scorer built on it."""

    name: str
    version: str
    uri: str
    model: RiskModel
    scorer: Scorer
    loaded_at: datetime


@dataclass(frozen=True)
class ReloadResult:
    """What a reload check did."""

    changed: bool
    detail: str
    error: bool = False


class NotReady(RuntimeError):
    """The model or the market state is not loaded (yet)."""


class Runtime:
    """The service's state; created and closed by the app's lifespan.

    Parameters
    ----------
    settings : ServeSettings
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.market: MarketState | None = None
        self.served: Served | None = None
        self.outbox: OutboxWorker | None = None
        # why a part failed to load, by part; replaced whole (never mutated) so readers need no lock
        self.problems: dict[str, str] = {}
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._periodic: list[threading.Thread] = []  # _every's threads

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the warnings store (creating its tables), point MLflow at the model store and
        start the webhook sender; quick, so the lifespan runs it before serving."""
        _make_sqlite_folder(self.settings.database_url)
        self.engine = create_engine_for(
            self.settings.database_url,
            sqlite_synchronous=self.settings.sqlite_synchronous,
            sqlite_autocheckpoint=SERVICE_AUTOCHECKPOINT,  # the checkpointer thread does it
        )
        create_schema(self.engine)
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        mlflow.set_registry_uri(self.settings.tracking_uri)
        if self.settings.outbox_enabled:
            self.outbox = OutboxWorker(self.engine, poll_interval=self.settings.outbox_poll_seconds)
            self.outbox.start()

    def start(self) -> None:
        """Load the market and the model on a background thread, then poll for new versions."""
        self._poller = threading.Thread(target=self._run, name="liqrisk-loader", daemon=True)
        self._poller.start()
        if self.settings.bars_poll_seconds > 0:
            # off the scoring thread: an append rebuilds the symbol's feature table (half a
            # second for BTCUSDT's 5-minute bars)
            self._every(self.settings.bars_poll_seconds, self._follow_bars, "liqrisk-bars")
        if self.require_engine().dialect.name == "sqlite":
            self._every(CHECKPOINT_SECONDS, self._checkpoint, "liqrisk-checkpoint")

    def _every(self, seconds: float, work: Callable[[], None], name: str) -> None:
        """Run ``work`` every ``seconds`` on a thread ``name`` until :meth:`close`. A failure
        (the database down) is logged once per streak of failures, and the work goes on."""

        def loop() -> None:
            failing = False
            while not self._stop.wait(seconds):
                try:
                    work()
                except Exception:
                    if not failing:
                        log.exception("%s failed; retrying every %s s", name, seconds)
                    failing = True
                else:
                    if failing:
                        log.info("%s works again", name)
                    failing = False

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._periodic.append(thread)

    def close(self) -> None:
        """Stop the threads and release the database."""
        self._stop.set()
        for thread in (self._poller, *self._periodic):
            if thread is not None:
                thread.join(timeout=10)
        if self.outbox is not None:
            self.outbox.stop()
        if self.engine is not None:
            self.engine.dispose()

    # --- state for requests ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.served is not None and self.market is not None

    def require_served(self) -> Served:
        """The model serving now, or :class:`NotReady`."""
        served = self.served
        if served is None or self.market is None:
            raise NotReady(self._not_ready_text())
        return served

    def require_market(self) -> MarketState:
        market = self.market
        if market is None:
            raise NotReady(self._not_ready_text())
        return market

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady("warnings store not open")
        return self.engine

    # --- the bars log ------------------------------------------------------------------------

    def ingest(self, bars: pd.DataFrame) -> int:
        """Append ``bars`` to the market, all or none, logged in the database first so that
        every process of the service and every restart serves them (``liqrisk.serve.store``:
        the bars log). Returns how many bars were new.

        Holds the log while it applies what other processes logged, screens ``bars`` against
        the result and records the new ones. Raises ``InputError`` for a bad bar (nothing
        logged or applied).
        """
        market = self.require_market()
        with store.bars_writer(self.require_engine()) as log:
            self._apply_logged(market, log.position, log.after)
            return market.append(bars, record=log.record)

    def catch_up(self, market: MarketState) -> int:
        """Apply the bars other processes logged since ``market`` last caught up (one read of
        the log's position, 21 µs on SQLite, when there are none); returns how many were
        applied."""
        engine = self.require_engine()
        return self._apply_logged(
            market, store.bars_position(engine), functools.partial(store.logged_bars_after, engine)
        )

    def _follow_bars(self) -> None:
        """Apply the bars other processes logged to the market held (if loaded yet)."""
        market = self.market
        if market is not None:
            self.catch_up(market)

    def _checkpoint(self) -> None:
        """Checkpoint the SQLite store, so that the commits on the request path do not."""
        store.checkpoint(self.require_engine())

    @staticmethod
    def _apply_logged(
        market: MarketState, position: int, after: Callable[[int], tuple[pd.DataFrame, int]]
    ) -> int:
        """Apply the log up to ``position`` where ``market`` is behind it, reading the bars it
        lacks with ``after``. Logged bars this market refuses are logged as an error, once, and
        skipped."""
        applied = market.view().logged
        if position <= applied:
            return 0
        bars, through = after(applied)
        try:
            return market.catch_up(bars, through)
        except InputError as exc:
            log.error("logged bars %d-%d not applied: %s", applied + 1, through, exc)
            return 0

    def reasons(self, market: MarketState | None, served: Served | None) -> list[str]:
        """Why the service is not ready with this market and model (the caller's one reading
        of them), by missing part: "loading" until a load fails; empty when both are held.
        Derived from what is held, so no reader sees a loaded part beside a stale reason."""
        problems = self.problems
        missing = [part for part, held in (("market", market), ("model", served)) if held is None]
        return [f"{part}: {problems.get(part, 'loading')}" for part in missing]

    def _not_ready_text(self) -> str:
        return "not ready: " + "; ".join(self.reasons(self.market, self.served))

    # --- loading -----------------------------------------------------------------------------

    def refresh(self) -> ReloadResult:
        """Load the market if it is missing, then move to the configured model version if it
        changed. Safe to call from any thread; checks run one at a time."""
        with self._check_lock:
            if self.market is None:
                try:
                    market = self._load_market()
                    applied = self.catch_up(market)  # the bars posted before a restart
                    if applied:
                        log.info("%d bars from the bars log applied", applied)
                    _warm(market)
                    self.market = market
                    self._set_problem("market", None)
                except Exception as exc:
                    log.exception("market state could not be loaded")
                    self._set_problem("market", f"{type(exc).__name__}: {exc}")
                    return ReloadResult(False, f"market not loaded: {exc}", error=True)
            try:
                result = self._check_model()
            except Exception as exc:
                log.exception("model check failed")
                detail = f"{type(exc).__name__}: {exc}"
                if self.served is None:
                    self._set_problem("model", detail)
                return ReloadResult(False, f"model not loaded: {detail}", error=True)
            self._set_problem("model", None)
            return result

    def _set_problem(self, part: str, problem: str | None) -> None:
        others = {k: v for k, v in self.problems.items() if k != part}
        self.problems = others if problem is None else {**others, part: problem}

    def _run(self) -> None:
        while True:
            self.refresh()
            interval = self.settings.reload_seconds
            if not self.ready:
                interval = interval or RETRY_NOT_READY_S
            elif interval == 0:
                self._stop.wait()
                return
            if self._stop.wait(interval):
                return

    def _load_market(self) -> MarketState:
        s = self.settings
        market = MarketState.load(s.data_dir, instruments_path=s.instruments_path, files=tuple(s.market_files))
        log.info("market state loaded from %s: %d symbols", s.data_dir, len(market.symbols()))
        return market

    def _check_model(self) -> ReloadResult:
        s = self.settings
        client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
        version = self._target_version(client)
        current = self.served
        if current is not None and current.version == version:
            return ReloadResult(False, f"already serving {s.model_name} v{version}")
        served = self._load_version(version)
        self.served = served  # the one swap
        freeze_heap()
        log.info(
            "serving %s v%s (was %s)",
            s.model_name,
            version,
            "nothing" if current is None else f"v{current.version}",
        )
        return ReloadResult(True, f"now serving {s.model_name} v{version}")

    def _target_version(self, client: MlflowClient) -> str:
        s = self.settings
        if s.model_version is not None:
            return str(client.get_model_version(s.model_name, s.model_version).version)
        version = current_champion(s.model_name, alias=s.model_alias, client=client)
        if version is None:
            raise LookupError(
                f"no version of model {s.model_name!r} has the alias {s.model_alias!r} "
                f"in {s.tracking_uri} (run `liqrisk train`, or pin a version)"
            )
        return str(version.version)

    def _load_version(self, version: str) -> Served:
        s = self.settings
        uri = f"models:/{s.model_name}/{version}"
        wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        model = getattr(wrapper, "model", None)
        if not isinstance(model, RiskModel):
            raise TypeError(f"{uri} is not a liqrisk RiskModel (got {type(model).__name__})")
        if s.level_horizon not in model.horizons:
            raise ValueError(
                f"{uri} serves horizons {list(model.horizons)}, not level_horizon={s.level_horizon!r}"
            )
        market = self.require_market()
        scorer = Scorer(
            model,
            name=s.model_name,
            version=version,
            market=market,
            instruments=market.instruments,
            reasons=s.reasons,
        )
        return Served(s.model_name, version, uri, model, scorer, datetime.now(UTC))


def freeze_heap() -> None:
    """Free what is garbage now, then exclude every surviving object from later collections
    (module docstring: the loaded state is frozen)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _warm(market: MarketState) -> None:
    """Compute the market's per-symbol feature tables before the market is published, so the
    first requests after ``/readyz`` turns 200 are as fast as the later ones (a few seconds
    for the bundled data) and no request competes with the warm-up for the interpreter."""
    try:
        market.warm()
    except Exception:  # a symbol that cannot be warmed is computed on use, or errors there
        log.exception("warming the market feature tables failed")


def _make_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
