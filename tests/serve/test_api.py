"""The HTTP service end to end: the real app through Starlette's TestClient (on httpx2), a real
MLflow store holding a small RiskModel, a SQLite warnings store, bars in a temporary folder. The
tests of what the store keeps (warnings, the feed, webhooks, deliveries) also run on PostgreSQL
(``db_service``).

The module's app is shared by its tests, so each test uses its own account ids and reads the
feed from a cursor taken at its start.
"""

import functools
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from liqrisk.serve import store
from liqrisk.serve.app import create_app
from liqrisk.serve.levels import Thresholds
from liqrisk.serve.runtime import Runtime
from liqrisk.serve.schemas import AccountScore, ScoreResponse
from liqrisk.serve.security import get_settings
from liqrisk.serve.settings import ApiKey, Scope, ServeSettings, hash_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_support import (
    AS_OF,
    BTC,
    MARKET_END,
    MODEL_NAME,
    ServeProcess,
    account,
    free_port,
    in_liquidation,
    new_id,
    register,
    scrape,
    wait_ready,
)
from serve_support import Receiver, count_in_file_alone, run_threads, wait_for

KEYS: dict[str, tuple[str, frozenset[Scope]]] = {
    "admin": ("key-admin-0123", frozenset(Scope)),
    "scorer": ("key-scorer-0123", frozenset({Scope.SCORE})),
    "reader": ("key-reader-0123", frozenset({Scope.WARNINGS_READ})),
    "nobody": ("key-nobody-0123", frozenset()),
}


def key(who: str = "admin") -> dict[str, str]:
    return {"X-API-Key": KEYS[who][0]}


def api_keys() -> list[ApiKey]:
    return [
        ApiKey(name=name, key_sha256=hash_key(plain), scopes=scopes)
        for name, (plain, scopes) in KEYS.items()
    ]


def settings_for(tracking_uri: str, data_dir: Path, db_dir: Path, **changes: Any) -> ServeSettings:
    values: dict[str, Any] = {
        "tracking_uri": tracking_uri,
        "data_dir": data_dir,
        "database_url": f"sqlite:///{db_dir / 'warnings.db'}",
        "api_keys": api_keys(),
        "reload_seconds": 0,
        "max_body_bytes": 100_000,
        "webhook_allow_private": True,  # the receiver listens on 127.0.0.1
        "outbox_poll_seconds": 0.2,
    }
    return ServeSettings(**(values | changes))


@dataclass
class Service:
    app: FastAPI
    client: TestClient
    settings: ServeSettings

    def score(self, accounts: list[dict[str, Any]], **body: Any) -> Any:
        response = self.client.post(
            "/v1/score", json={"accounts": accounts, "as_of": AS_OF, **body}, headers=key()
        )
        assert response.status_code == 200, response.text
        return response.json()

    def cursor(self) -> str:
        """The feed's current end."""
        after = ""
        while True:
            page = self.client.get(
                "/v1/warnings", params={"after": after, "limit": 1000}, headers=key()
            ).json()
            after = page["next_cursor"]
            if not page["has_more"]:
                return after

    def warnings_after(self, cursor: str) -> list[dict[str, Any]]:
        page = self.client.get(
            "/v1/warnings", params={"after": cursor, "limit": 1000}, headers=key()
        ).json()
        return page["items"]


@contextmanager
def running(settings: ServeSettings) -> Iterator[Service]:
    """The app with ``settings``, its lifespan run and its model and market loaded."""
    app = create_app(settings)
    with TestClient(app) as client:
        wait_ready(client)
        yield Service(app, client, settings)


@pytest.fixture(scope="module")
def service(
    model_store: str, market_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The app on a SQLite warnings store."""
    with running(settings_for(model_store, market_dir, tmp_path_factory.mktemp("db"))) as app:
        yield app


@pytest.fixture(scope="module")
def postgres_service(
    model_store: str,
    market_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    module_postgres_url: str,
) -> Iterator[Service]:
    """The app on a PostgreSQL warnings store (a schema of its own)."""
    settings = settings_for(
        model_store, market_dir, tmp_path_factory.mktemp("db"), database_url=module_postgres_url
    )
    with running(settings) as app:
        yield app


@pytest.fixture(params=["sqlite", "postgresql"])
def db_service(request: pytest.FixtureRequest) -> Service:
    """``service``, then ``postgres_service``: the tests of what the store keeps (warnings, the
    feed, webhooks, deliveries) run on both databases; the others on SQLite only (cheaper)."""
    return request.getfixturevalue("service" if request.param == "sqlite" else "postgres_service")


@pytest.fixture
def override() -> Iterator[Callable[..., None]]:
    """Change a service's settings for one test (routes read them through ``get_settings``):
    ``override(service, name=value, ...)``."""
    changed: list[Service] = []

    def apply(target: Service, **changes: Any) -> None:
        settings = target.settings.model_copy(update=changes)
        target.app.dependency_overrides[get_settings] = lambda: settings
        changed.append(target)

    yield apply
    for target in changed:
        target.app.dependency_overrides.clear()


# --- probes ----------------------------------------------------------------------------------


def test_health_and_readiness_name_the_model_and_the_market(service: Service) -> None:
    health = service.client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert len(health.headers["x-request-id"]) == 32
    ready = service.client.get("/readyz")
    body = ready.json()
    assert ready.status_code == 200 and body["ready"] and body["reasons"] == []
    assert body["model"]["name"] == MODEL_NAME and body["model"]["version"] == "1"
    assert body["model"]["horizons"] == ["1h", "24h", "7d"]
    assert body["market"]["symbols"] == 2
    assert pd.Timestamp(body["market"]["latest"]) == MARKET_END  # the last bar's completion


def test_readiness_reasons_follow_what_is_loaded_never_a_stale_problem(service: Service) -> None:
    runtime = Runtime(service.settings)
    assert runtime.reasons(None, None) == ["market: loading", "model: loading"]
    runtime.problems = {"model": "LookupError: no champion"}
    market, served = service.app.state.runtime.market, service.app.state.runtime.served
    assert runtime.reasons(market, None) == ["model: LookupError: no champion"]
    # the model was swapped in before its old problem was cleared: ready, and no reason
    assert runtime.reasons(market, served) == []


# --- scoring ---------------------------------------------------------------------------------


def test_scores_carry_probabilities_baseline_reasons_model_and_level(service: Service) -> None:
    ids = [new_id("calm"), new_id("lever")]
    accounts = [account(ids[0]), account(ids[1], collateral=2_500.0, qty=1.0)]
    body = service.score(accounts)
    assert body["model"]["name"] == MODEL_NAME and body["model"]["version"] == "1"
    assert body["level_horizon"] == "24h"
    assert [r["account_id"] for r in body["results"]] == ids
    for row in body["results"]:
        assert row["status"] == "ok", row
        assert row["model"]["version"] == "1"
        assert set(row["horizons"]) == {"1h", "24h", "7d"}
        for h in ("1h", "24h", "7d"):
            p = row["horizons"][h]
            assert 0.0 <= p["p_negative"] <= p["p_liquidated"] <= 1.0
            assert p["expected_shortfall"] >= 0.0
        assert row["horizons"]["1h"]["p_negative"] <= row["horizons"]["7d"]["p_negative"]
        base = row["baseline"]
        price = base["positions"][0]["price"]
        assert base["equity"] > base["maintenance_margin"] > 0
        assert base["bankruptcy_price"] < base["liquidation_price"] < price  # a long position
        assert base["margin_call"] is False
        assert 1 <= len(row["reasons"]) <= service.settings.reasons
        assert all(r["feature"] and r["description"] for r in row["reasons"])
        assert row["level"] in ("none", "watch", "warning", "critical")
    calm, lever = body["results"]
    assert lever["baseline"]["leverage"] > calm["baseline"]["leverage"]
    assert lever["baseline"]["distance_to_liquidation_pct"] < calm["baseline"]["distance_to_liquidation_pct"]


def test_the_service_returns_what_its_scorer_computes(service: Service) -> None:
    snapshot = account(new_id("same"), collateral=5_000.0)
    served = service.client.post(
        "/v1/score", json={"accounts": [snapshot], "as_of": AS_OF}, headers=key()
    ).json()["results"][0]
    direct = service.app.state.runtime.served.scorer.score(
        [snapshot], as_of=pd.Timestamp(AS_OF).to_pydatetime()
    )[0]
    for h in ("1h", "24h", "7d"):
        for name, value in direct["horizons"][h].items():
            assert served["horizons"][h][name] == pytest.approx(value, rel=1e-12)


def test_concurrent_requests_are_scored_together_and_answered_each_their_own(
    db_service: Service,
) -> None:
    # alone first, then all at once: the batcher may merge them, the answers must not change
    snapshots = [account(new_id(f"conc{i}"), collateral=3_000.0 + 500 * i) for i in range(6)]
    risky = [in_liquidation(new_id(f"concliq{i}")) for i in range(6)]
    requests = [[s, r] for s, r in zip(snapshots, risky, strict=True)]
    alone = [
        db_service.app.state.runtime.served.scorer.score(r, as_of=pd.Timestamp(AS_OF).to_pydatetime())
        for r in requests
    ]
    cursor = db_service.cursor()
    batches_before = db_service.app.state.batcher.batches
    start = threading.Barrier(len(requests))
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        start.wait()
        answers[i] = db_service.score(requests[i])

    run_threads([lambda i=i: send(i) for i in range(len(requests))])
    for request, answer, direct in zip(requests, answers, alone, strict=True):
        rows = answer["results"]
        assert [r["account_id"] for r in rows] == [a["account_id"] for a in request]
        ok, liq = rows
        for h in ("1h", "24h", "7d"):
            assert ok["horizons"][h]["p_negative"] == direct[0]["horizons"][h]["p_negative"]  # to the bit
        assert liq["status"] == "in_liquidation" and liq["level"] == "critical" and liq["warning_id"] is not None
    assert db_service.app.state.batcher.batches - batches_before < len(requests)  # some were merged
    feed = db_service.warnings_after(cursor)
    assert sorted(w["id"] for w in feed) == sorted(a["results"][1]["warning_id"] for a in answers)


def test_a_score_answer_says_where_its_time_went_on_the_server(service: Service) -> None:
    accounts = [account(new_id("timed")), account(new_id("timed"))]
    response = service.client.post("/v1/score", json={"accounts": accounts, "as_of": AS_OF}, headers=key())
    assert response.status_code == 200
    parts = dict(p.strip().split(";", 1) for p in response.headers["Server-Timing"].split(","))
    assert set(parts) == {"wait", "score", "store", "resume", "batch"}
    durations = {name: float(v.removeprefix("dur=")) for name, v in parts.items() if name != "batch"}
    assert all(d >= 0 for d in durations.values()) and durations["score"] > 0
    assert parts["batch"] == 'desc="2 accounts"'  # alone: its batch is its own two accounts


def test_what_if_shows_the_change_beside_the_current_risk(service: Service) -> None:
    body = service.score(
        [account(new_id("whatif"), collateral=4_000.0)],
        what_if={"add_collateral": 4_000.0, "cut": 0.5},
    )
    row = body["results"][0]
    assert row["status"] == "ok" and row["what_if"] is not None
    after = row["what_if"]
    assert after["horizons"]["24h"]["p_negative"] <= row["horizons"]["24h"]["p_negative"] + 1e-12
    assert after["baseline"]["leverage"] < row["baseline"]["leverage"]


def test_one_bad_account_gets_its_own_error_and_the_rest_are_scored(service: Service) -> None:
    good = new_id("good")
    bad_qty = account(new_id("qty"))
    bad_qty["positions"][0]["qty"] = -1
    unknown = account(new_id("sym"), symbol="NOPEUSDT")
    no_mode = account(new_id("mode"))
    del no_mode["margin_mode"]
    body = service.score([account(good), bad_qty, unknown, no_mode, 7])
    rows = body["results"]
    assert len(rows) == 5 and rows[0]["status"] == "ok" and rows[0]["account_id"] == good
    assert [r["status"] for r in rows[1:]] == ["error"] * 4
    assert "qty" in rows[1]["error"] and rows[1]["account_id"] == bad_qty["account_id"]
    assert "NOPEUSDT" in rows[2]["error"]
    assert "margin_mode" in rows[3]["error"]
    assert rows[4]["error"]
    assert all(r["level"] is None and r["warning_id"] is None for r in rows[1:])


def test_score_answers_are_in_the_documented_schema(service: Service) -> None:
    # the route answers the scorer's rows without re-validating them: hold them to the schema here
    bad = account(new_id("bad"))
    bad["positions"][0]["entry_price"] = 0
    isolated = account(new_id("iso"))
    isolated |= {"margin_mode": "isolated", "positions": [dict(isolated["positions"][0], collateral=300.0)]}
    body = service.score(
        [account(new_id("ok")), bad, isolated, in_liquidation(new_id("liq")), 7], what_if={"cut": 0.25}
    )
    parsed = ScoreResponse.model_validate(body)
    assert [r.status for r in parsed.results] == ["ok", "error", "ok", "in_liquidation", "error"]
    assert set(body["results"][0]) >= set(AccountScore.model_fields)


def test_odd_accounts_are_error_rows_not_failures(service: Service) -> None:
    odd = [
        account(new_id("year1"), as_of="0001-01-01T00:00:00+00:01"),
        account(new_id("later"), as_of="2199-01-01T00:00:00Z"),  # after the market's last bar
        account(new_id("text"), as_of="soon"),
        account("x" * 201),
        account(new_id("nan"), collateral=float("nan")),
        {**account(new_id("pos")), "positions": "BTCUSDT"},
        account(new_id("huge")),
        account(12345),
    ]
    odd[-2]["positions"][0]["qty"] = 10**400  # JSON allows it; no float holds it
    content = json.dumps({"accounts": odd, "as_of": AS_OF})  # NaN is written as the literal NaN
    response = service.client.post(
        "/v1/score", content=content, headers={**key(), "content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    rows = response.json()["results"]
    assert [r["status"] for r in rows[:7]] == ["error"] * 7, rows
    assert "at most 200 characters" in rows[3]["error"]
    assert rows[6]["error"] == "positions[0].qty must be finite, got an integer too large for a float (symbol BTCUSDT)"
    assert all(r["error"] and r["level"] is None for r in rows[:7])
    assert rows[7]["account_id"] == "12345"


def test_an_account_in_liquidation_is_reported_critical_and_warned(db_service: Service) -> None:
    cursor = db_service.cursor()
    account_id = new_id("liq")
    row = db_service.score([in_liquidation(account_id)])["results"][0]
    assert row["status"] == "in_liquidation" and not row["horizons"]
    assert row["level"] == "critical" and row["warning_id"] is not None
    feed = db_service.warnings_after(cursor)
    assert [(w["account_id"], w["level"], w["id"]) for w in feed] == [
        (account_id, "critical", row["warning_id"])
    ]


def test_the_service_checkpoints_its_sqlite_store_itself(service: Service) -> None:
    """Commits on the request path no longer checkpoint (a high ``wal_autocheckpoint``): the
    service's own thread copies the WAL into the database file within about a second."""
    path = Path(sa.make_url(service.settings.database_url).database)
    account_id = new_id("checkpointed")
    assert service.score([account(account_id)])["results"][0]["status"] == "ok"

    query = "SELECT count(*) FROM account_state WHERE account_id = ?"
    assert wait_for(lambda: count_in_file_alone(path, query, account_id) == 1, timeout=10.0)


def test_a_raised_warning_is_in_the_feed_when_the_score_returns(
    db_service: Service, override: Callable[..., None]
) -> None:
    snapshot = account(new_id("probe"), collateral=3_000.0)
    p = db_service.score([snapshot])["results"][0]["horizons"]["24h"]["p_negative"]
    assert 0.0 < p < 1.0
    # thresholds around this account's score: it reaches "watch" and nothing above
    override(
        db_service,
        thresholds=Thresholds(watch=p / 2, warning=p + (1 - p) / 2, critical=p + 3 * (1 - p) / 4),
    )
    cursor = db_service.cursor()
    account_id = new_id("watched")
    row = db_service.score([{**snapshot, "account_id": account_id}])["results"][0]
    assert row["level"] == "watch" and row["warning_id"] is not None
    feed = db_service.warnings_after(cursor)
    assert len(feed) == 1
    assert feed[0]["id"] == row["warning_id"] and feed[0]["account_id"] == account_id
    assert feed[0]["probability"] == pytest.approx(p) and feed[0]["previous_level"] == "none"
    again = db_service.score([{**snapshot, "account_id": account_id}])["results"][0]
    assert again["level"] == "watch" and again["warning_id"] is None  # held, not raised twice
    assert db_service.warnings_after(feed[0]["cursor"]) == []


def test_a_store_failure_fails_the_request_and_nothing_is_acknowledged(
    db_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT INTO warnings", {}, Exception("disk I/O error"))

    cursor = db_service.cursor()
    monkeypatch.setattr(store, "record_scores", broken)
    response = db_service.client.post(
        "/v1/score", json={"accounts": [in_liquidation(new_id("lost"))]}, headers=key()
    )
    assert response.status_code == 503
    assert "nothing was acknowledged" in response.json()["detail"]
    assert "results" not in response.json()
    monkeypatch.undo()
    assert db_service.warnings_after(cursor) == []


def test_a_failure_after_the_commit_loses_no_warning(
    db_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    committing = store.record_scores

    def broken(*args: Any, **kwargs: Any) -> Any:
        committing(*args, **kwargs)  # the transaction commits, then the connection drops
        raise sa.exc.OperationalError("COMMIT", {}, Exception("connection reset"))

    cursor = db_service.cursor()
    account_id = new_id("kept")
    monkeypatch.setattr(store, "record_scores", broken)
    response = db_service.client.post(
        "/v1/score", json={"accounts": [in_liquidation(account_id)]}, headers=key()
    )
    assert response.status_code == 503
    monkeypatch.undo()
    feed = db_service.warnings_after(cursor)
    assert [w["account_id"] for w in feed] == [account_id]  # stored before the failure
    retry = db_service.score([in_liquidation(account_id)])["results"][0]
    assert retry["level"] == "critical" and retry["warning_id"] is None  # not raised twice
    assert db_service.warnings_after(feed[-1]["cursor"]) == []


def test_an_overloaded_service_refuses_with_503_at_once_and_stores_nothing_for_it(
    service: Service, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from liqrisk.serve import app as app_module
    from liqrisk.serve.batching import Batcher

    scorer = service.app.state.runtime.served.scorer
    scoring = scorer.score

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # a busy scorer: requests arriving meanwhile queue behind it
        return scoring(*args, **kwargs)

    monkeypatch.setattr(scorer, "score", slow)
    metrics = service.app.state.metrics
    refused_before = metrics.registry.get_sample_value("liqrisk_score_refused_total")
    batcher = Batcher(functools.partial(app_module._score_batch, metrics=metrics), max_size=100, max_queued=1)
    usual, service.app.state.batcher = service.app.state.batcher, batcher  # (State: no monkeypatch)
    request.addfinalizer(lambda: setattr(service.app.state, "batcher", usual))
    request.addfinalizer(batcher.close)
    requests = [[in_liquidation(new_id(f"shed{i}"))] for i in range(6)]
    cursor = service.cursor()
    start = threading.Barrier(len(requests))
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        start.wait()
        answers[i] = service.client.post("/v1/score", json={"accounts": requests[i]}, headers=key())

    run_threads([lambda i=i: send(i) for i in range(len(requests))])
    refused = [a for a in answers if a.status_code == 503]
    served = [a for a in answers if a.status_code == 200]
    assert refused and served and len(refused) + len(served) == len(requests)
    assert len(refused) == batcher.refused == metrics.registry.get_sample_value("liqrisk_score_refused_total") - refused_before
    for answer in refused:
        assert answer.headers["Retry-After"] == "1" and "overloaded" in answer.json()["detail"]
    kept = {a.json()["results"][0]["account_id"] for a in served}
    assert {w["account_id"] for w in service.warnings_after(cursor)} == kept  # refused: not stored


def test_an_unexpected_error_is_a_500_without_details(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(service.app.state.runtime.served.scorer, "score", boom)
    client = TestClient(service.app, raise_server_exceptions=False)  # same app, no new lifespan
    response = client.post("/v1/score", json={"accounts": [account("x")]}, headers=key())
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "internal error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "secret" not in response.text and "Traceback" not in response.text


# --- market data -----------------------------------------------------------------------------


def bar(symbol: str, ts: pd.Timestamp, price: float, **changes: Any) -> dict[str, Any]:
    values = {
        "symbol": symbol,
        "ts": ts.isoformat(),
        "open": price,
        "high": price * 1.01,
        "low": price * 0.99,
        "close": price,
        "volume": 5_000.0,
    }
    return values | changes


def latest(service: Service) -> pd.Timestamp:
    return pd.Timestamp(service.client.get("/readyz").json()["market"]["latest"])


def test_bars_are_appended_all_or_nothing(service: Service) -> None:
    before = latest(service)
    # "latest" is when the last bar completed: the next bar opens then
    bad = [bar("ETHUSDT", before, 2_000.0),
           bar("ETHUSDT", before + pd.Timedelta("1h"), 2_000.0, high=1_000.0)]  # high < low
    response = service.client.post("/v1/bars", json={"bars": bad}, headers=key())
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "row 1" in detail and "ETHUSDT" in detail and "high" in detail
    assert latest(service) == before  # the good first bar was not applied either

    good = [bar("BTCUSDT", before + pd.Timedelta(hours=h), BTC) for h in (0, 1)]
    response = service.client.post("/v1/bars", json={"bars": good}, headers=key())
    assert response.status_code == 200, response.text
    assert response.json()["appended"] == 2
    assert latest(service) == before + pd.Timedelta("2h")


def test_a_mistyped_bar_is_named_by_row_field_and_symbol(service: Service) -> None:
    ts = latest(service)
    rows = [bar("ETHUSDT", ts, 2_000.0), bar("ETHUSDT", ts + pd.Timedelta("1h"), 2_000.0, close="x")]
    response = service.client.post("/v1/bars", json={"bars": rows}, headers=key())
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "body.bars[1].close"
    assert "symbol=ETHUSDT" in body["detail"]


@pytest.mark.parametrize(
    "ts",
    [
        "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-23:59",
        "1899-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
    ],
)
def test_a_bar_outside_the_years_is_named_by_row_and_symbol(service: Service, ts: str) -> None:
    before = latest(service)
    rows = [bar("ETHUSDT", before, 2_000.0), bar("ETHUSDT", before, 2_000.0) | {"ts": ts}]
    response = service.client.post("/v1/bars", json={"bars": rows}, headers=key())
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("bars: ts out of range at row 1, symbol=ETHUSDT,"), detail
    assert latest(service) == before


def test_a_bars_log_failure_fails_the_post_and_appends_nothing(
    db_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT INTO logged_bars", {}, Exception("disk I/O error"))

    before = latest(db_service)
    posted = [bar("ETHUSDT", before + pd.Timedelta(hours=h), 2_000.0) for h in (0, 1)]
    monkeypatch.setattr(store.BarsWriter, "record", broken)
    response = db_service.client.post("/v1/bars", json={"bars": posted}, headers=key())
    assert response.status_code == 503
    assert "nothing was appended" in response.json()["detail"]
    monkeypatch.undo()
    assert latest(db_service) == before
    retry = db_service.client.post("/v1/bars", json={"bars": posted}, headers=key())
    assert retry.status_code == 200 and retry.json()["appended"] == 2, retry.text
    assert latest(db_service) == before + pd.Timedelta("2h")


@pytest.fixture
def replicas(model_store: str, market_dir: Path, tmp_path: Path) -> ServeSettings:
    """Settings of apps sharing one new database, as two replicas (or ``--workers 2``) run:
    each app holds its own market."""
    return settings_for(model_store, market_dir, tmp_path, bars_poll_seconds=0.1)


def test_bars_posted_to_one_process_are_scored_by_another_and_after_a_restart(
    replicas: ServeSettings,
) -> None:
    settings = replicas
    with running(settings) as a, running(settings) as b:
        before = latest(b)
        posted = [bar("BTCUSDT", before + pd.Timedelta(hours=h), BTC * 1.02) for h in (0, 1)]
        response = a.client.post("/v1/bars", json={"bars": posted}, headers=key())
        assert response.status_code == 200 and response.json()["appended"] == 2, response.text
        # b applies a's bars on its own, within its poll and the time to append them
        wait_for(lambda: latest(b) == before + pd.Timedelta("2h"))
        positions = [s.client.get("/readyz").json()["market"]["bars_logged"] for s in (a, b)]
        assert positions == [2, 2]

        one = account(new_id("replica"), qty=2.0)
        scored_b = b.client.post("/v1/score", json={"accounts": [one]}, headers=key()).json()
        row = scored_b["results"][0]
        assert row["status"] == "ok", row
        assert pd.Timestamp(row["as_of"]) == before + pd.Timedelta("2h")  # the default: a's last bar
        assert row["baseline"]["positions"][0]["price"] == BTC * 1.02  # a's close

        # b holds a's bars as its own: the same bar again adds nothing, a different one is refused
        again = b.client.post("/v1/bars", json={"bars": posted[1:]}, headers=key())
        assert again.status_code == 200 and again.json()["appended"] == 0, again.text
        changed = [posted[1] | {"volume": 1.0}]
        refused = b.client.post("/v1/bars", json={"bars": changed}, headers=key())
        assert refused.status_code == 422
        assert "rewrites a bar already held" in refused.json()["detail"]
        scored_a = a.client.post("/v1/score", json={"accounts": [one]}, headers=key()).json()
        assert scored_a["results"][0]["horizons"] == row["horizons"]

    with running(settings) as restarted:  # the data files alone end at `before`
        assert latest(restarted) == before + pd.Timedelta("2h")
        again = restarted.client.post("/v1/score", json={"accounts": [one]}, headers=key()).json()
        assert again["results"][0]["horizons"] == row["horizons"]
        assert again["results"][0]["baseline"] == row["baseline"]


def test_concurrent_posts_to_two_processes_are_all_logged_once(replicas: ServeSettings) -> None:
    with running(replicas) as a, running(replicas) as b:
        start = latest(a)
        hours = 12

        def post(service: Service, symbol: str, price: float) -> Callable[[], None]:
            def run() -> None:
                for h in range(hours):
                    one = [bar(symbol, start + pd.Timedelta(hours=h), price)]
                    response = service.client.post("/v1/bars", json={"bars": one}, headers=key())
                    assert response.status_code == 200, response.text
                    assert response.json()["appended"] == 1, response.text

            return run

        # each process posts one symbol's bars while the other posts the other's: every post
        # either finds the log where it caught up to, or catches up and screens again
        run_threads([post(a, "BTCUSDT", BTC), post(b, "ETHUSDT", 2_000.0)])
        engine = store.create_engine_for(replicas.database_url)
        try:
            logged, through = store.logged_bars_after(engine, 0)
        finally:
            engine.dispose()
        assert through == 2 * hours == len(logged)
        assert sorted(logged.groupby("symbol")["ts"].nunique().items()) == [
            ("BTCUSDT", hours), ("ETHUSDT", hours)
        ]
        for service in (a, b):
            wait_for(lambda service=service: latest(service) == start + pd.Timedelta(hours=hours))
            row = service.score([account(new_id("both"))], as_of=None)["results"][0]
            assert pd.Timestamp(row["as_of"]) == start + pd.Timedelta(hours=hours)


# --- warnings feed ---------------------------------------------------------------------------


def test_the_feed_pages_each_warning_exactly_once(db_service: Service) -> None:
    cursor = db_service.cursor()
    ids = [new_id("page") for _ in range(5)]
    db_service.score([in_liquidation(a) for a in ids])
    seen: list[dict[str, Any]] = []
    after = cursor
    while True:
        page = db_service.client.get(
            "/v1/warnings", params={"after": after, "limit": 2}, headers=key("reader")
        ).json()
        seen += page["items"]
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [w["account_id"] for w in seen] == ids
    assert [w["id"] for w in seen] == sorted({w["id"] for w in seen})
    assert db_service.warnings_after(after) == []


@pytest.mark.parametrize("after", ["abc", "-1", "99999999999999999999", "9999999999999999999"])
def test_a_bad_cursor_is_a_422(db_service: Service, after: str) -> None:
    response = db_service.client.get("/v1/warnings", params={"after": after}, headers=key())
    assert response.status_code == 422 and "after" in response.json()["detail"]


# --- webhooks --------------------------------------------------------------------------------


def test_webhooks_register_deliver_signed_report_state_and_disable(
    db_service: Service, receiver: Receiver
) -> None:
    url = receiver.url(f"/ok/{new_id('hook')}")
    created = db_service.client.post(
        "/v1/webhooks",
        json={"url": url, "secret": receiver.secret, "description": "ops"},
        headers=key(),
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"] == receiver.secret and hook["active"] and hook["url"] == url
    listed = db_service.client.get("/v1/webhooks", headers=key()).json()
    assert any(h["id"] == hook["id"] for h in listed) and all("secret" not in h for h in listed)
    assert db_service.client.get(f"/v1/webhooks/{hook['id']}", headers=key()).json()["url"] == url

    row = db_service.score([in_liquidation(new_id("pushed"))])["results"][0]
    got = wait_for(lambda: receiver.for_path(urlsplit(url).path))
    assert got[0].verified  # the receiver checks the Standard Webhooks signature
    payload = json.loads(got[0].body)
    assert payload["type"] == "liqrisk.warning.raised" and payload["data"]["id"] == row["warning_id"]

    def delivered() -> list[dict[str, Any]]:
        rows = db_service.client.get(
            "/v1/deliveries", params={"warning_id": row["warning_id"]}, headers=key()
        ).json()
        return [d for d in rows if d["webhook_id"] == hook["id"] and d["status"] == "delivered"]

    delivery = wait_for(delivered)[0]
    assert delivery["message_id"] == got[0].msg_id and delivery["attempts"] == 1
    per_hook = db_service.client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=key()).json()
    assert [d["id"] for d in per_hook] == [delivery["id"]]

    disabled = db_service.client.delete(f"/v1/webhooks/{hook['id']}", headers=key())
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    for path in ("/v1/webhooks/wh_nope", "/v1/webhooks/wh_nope/deliveries"):
        assert db_service.client.get(path, headers=key()).status_code == 404
    assert db_service.client.delete("/v1/webhooks/wh_nope", headers=key()).status_code == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"url": "http://127.0.0.1:9/x"}, "non-public"),
        ({"url": "http://localhost/x"}, "non-public"),
        ({"url": "http://10.1.2.3/x"}, "non-public"),
        ({"url": "ftp://example.com/x"}, "http(s)"),
        ({"url": "http://[/x"}, "not a valid URL"),
    ],
)
def test_webhook_urls_are_checked(
    service: Service, override: Callable[..., None], body: dict[str, Any], words: str
) -> None:
    override(service, webhook_allow_private=False)
    response = service.client.post("/v1/webhooks", json=body, headers=key())
    assert response.status_code == 422 and words in response.json()["detail"]


def test_a_webhook_secret_must_be_a_standard_webhooks_secret(service: Service) -> None:
    body = {"url": "http://127.0.0.1:9/x", "secret": "not-a-secret"}
    response = service.client.post("/v1/webhooks", json=body, headers=key())
    assert response.status_code == 422 and "whsec_" in response.json()["detail"]


# --- auth, limits, validation ----------------------------------------------------------------

PROTECTED = [
    ("POST", "/v1/score", {"accounts": [account("auth")]}, Scope.SCORE),
    ("POST", "/v1/bars", {"bars": []}, Scope.INGEST),
    ("GET", "/v1/warnings", None, Scope.WARNINGS_READ),
    ("POST", "/v1/webhooks", {"url": "http://127.0.0.1/x"}, Scope.WEBHOOKS_ADMIN),
    ("GET", "/v1/webhooks", None, Scope.WEBHOOKS_ADMIN),
    ("GET", "/v1/webhooks/wh_x", None, Scope.WEBHOOKS_ADMIN),
    ("DELETE", "/v1/webhooks/wh_x", None, Scope.WEBHOOKS_ADMIN),
    ("GET", "/v1/webhooks/wh_x/deliveries", None, Scope.WEBHOOKS_ADMIN),
    ("GET", "/v1/deliveries?warning_id=1", None, Scope.WEBHOOKS_ADMIN),
    ("POST", "/v1/admin/reload", None, Scope.ADMIN),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), PROTECTED, ids=[f"{m} {p}" for m, p, *_ in PROTECTED])
def test_every_route_needs_a_key_with_its_scope(
    service: Service, method: str, path: str, body: Any, scope: Scope
) -> None:
    def call(headers: dict[str, str]) -> Any:
        return service.client.request(method, path, json=body, headers=headers)

    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = call(headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "APIKey"
    assert call(key("nobody")).status_code == 403
    assert scope.value in call(key("nobody")).json()["detail"]
    assert call(key("admin")).status_code not in (401, 403)


def test_the_reader_key_reads_warnings_but_cannot_score(service: Service) -> None:
    assert service.client.get("/v1/warnings", headers=key("reader")).status_code == 200
    assert service.client.post(
        "/v1/score", json={"accounts": [account("r")]}, headers=key("reader")
    ).status_code == 403


def test_a_body_over_the_limit_is_a_413(service: Service) -> None:
    big = {"accounts": [account(f"big-{i}") for i in range(2_000)]}  # > 100 kB of JSON
    response = service.client.post("/v1/score", json=big, headers=key())
    assert response.status_code == 413 and "100000 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        yield b'{"accounts": ['
        for _ in range(1_000):
            yield b'{"account_id": "chunk", "margin_mode": "cross", "positions": []},' * 2
        yield b"7]}"

    response = service.client.post(
        "/v1/score", content=chunks(), headers={**key(), "content-type": "application/json"}
    )
    assert response.status_code == 413 and response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"accounts": "x"}, "body.accounts"),
        ({"accounts": []}, "body.accounts"),
        ({}, "body.accounts"),
        ({"accounts": [account("v")], "what_if": {"cut": 1.5}}, "body.what_if.cut"),
        ({"accounts": [account("v")], "as_of": "yesterday"}, "body.as_of"),
        ({"accounts": [account("v")], "color": "red"}, "body.color"),
    ],
)
def test_a_validation_error_names_the_field_path(service: Service, body: Any, field: str) -> None:
    response = service.client.post("/v1/score", json=body, headers=key())
    assert response.status_code == 422
    out = response.json()
    assert out["errors"][0]["field"] == field
    assert out["detail"].startswith(f"{field}: ")


def test_invalid_json_and_bad_queries_are_422(service: Service, override: Callable[..., None]) -> None:
    response = service.client.post(
        "/v1/score", content=b'{"accounts": [', headers={**key(), "content-type": "application/json"}
    )
    assert response.status_code == 422 and "invalid JSON" in response.json()["detail"]
    response = service.client.get("/v1/warnings", params={"limit": 0}, headers=key())
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "query.limit"
    response = service.client.get("/v1/deliveries", headers=key())
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "query.warning_id"
    override(service, max_accounts=2)
    response = service.client.post(
        "/v1/score", json={"accounts": [account(f"m{i}") for i in range(3)]}, headers=key()
    )
    assert response.status_code == 422 and "at most 2 accounts" in response.json()["detail"]


# --- readiness and model reload --------------------------------------------------------------


def test_not_ready_until_a_champion_exists_then_each_new_champion_is_served(
    tmp_path: Path,
    migrated_mlflow_db: Path,
    mlflow_clean: None,
    market_dir: Path,
    risk_model: Any,
) -> None:
    import shutil

    shutil.copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    score = {"accounts": [account("reload")], "as_of": AS_OF}
    with TestClient(create_app(settings_for(uri, market_dir, tmp_path))) as client:  # no polling

        def reasons() -> str:
            response = client.get("/readyz")
            assert response.status_code == 503 and response.json()["ready"] is False
            return " ".join(response.json()["reasons"])

        assert "no version of model 'liqrisk' has the alias 'champion'" in wait_for(
            lambda: "alias" in reasons() and reasons()
        )
        assert client.post("/v1/score", json=score, headers=key()).status_code == 503
        failed = client.post("/v1/admin/reload", headers=key())
        assert failed.status_code == 503 and "alias" in failed.json()["detail"]

        register(risk_model, uri)  # v1 becomes champion
        reload = client.post("/v1/admin/reload", headers=key())
        assert reload.status_code == 200 and reload.json()["changed"] is True
        first_ready = wait_ready(client)
        assert first_ready["model"]["version"] == "1" and first_ready["reasons"] == []

        register(risk_model, uri, alias=None)  # v2 registered, alias unmoved
        reload = client.post("/v1/admin/reload", headers=key())
        assert reload.status_code == 200 and reload.json()["changed"] is False

        versions: list[tuple[str, set[str]]] = []
        stop = threading.Event()

        def keep_scoring() -> None:
            while not stop.is_set():
                body = client.post("/v1/score", json=score, headers=key()).json()
                versions.append((body["model"]["version"], {r["model"]["version"] for r in body["results"]}))

        scorer = threading.Thread(target=keep_scoring)
        scorer.start()
        try:
            wait_for(lambda: versions)  # v1 answered at least once
            registry.set_registered_model_alias(MODEL_NAME, "champion", "2")
            reload = client.post("/v1/admin/reload", headers=key())
            assert reload.status_code == 200, reload.text
            assert reload.json()["changed"] is True and reload.json()["model"]["version"] == "2"
            wait_for(lambda: versions and versions[-1][0] == "2")
        finally:
            stop.set()
            scorer.join()
        assert client.get("/readyz").json()["model"]["version"] == "2"
        assert all({served} == inner for served, inner in versions)  # never a mix in one response
        assert {v for v, _ in versions} == {"1", "2"}

    polling = settings_for(uri, market_dir, tmp_path, reload_seconds=0.2)
    with TestClient(create_app(polling)) as client:
        assert wait_ready(client)["model"]["version"] == "2"
        registry.set_registered_model_alias(MODEL_NAME, "champion", "1")  # e.g. a rollback
        wait_for(lambda: client.get("/readyz").json()["model"]["version"] == "1")

    pinned = settings_for(uri, market_dir, tmp_path, model_version="2")
    with TestClient(create_app(pinned)) as client:
        assert wait_ready(client)["model"]["version"] == "2"  # pinned, though v1 is champion


# --- the command -----------------------------------------------------------------------------


def test_liqrisk_serve_answers_on_loopback_with_settings_from_the_environment(
    model_store: str, market_dir: Path, tmp_path: Path
) -> None:
    import httpx

    ops = {"name": "ops", "key_sha256": hash_key("cli-key"), "scopes": ["score", "warnings:read"]}
    settings = {
        "TRACKING_URI": model_store,
        "DATA_DIR": str(market_dir),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'warnings.db'}",
        "API_KEYS": json.dumps([ops]),
    }
    with ServeProcess(settings, cwd=tmp_path, log=tmp_path / "serve.log") as served:
        served.wait_ready()
        with httpx.Client(base_url=served.url, trust_env=False) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            scored = http.post(
                "/v1/score",
                json={"accounts": [in_liquidation("cli")], "as_of": AS_OF},
                headers={"X-API-Key": "cli-key"},
            )
            assert scored.status_code == 200, scored.text
            assert scored.json()["results"][0]["level"] == "critical"
            feed = http.get("/v1/warnings", headers={"X-API-Key": "cli-key"}).json()
            assert [w["account_id"] for w in feed["items"]] == ["cli"]
        log = served.stop()
    assert "Application shutdown complete" in log, log[-2000:]  # uvicorn re-raises SIGTERM after it


# --- metrics --------------------------------------------------------------------------------


def alert_series() -> set[str]:
    """The ``liqrisk_*`` series the shipped alerting rules read (``docs/prometheus-alerts.yml``)."""
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "prometheus-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 5
    return {name for expr in exprs for name in re.findall(r"\bliqrisk_\w+", expr)}


def test_metrics_count_the_work_and_report_the_state(
    model_store: str, market_dir: Path, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(settings_for(model_store, market_dir, tmp_path, database_url=db_url)) as svc:
        fresh = scrape(svc.client)
        assert fresh["liqrisk_ready"] == {(): 1.0}
        assert "liqrisk_accounts_scored_total" not in fresh  # no label seen yet
        # a webhook nobody answers: each warning's delivery waits in the backlog
        hook = svc.client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{free_port()}/h"}, headers=key())
        assert hook.status_code == 201, hook.text
        accounts = [
            account(new_id("calm"), qty=0.2),
            account(new_id("risky"), collateral=1_500.0, qty=1.0),
            in_liquidation(new_id("gone")),
            {"account_id": new_id("bad"), "positions": []},
        ]
        results = svc.score(accounts)["results"]
        after = scrape(svc.client)

        statuses = Counter(r["status"] for r in results)
        assert after["liqrisk_accounts_scored_total"] == {(("status", s),): float(n) for s, n in statuses.items()}
        raised = Counter(r["level"] for r in results if r["warning_id"] is not None)
        assert raised  # the account in liquidation raises one at least
        assert after["liqrisk_warnings_raised_total"] == {(("level", lv),): float(n) for lv, n in raised.items()}
        assert after["liqrisk_score_batch_accounts_count"] == {(): 1.0}
        assert after["liqrisk_score_batch_accounts_sum"] == {(): float(len(accounts))}
        for timed in ("liqrisk_score_batch_seconds", "liqrisk_store_batch_seconds", "liqrisk_score_wait_seconds"):
            assert after[f"{timed}_count"] == {(): 1.0} and after[f"{timed}_sum"][()] >= 0.0
        backlog = after["liqrisk_webhook_deliveries_backlog"]
        assert sum(backlog.values()) == sum(raised.values())  # delivered never, failed not yet
        assert after["liqrisk_webhook_earliest_due_timestamp_seconds"][()] > 0
        assert after["liqrisk_store_up"] == {(): 1.0}

        ready = svc.client.get("/readyz").json()
        version = ready["model"]["version"]
        assert after["liqrisk_model_info"] == {(("name", MODEL_NAME), ("version", version)): 1.0}
        assert after["liqrisk_market_latest_bar_timestamp_seconds"] == {
            (("symbol", s),): MARKET_END.timestamp() for s in ("BTCUSDT", "ETHUSDT")
        }
        assert after["liqrisk_bars_logged"] == {(): 0.0}

        posted = svc.client.post("/v1/bars", json={"bars": [bar("ETHUSDT", MARKET_END, 2_000.0)]}, headers=key())
        assert posted.status_code == 200, posted.text
        moved = scrape(svc.client)
        assert moved["liqrisk_market_bar_seconds"] == {(("symbol", s),): 3600.0 for s in ("BTCUSDT", "ETHUSDT")}
        assert alert_series() <= set(moved)  # every series the shipped alerts read is exported
        assert moved["liqrisk_bars_appended_total"] == {(): 1.0}
        assert moved["liqrisk_bars_logged"] == {(): 1.0}
        eth = moved["liqrisk_market_latest_bar_timestamp_seconds"][(("symbol", "ETHUSDT"),)]
        assert eth == (MARKET_END + pd.Timedelta("1h")).timestamp()

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is down"))

        monkeypatch.setattr(store, "record_scores", broken)
        failed = svc.client.post("/v1/score", json={"accounts": [account(new_id("late"))]}, headers=key())
        assert failed.status_code == 503
        monkeypatch.setattr(svc.app.state.runtime.engine, "connect", broken)
        down = scrape(svc.client)  # the scrape still answers: the state it can read, and why not the rest
        assert down["liqrisk_store_errors_total"] == {(): 1.0} and down["liqrisk_store_up"] == {(): 0.0}
        assert "liqrisk_webhook_deliveries_backlog" not in down and down["liqrisk_ready"] == {(): 1.0}


def test_an_account_is_looked_up_with_its_level_score_and_latest_warning(db_service: Service) -> None:
    calm_id, gone_id = new_id("look-calm"), new_id("desk/look-gone")  # an id may hold a slash
    rows = {r["account_id"]: r for r in db_service.score([account(calm_id, qty=0.2), in_liquidation(gone_id)])["results"]}

    gone = db_service.client.get(f"/v1/accounts/{gone_id}", headers=key("reader"))
    assert gone.status_code == 200, gone.text
    state = gone.json()
    assert state["account_id"] == gone_id and state["level"] == rows[gone_id]["level"] == "critical"
    assert state["last_warning"]["id"] == rows[gone_id]["warning_id"]
    assert state["last_warning"]["level"] == "critical" and state["last_warning"]["account_id"] == gone_id
    assert pd.Timestamp(state["scored_at"]) == MARKET_END

    calm = db_service.client.get(f"/v1/accounts/{calm_id}", headers=key("reader")).json()
    assert calm["level"] == rows[calm_id]["level"] and calm["last_warning"] is None
    assert calm["probability"] == rows[calm_id]["horizons"]["24h"]["p_negative"]

    never = db_service.client.get(f"/v1/accounts/{new_id('never')}", headers=key("reader"))
    assert never.status_code == 404 and "never scored" in never.json()["detail"]
    assert db_service.client.get(f"/v1/accounts/{gone_id}").status_code == 401
    assert db_service.client.get(f"/v1/accounts/{gone_id}", headers=key("scorer")).status_code == 403
    long = db_service.client.get(f"/v1/accounts/{'x' * 201}", headers=key("reader"))
    assert long.status_code == 422 and long.json()["errors"][0]["field"] == "path.account_id"
