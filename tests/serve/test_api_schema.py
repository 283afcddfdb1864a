"""Fuzzing every route of the OpenAPI document with schemathesis, in process (ASGI), with a key
holding every scope: no 500s, and every answer is a documented status code, content type and
body shape.

Each operation is driven through ``APIOperation.as_strategy`` inside a plain test (the lazy
``schemathesis.pytest.from_fixture`` loader does not run on pytest 9), once with data that
follows the schema and once with data that breaks it. ``LIQRISK_FUZZ_EXAMPLES`` sets the
examples per operation and mode (default 25).
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from liqrisk.serve.app import create_app
from liqrisk.serve.settings import ApiKey, Scope, ServeSettings, hash_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_support import wait_ready

KEY = "fuzz-key-0123"
EXAMPLES = int(os.environ.get("LIQRISK_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/score"),
    ("POST", "/v1/bars"),
    ("GET", "/v1/warnings"),
    ("GET", "/v1/accounts/{account_id}"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{webhook_id}"),
    ("DELETE", "/v1/webhooks/{webhook_id}"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
    ("GET", "/v1/deliveries"),
    ("POST", "/v1/admin/reload"),
]
WITHOUT_INPUT = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/webhooks"),
    ("POST", "/v1/admin/reload"),
}


@pytest.fixture(scope="module")
def api_schema(
    model_store: str, market_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    db = tmp_path_factory.mktemp("fuzzdb") / "warnings.db"
    app = create_app(
        ServeSettings(
            tracking_uri=model_store,
            data_dir=market_dir,
            database_url=f"sqlite:///{db}",
            api_keys=[ApiKey(name="fuzz", key_sha256=hash_key(KEY), scopes=frozenset(Scope))],
            reload_seconds=0,
            outbox_enabled=False,  # registered URLs are made up: send nothing
            webhook_allow_private=True,  # no DNS look-ups of made-up hosts
        )
    )
    with TestClient(app) as client:  # runs the app's lifespan for the whole module
        wait_ready(client)
        yield schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(app))


class WithoutLifespan:
    """The app with a lifespan that does nothing: schemathesis' pytest plugin ends the lifespans
    it started after every test, which would unload the model between operations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors_and_only_documented_answers(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    if mode is GenerationMode.NEGATIVE and (method, path) in WITHOUT_INPUT:
        pytest.skip("no input to break")
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)

    fuzz()
