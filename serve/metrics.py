"""The service's Prometheus metrics, at ``GET /metrics``: what an operator graphs and alerts on.

Two kinds, stated once:

- **Work done** (counters and histograms, kept by each process as it works): accounts scored
  by status, batches by size, the time to score and to store a batch, the time a request
  waited for the batch ahead, requests refused as overloaded, store failures, warnings raised
  by level, bars appended.
- **State, read when scraped**: whether the process is ready, the model version it serves and
  when it loaded it, each symbol's latest bar completion, how far it applied the bars log, and
  the webhook backlog (deliveries pending or being delivered, and the earliest one was due),
  read from the database, so every process reports the same.

A stale market is the failure these catch that nothing else does: scores go on being served
on old bars. ``time() - liqrisk_market_latest_bar_timestamp_seconds`` past a few of the
symbol's ``liqrisk_market_bar_seconds`` is the alert; a webhook backlog whose earliest due time
falls behind ``time()`` is the other (the sender is stuck or the receiver down). Rules for
these and the rest: ``docs/prometheus-alerts.yml``.

**Several processes** (``liqrisk serve --workers N``): the CLI gives the workers one
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen when the library is
first imported), so the counters and histograms are summed over the workers whichever answers
the scrape; the state is the answering process's (the processes converge within a poll).
Without that variable each app keeps its own registry (tests run many apps in one process).
"""

import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from liqrisk.serve.store import DeliveryStatus, deliveries_table

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ACCOUNTS = (1, 2, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000)
_BACKLOG = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)


class ServiceMetrics:
    """One app's metrics: the work counters it updates, and ``runtime``'s state."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accounts = Counter(
            "liqrisk_accounts_scored", "Accounts answered by /v1/score, by status.", ["status"], registry=r
        )
        self.batches = Histogram(
            "liqrisk_score_batch_accounts", "Accounts per scored batch.", buckets=_ACCOUNTS, registry=r
        )
        self.score_seconds = Histogram(
            "liqrisk_score_batch_seconds", "Time to score a batch.", buckets=_SECONDS, registry=r
        )
        self.store_seconds = Histogram(
            "liqrisk_store_batch_seconds",
            "Time to store a batch's scores and warnings (before any is answered).",
            buckets=_SECONDS,
            registry=r,
        )
        self.wait_seconds = Histogram(
            "liqrisk_score_wait_seconds",
            "Time a score request waited for the batch ahead of it.",
            buckets=_SECONDS,
            registry=r,
        )
        self.refused = Counter(
            "liqrisk_score_refused", "Score requests refused with 503 (overloaded).", registry=r
        )
        self.store_errors = Counter(
            "liqrisk_store_errors", "Batches answered 503 because the store failed.", registry=r
        )
        self.warnings = Counter(
            "liqrisk_warnings_raised", "Warnings stored (new or escalated), by level.", ["level"], registry=r
        )
        self.bars = Counter("liqrisk_bars_appended", "Bars appended through /v1/bars.", registry=r)
        r.register(StateCollector(runtime))

    def render(self) -> bytes:
        """The text exposition of every metric, summed over the service's processes in
        multiprocess mode."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(StateCollector(self.runtime))
        return generate_latest(registry)


class StateCollector(Collector):
    """Gauges read from the runtime (and its database) at each scrape."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def describe(self) -> list[Metric]:
        return []  # read at each scrape: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        served, market = runtime.served, runtime.market
        ready = GaugeMetricFamily("liqrisk_ready", "1 once the model and the market data are loaded.")
        ready.add_metric([], float(served is not None and market is not None))
        yield ready
        if served is not None:
            info = GaugeMetricFamily(
                "liqrisk_model_info", "The model version served (always 1).", labels=["name", "version"]
            )
            info.add_metric([served.name, served.version], 1.0)
            yield info
            loaded = GaugeMetricFamily(
                "liqrisk_model_loaded_timestamp_seconds", "When the served version was loaded."
            )
            loaded.add_metric([], served.loaded_at.timestamp())
            yield loaded
        if market is not None:
            yield from _market(market)
        engine = runtime.engine
        if engine is not None:
            yield from _backlog(engine)


def _market(market: Any) -> Iterator[Metric]:
    view = market.view()
    latest = GaugeMetricFamily(
        "liqrisk_market_latest_bar_timestamp_seconds",
        "Completion (open + bar length) of each symbol's latest bar.",
        labels=["symbol"],
    )
    length = GaugeMetricFamily(
        "liqrisk_market_bar_seconds", "Each symbol's bar length (what staleness is measured in).", labels=["symbol"]
    )
    for symbol in view.symbols():
        at, bar = view.latest_of(symbol), view.bar_lengths.get(symbol)
        if at is not None:
            latest.add_metric([symbol], at.timestamp())
        if bar is not None:
            length.add_metric([symbol], bar.total_seconds())
    yield latest
    yield length
    logged = GaugeMetricFamily(
        "liqrisk_bars_logged", "How far this process has applied the service's bars log."
    )
    logged.add_metric([], float(view.logged))
    yield logged


def _backlog(engine: sa.Engine) -> Iterator[Metric]:
    """Deliveries not settled, by state, and the earliest due time among them (both from the
    index the sender claims by)."""
    d = deliveries_table
    backlog = (
        sa.select(d.c.status, sa.func.count(), sa.func.min(d.c.next_attempt_at))
        .where(d.c.status.in_(_BACKLOG))
        .group_by(d.c.status)
    )
    up = GaugeMetricFamily("liqrisk_store_up", "1 if the database answered this scrape.")
    try:
        with engine.connect() as conn:
            rows = conn.execute(backlog).all()
    except sa.exc.SQLAlchemyError:
        up.add_metric([], 0.0)
        yield up
        return
    up.add_metric([], 1.0)
    yield up
    family = GaugeMetricFamily(
        "liqrisk_webhook_deliveries_backlog", "Webhook deliveries not yet settled, by state.", labels=["state"]
    )
    counts = {status: n for status, n, _ in rows}
    for state in _BACKLOG:
        family.add_metric([state.value], float(counts.get(state.value, 0)))
    yield family
    if rows:
        due = min(first for _, _, first in rows)
        oldest = GaugeMetricFamily(
            "liqrisk_webhook_earliest_due_timestamp_seconds",
            "When the earliest unsettled delivery was due (far behind time(): the sender is stuck "
            "or the receiver down).",
        )
        oldest.add_metric([], due.timestamp())  # an aware UTC datetime (the column's type)
        yield oldest
