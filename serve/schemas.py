"""Request and response bodies of the HTTP API (pydantic), and the error responses each route
declares so the OpenAPI document lists every status code the service answers with.

Accounts follow the snapshot shape of the contract's replay interface
(``docs/liquidation-contract.md``): ``account_id``, ``as_of``, ``margin_mode``, ``collateral``
and ``positions`` of ``symbol``, ``side`` (the integer 1 or -1), ``qty``, ``entry_price`` and,
for isolated margin, ``collateral``. :class:`AccountIn` documents that shape in the OpenAPI
document, but each account is passed on as sent: the scorer checks it by the project's one set
of account rules (``liqrisk.features.accounts``, the same as ``liqrisk replay``), so one
malformed account becomes an ``error`` row naming the field path and never stops the others,
and the request as a whole is refused (422) only when its envelope is wrong.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    WrapValidator,
    field_validator,
)

from liqrisk.features.bars import FIRST_YEAR, LAST_YEAR
from liqrisk.serve.store import MAX_ACCOUNTS_PER_CALL, MAX_PAGE

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # a JSON number, not "1.5"


def _plausible(value: datetime) -> datetime:
    in_range = FIRST_YEAR <= value.year <= LAST_YEAR  # checked first: UTC of year 1 overflows
    if not (in_range and FIRST_YEAR <= value.astimezone(UTC).year <= LAST_YEAR):
        raise ValueError(
            f"must be between the years {FIRST_YEAR} and {LAST_YEAR}, got {value.isoformat()}"
        )
    return value


# An ISO 8601 time with an offset, in the years bars may have (``liqrisk.features.bars``).
Timestamp = Annotated[AwareDatetime, AfterValidator(_plausible)]


# --- errors --------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """Every error body: ``detail`` says what went wrong in words."""

    detail: str
    request_id: str | None = Field(default=None, description="Set on 500: quote it to operators.")


class FieldError(BaseModel):
    """One invalid field: its path in the request (``body.accounts[0].as_of``)."""

    field: str
    message: str
    type: str


class ValidationErrorOut(BaseModel):
    """422: ``detail`` lists each invalid field as ``path: message``; ``errors`` itemises them
    (empty when the data was well-formed but wrong, e.g. a bar with ``high < low``)."""

    detail: str
    errors: list[FieldError] = []


def _error(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(ErrorOut, "Malformed request (the body could not be read)."),
    401: _error(ErrorOut, "Missing or unknown API key (`X-API-Key`)."),
    403: _error(ErrorOut, "The API key lacks the route's scope."),
    413: _error(ErrorOut, "Request body larger than the configured limit."),
    422: _error(ValidationErrorOut, "Invalid request; the message names the field path."),
    500: _error(ErrorOut, "Internal error; no details are given, quote the request id."),
}
NOT_READY = {
    503: _error(ErrorOut, "Model or market data not loaded yet, store unavailable, or overloaded.")
}
NOT_FOUND = {404: _error(ErrorOut, "No such resource.")}


def responses(*extra: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """The error responses every protected route can give, plus ``extra``."""
    out = dict(ERRORS)
    for more in extra:
        out |= more
    return out


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``("body", "accounts", 0, "as_of")`` as ``body.accounts[0].as_of``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- accounts --------------------------------------------------------------------------------


class PositionIn(BaseModel):
    """One position: side ``1`` long or ``-1`` short, ``qty`` and ``entry_price`` above zero;
    ``collateral`` only (and always) for isolated margin."""

    model_config = ConfigDict(extra="ignore")

    symbol: str = Field(min_length=1, max_length=100)
    side: Annotated[int, Strict()] = Field(description="1 long, -1 short")
    qty: Number = Field(gt=0)
    entry_price: Number = Field(gt=0)
    collateral: Number | None = Field(default=None, ge=0)

    @field_validator("side")
    @classmethod
    def _side(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError(f"side must be 1 (long) or -1 (short), got {value}")
        return value


class AccountIn(BaseModel):
    """An account snapshot as in the replay interface; ``as_of`` defaults to the request's."""

    model_config = ConfigDict(extra="ignore")

    account_id: str = Field(min_length=1, max_length=200)
    as_of: Timestamp | None = Field(
        default=None, description="ISO 8601 with offset; default: the request's as_of"
    )
    margin_mode: Literal["cross", "isolated"]
    collateral: Number | None = Field(
        default=None, ge=0, description="Quote currency; required for cross margin"
    )
    positions: list[PositionIn] = Field(min_length=1, max_length=1000)


def _as_given(value: Any, handler: Any) -> Any:
    return value  # checked by the scorer, one account at a time (module docstring)


# Documented as an AccountIn; passed on as sent, so a bad account becomes its own error row.
AccountItem = Annotated[AccountIn, WrapValidator(_as_given)]


class WhatIf(BaseModel):
    """A hypothetical change scored beside the current state: add collateral, and/or cut
    every position by a share (0.25 closes a quarter of each)."""

    model_config = ConfigDict(extra="forbid")

    add_collateral: Number | None = Field(default=None, ge=0)
    cut: Number | None = Field(default=None, ge=0, lt=1)


class ScoreRequest(BaseModel):
    """One or many accounts; ``as_of`` applies to accounts without their own."""

    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountItem] = Field(min_length=1, max_length=MAX_ACCOUNTS_PER_CALL)
    as_of: Timestamp | None = Field(
        default=None, description="Default: the completion of the market's latest bar."
    )
    what_if: WhatIf | None = None


class HorizonScore(BaseModel):
    """Model outputs for one horizon (``null`` where the model gave no finite number)."""

    p_liquidated: float | None
    p_negative: float | None
    expected_shortfall: float | None = Field(description="Expected bad debt, quote currency.")


class PositionBaseline(BaseModel):
    symbol: str
    side: int
    qty: float
    entry_price: float
    price: float | None = Field(description="Last close complete at or before as_of.")
    liquidation_price: float | None
    bankruptcy_price: float | None


class Baseline(BaseModel):
    """The rule view platforms use today, from the contract's formulas at the last close.

    Prices are ``null`` where no single price describes the account (cross margin on several
    symbols; see ``positions`` for isolated ones); distances are fractions of price.
    """

    model_config = ConfigDict(extra="allow")

    margin_ratio: float | None = None
    leverage: float | None = None
    equity: float | None = None
    maintenance_margin: float | None = None
    liquidation_price: float | None = None
    bankruptcy_price: float | None = None
    distance_to_liquidation_pct: float | None = None
    distance_to_bankruptcy_pct: float | None = None
    margin_call: bool | None = Field(default=None, description="margin ratio >= 0.8")
    over_leverage_cap: bool | None = Field(
        default=None, description="leverage above the asset class's regulatory cap"
    )
    positions: list[PositionBaseline] = []


class Reason(BaseModel):
    """A feature's push on the log-odds of P(negative), in words."""

    feature: str
    description: str
    contribution: float
    value: float | str | None = None


class WhatIfResult(BaseModel):
    """The account after the requested change, scored like any other."""

    add_collateral: float
    cut: float
    status: Literal["ok", "in_liquidation", "error"]
    error: str | None = None
    horizons: dict[str, HorizonScore] | None = None
    baseline: Baseline | None = None


class ModelRef(BaseModel):
    """The served model: registry name and version, the model kind per label, and the label
    whose log-odds the reasons explain (None when no reasons are given)."""

    name: str
    version: str
    kinds: dict[str, str] = {}
    reasons_for: str | None = None


class AccountScore(BaseModel):
    """One account's result.

    ``status``: ``ok`` (scored), ``in_liquidation`` (already meets ``E <= MM`` at as_of: the
    baseline only, no probabilities; level ``critical``) or ``error`` (``error`` says what and
    where). ``level`` is the warning level the account holds after this score (hysteresis
    included; ``null`` for errors) and ``warning_id`` the feed id of a warning this request
    raised for it.
    """

    model_config = ConfigDict(extra="allow")

    account_id: str | None
    status: Literal["ok", "in_liquidation", "error"]
    error: str | None = None
    as_of: datetime | None = None
    model: ModelRef | None = None
    horizons: dict[str, HorizonScore] | None = None
    baseline: Baseline | None = None
    reasons: list[Reason] = []
    what_if: WhatIfResult | None = None
    level: Literal["none", "watch", "warning", "critical"] | None = None
    warning_id: int | None = None


class ScoreResponse(BaseModel):
    model: ModelRef
    level_horizon: str = Field(description="The horizon whose P(negative) drives warnings.")
    results: list[AccountScore]


# --- bars ------------------------------------------------------------------------------------


class BarIn(BaseModel):
    """One OHLCV bar; ``ts`` is the bar's open time (ISO 8601 with offset).

    Values are checked by the bars rules (``liqrisk.features.bars``, as for bars files), which
    name the row, symbol and field: a ``ts`` outside the years they allow is a 422 from them.
    """

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=100)
    ts: AwareDatetime
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number | None = None


class BarsRequest(BaseModel):
    """Bars to append to the market state: all of them, or none if any is bad."""

    model_config = ConfigDict(extra="forbid")

    bars: list[BarIn] = Field(min_length=1, max_length=100_000)


class BarsResponse(BaseModel):
    appended: int
    latest: dict[str, datetime] = Field(description="Latest bar open time per symbol touched.")


# --- warnings, webhooks, deliveries ----------------------------------------------------------


class WarningOut(BaseModel):
    """A stored warning; the webhook payload's ``data`` has the same fields."""

    id: int
    cursor: str
    account_id: str
    level: Literal["watch", "warning", "critical"]
    previous_level: Literal["none", "watch", "warning", "critical"]
    probability: float
    threshold: float
    model_version: str
    scored_at: datetime
    created_at: datetime


class AccountStateOut(BaseModel):
    """An account as the warnings store holds it: its level now and the score that set it."""

    account_id: str
    level: Literal["none", "watch", "warning", "critical"]
    probability: float = Field(
        description="P(negative) at the level horizon of the last score applied (the level's input)."
    )
    scored_at: datetime = Field(description="The as_of of that score.")
    last_warning: WarningOut | None = Field(description="Its latest warning; null if none.")


class WarningsPage(BaseModel):
    """A page of the feed; pass ``next_cursor`` as ``after`` to read on (same when empty)."""

    items: list[WarningOut]
    next_cursor: str
    has_more: bool


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL receiving POSTs")
    secret: str | None = Field(
        default=None, max_length=200, description="whsec_<base64>; generated when left out"
    )
    description: str = Field(default="", max_length=1000)


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str
    active: bool
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signing secret; shown only in this response.")


class DeliveryOut(BaseModel):
    id: int
    warning_id: int
    webhook_id: str
    message_id: str = Field(description="The webhook-id header: the same on every retry.")
    status: Literal["pending", "delivering", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


# --- health, readiness, reload ---------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelInfo(BaseModel):
    name: str
    version: str
    uri: str
    horizons: list[str]
    loaded_at: datetime


class MarketInfo(BaseModel):
    symbols: int
    latest: datetime | None = Field(
        description="When the latest bar of any symbol completed (its open time + bar length)."
    )
    bars_logged: int = Field(
        description="How far this process has applied the service's bars log (bars posted "
        "through /v1/bars, to any process): replicas at the same position hold the same bars."
    )


class Readiness(BaseModel):
    ready: bool
    model: ModelInfo | None
    market: MarketInfo | None
    reasons: list[str] = Field(description="Why not ready (empty when ready).")


class ReloadOut(BaseModel):
    changed: bool
    model: ModelInfo | None
    detail: str


PAGE_LIMIT = Field(default=100, ge=1, le=MAX_PAGE)
