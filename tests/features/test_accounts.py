"""The account rules (``liqrisk.features.accounts``) on odd input: every value the plain-JSON
shortcuts of ``_account_rows`` pass on to the field rules gives the same result and the same
message (the same first bad field) as the rules alone did before the shortcuts existed.

``EXPECTED`` was recorded from the rules before the shortcuts (one entry per case): an error
message, or the accepted account as ``(as_of, margin_mode, positions)`` with each value's type.
An integer too large for a float, which then raised ``OverflowError`` out of the reader, is now
an error naming its field.
"""

from datetime import datetime

import numpy as np
import pytest

from liqrisk.features.accounts import JSON, account_fields, accounts_from_dicts
from liqrisk.features.errors import InputError
from liqrisk.pipelines.accounts import _PARQUET

AS_OF = "2024-01-02T03:00:00+00:00"
HUGE = 10**400  # an integer no float holds


class Text(str):
    """A ``str`` subclass: not plain, but a string to the rules."""



def position(**overrides):
    base = {"symbol": "BTCUSDT", "side": 1, "qty": 0.5, "entry_price": 40000.0}
    return {k: v for k, v in {**base, **overrides}.items() if v is not ...}


def cross(*positions, **overrides):
    base = {"account_id": "a", "as_of": AS_OF, "margin_mode": "cross", "collateral": 100.0,
            "positions": list(positions) or [position(), position(symbol="ETHUSDT", side=-1)]}
    return {k: v for k, v in {**base, **overrides}.items() if v is not ...}


def isolated(*positions, **overrides):
    positions = positions or (position(collateral=10.0), position(symbol="ETHUSDT", collateral=5.0))
    return cross(*positions, **{"margin_mode": "isolated", "collateral": ..., **overrides})


# ... drops a key
CASES = {
    "plain-cross": cross(),
    "plain-isolated": isolated(),
    "not-an-object": "account",
    "none": None,
    "list": [cross()],
    # account_id
    "id-missing": cross(account_id=...),
    "id-none": cross(account_id=None),
    "id-int": cross(account_id=7),
    "id-bool": cross(account_id=True),
    "id-float": cross(account_id=1.5),
    "id-list": cross(account_id=[1]),
    "id-text-subclass": cross(account_id=Text("a")),
    "id-bad-and-as-of-bad": cross(account_id=False, as_of=5),
    # as_of
    "as-of-missing": cross(as_of=...),
    "as-of-none": cross(as_of=None),
    "as-of-number": cross(as_of=5),
    "as-of-garbage": cross(as_of="yesterday"),
    "as-of-no-offset": cross(as_of="2024-01-02T03:00:00"),
    "as-of-offset": cross(as_of="2024-01-02T05:00:00+02:00"),
    "as-of-datetime": cross(as_of=datetime(2024, 1, 2, 3)),
    "as-of-text-subclass": cross(as_of=Text(AS_OF)),
    "as-of-out-of-range": cross(as_of="0001-01-01T00:00:00+01:00"),
    "as-of-bad-and-mode-bad": cross(as_of="x", margin_mode="y"),
    # margin_mode
    "mode-missing": cross(margin_mode=...),
    "mode-none": cross(margin_mode=None),
    "mode-upper": cross(margin_mode="CROSS"),
    "mode-number": cross(margin_mode=1),
    "mode-text-subclass": cross(margin_mode=Text("cross")),
    "mode-bad-and-collateral-bad": cross(margin_mode="portfolio", collateral=-1.0),
    # the account's collateral
    "cross-collateral-missing": cross(collateral=...),
    "cross-collateral-none": cross(collateral=None),
    "cross-collateral-negative": cross(collateral=-1.0),
    "cross-collateral-negative-int": cross(collateral=-1),
    "cross-collateral-zero": cross(collateral=0.0),
    "cross-collateral-minus-zero": cross(collateral=-0.0),
    "cross-collateral-int": cross(collateral=10),
    "cross-collateral-nan": cross(collateral=float("nan")),
    "cross-collateral-inf": cross(collateral=float("inf")),
    "cross-collateral-text": cross(collateral="10"),
    "cross-collateral-bool": cross(collateral=True),
    "cross-collateral-numpy": cross(collateral=np.float64(10.0)),
    "cross-collateral-huge": cross(collateral=HUGE),
    "cross-collateral-bad-and-positions-bad": cross(collateral="x", positions="y"),
    "isolated-account-collateral-none": isolated(collateral=None),
    "isolated-account-collateral-ok": isolated(collateral=3.0),
    "isolated-account-collateral-negative": isolated(collateral=-3.0),
    "isolated-account-collateral-nan": isolated(collateral=float("nan")),
    "isolated-account-collateral-text": isolated(collateral="3"),
    # positions
    "positions-missing": cross(positions=...),
    "positions-none": cross(positions=None),
    "positions-empty": cross(positions=[]),
    "positions-dict": cross(positions={}),
    "positions-tuple": cross(positions=(position(),)),
    "positions-text": cross(positions="x"),
    "position-not-an-object": cross(positions=["x"]),
    "position-none": cross(positions=[None]),
    "second-position-not-an-object": cross(positions=[position(), []]),
    "position-empty": cross(position(symbol=..., side=..., qty=..., entry_price=...)),
    # symbol
    "symbol-missing": cross(position(symbol=...)),
    "symbol-empty": cross(position(symbol="")),
    "symbol-number": cross(position(symbol=5)),
    "symbol-bytes": cross(position(symbol=b"BTCUSDT")),
    "symbol-text-subclass": cross(position(symbol=Text("BTCUSDT"))),
    "symbol-bad-and-qty-missing": cross(position(symbol=5, qty=...)),
    "symbol-bad-and-side-bad": cross(position(symbol="", side=0)),
    # side
    "side-missing": cross(position(side=...)),
    "side-true": cross(position(side=True)),
    "side-false": cross(position(side=False)),
    "side-float-long": cross(position(side=1.0)),
    "side-float-short": cross(position(side=-1.0)),
    "side-numpy": cross(position(side=np.float64(-1.0))),
    "side-2": cross(position(side=2)),
    "side-0": cross(position(side=0)),
    "side-1.5": cross(position(side=1.5)),
    "side-text": cross(position(side="1")),
    "side-nan": cross(position(side=float("nan"))),
    "side-huge": cross(position(side=HUGE)),
    "side-bad-and-qty-bad": cross(position(side=3, qty=-1.0)),
    # qty (entry_price follows the same rule)
    "qty-missing": cross(position(qty=...)),
    "qty-none": cross(position(qty=None)),
    "qty-int": cross(position(qty=2)),
    "qty-numpy": cross(position(qty=np.float64(2.0))),
    "qty-zero": cross(position(qty=0.0)),
    "qty-zero-int": cross(position(qty=0)),
    "qty-minus-zero": cross(position(qty=-0.0)),
    "qty-negative": cross(position(qty=-1.0)),
    "qty-negative-int": cross(position(qty=-1)),
    "qty-nan": cross(position(qty=float("nan"))),
    "qty-inf": cross(position(qty=float("inf"))),
    "qty-minus-inf": cross(position(qty=float("-inf"))),
    "qty-numpy-nan": cross(position(qty=np.float64("nan"))),
    "qty-text": cross(position(qty="1")),
    "qty-bool": cross(position(qty=True)),
    "qty-list": cross(position(qty=[1.0])),
    "qty-huge": cross(position(qty=HUGE)),
    "qty-tiny": cross(position(qty=5e-324)),
    "qty-bad-and-entry-bad": cross(position(qty="x", entry_price=-1.0)),
    "entry-missing": cross(position(entry_price=...)),
    "entry-int": cross(position(entry_price=40000)),
    "entry-zero": cross(position(entry_price=0.0)),
    "entry-nan": cross(position(entry_price=float("nan"))),
    "entry-text": cross(position(entry_price="40000")),
    "entry-bool": cross(position(entry_price=False)),
    "entry-huge": cross(position(entry_price=HUGE)),
    "second-position-qty-bad": cross(position(), position(qty=-2.0)),
    # an isolated position's own collateral
    "own-collateral-missing": isolated(position()),
    "own-collateral-none": isolated(position(collateral=None)),
    "own-collateral-second-missing": isolated(position(collateral=1.0), position()),
    "own-collateral-negative": isolated(position(collateral=-1.0)),
    "own-collateral-zero": isolated(position(collateral=0.0)),
    "own-collateral-minus-zero": isolated(position(collateral=-0.0)),
    "own-collateral-int": isolated(position(collateral=5)),
    "own-collateral-nan": isolated(position(collateral=float("nan"))),
    "own-collateral-inf": isolated(position(collateral=float("inf"))),
    "own-collateral-text": isolated(position(collateral="5")),
    "own-collateral-bool": isolated(position(collateral=True)),
    "own-collateral-numpy": isolated(position(collateral=np.float64(5.0))),
    "own-collateral-huge": isolated(position(collateral=HUGE)),
    "own-collateral-bad-and-entry-bad": isolated(position(collateral=-1.0, entry_price=0)),
    "cross-position-collateral-ignored": cross(position(collateral=-1.0)),
}

# the Parquet spelling of a row: no prefix, "a number", position_collateral
PARQUET_CASES = {
    "parquet-plain-cross": cross(position()),
    "parquet-qty-nan": cross(position(qty=float("nan"))),
    "parquet-side-text": cross(position(side="1")),
    "parquet-symbol-none": cross(position(symbol=None)),
    "parquet-collateral-text": cross(collateral="x"),
    "parquet-own-collateral": isolated(position(position_collateral=2.0)),
    "parquet-own-collateral-missing": isolated(position(collateral=2.0)),
    "parquet-own-collateral-negative": isolated(position(position_collateral=-2.0)),
    "parquet-own-collateral-int": isolated(position(position_collateral=2)),
}


def outcome(fields_of, raw, dialect):
    """What ``fields_of`` (an ``account_fields``) makes of ``raw``, as one line of text."""
    try:
        fields = fields_of(raw, dialect)
    except InputError as exc:
        return str(exc)
    as_of = fields["as_of"]
    positions = " | ".join(  # symbol, side, qty, entry_price, collateral
        ", ".join(f"{type(v).__name__} {v!r}" for v in p.values()) for p in fields["positions"]
    )
    return f"ok {as_of.isoformat()} ({as_of.unit}) {fields['margin_mode']}: {positions}"


# recorded from the rules before the plain-JSON shortcuts (the original account_fields)
EXPECTED = {
    'plain-cross': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'plain-isolated': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        "40000.0, float 10.0 | str 'ETHUSDT', int 1, float 0.5, float 40000.0, float 5.0"
    ),
    'not-an-object': 'expected a JSON object, got str',
    'none': 'expected a JSON object, got NoneType',
    'list': 'expected a JSON object, got list',
    'id-missing': 'account_id is missing',
    'id-none': 'account_id is missing',
    'id-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'id-bool': 'account_id must be a string or an integer, got True',
    'id-float': 'account_id must be a string or an integer, got 1.5',
    'id-list': 'account_id must be a string or an integer, got [1]',
    'id-text-subclass': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'id-bad-and-as-of-bad': 'account_id must be a string or an integer, got False',
    'as-of-missing': 'as_of is missing',
    'as-of-none': 'as_of is missing',
    'as-of-number': 'as_of must be an ISO 8601 string, got 5',
    'as-of-garbage': "as_of is not an ISO 8601 timestamp: 'yesterday'",
    'as-of-no-offset': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'as-of-offset': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'as-of-datetime': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'as-of-text-subclass': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'as-of-out-of-range': "as_of is out of range: '0001-01-01T00:00:00+01:00'",
    'as-of-bad-and-mode-bad': "as_of is not an ISO 8601 timestamp: 'x'",
    'mode-missing': 'margin_mode is missing',
    'mode-none': 'margin_mode is missing',
    'mode-upper': "margin_mode must be 'cross' or 'isolated', got 'CROSS'",
    'mode-number': "margin_mode must be 'cross' or 'isolated', got 1",
    'mode-text-subclass': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 100.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 100.0"
    ),
    'mode-bad-and-collateral-bad': "margin_mode must be 'cross' or 'isolated', got 'portfolio'",
    'cross-collateral-missing': 'collateral is missing',
    'cross-collateral-none': 'collateral is missing',
    'cross-collateral-negative': 'collateral must be >= 0, got -1.0',
    'cross-collateral-negative-int': 'collateral must be >= 0, got -1',
    'cross-collateral-zero': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 0.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 0.0"
    ),
    'cross-collateral-minus-zero': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float -0.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float -0.0"
    ),
    'cross-collateral-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 10.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 10.0"
    ),
    'cross-collateral-nan': 'collateral must be finite, got nan',
    'cross-collateral-inf': 'collateral must be finite, got inf',
    'cross-collateral-text': "collateral must be a JSON number, got '10'",
    'cross-collateral-bool': 'collateral must be a JSON number, got True',
    'cross-collateral-numpy': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        "float 10.0 | str 'ETHUSDT', int -1, float 0.5, float 40000.0, float 10.0"
    ),
    'cross-collateral-huge': 'collateral must be finite, got an integer too large for a float',
    'cross-collateral-bad-and-positions-bad': "collateral must be a JSON number, got 'x'",
    'isolated-account-collateral-none': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        "40000.0, float 10.0 | str 'ETHUSDT', int 1, float 0.5, float 40000.0, float 5.0"
    ),
    'isolated-account-collateral-ok': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        "40000.0, float 10.0 | str 'ETHUSDT', int 1, float 0.5, float 40000.0, float 5.0"
    ),
    'isolated-account-collateral-negative': 'collateral must be >= 0, got -3.0',
    'isolated-account-collateral-nan': 'collateral must be finite, got nan',
    'isolated-account-collateral-text': "collateral must be a JSON number, got '3'",
    'positions-missing': 'positions is missing',
    'positions-none': 'positions is missing',
    'positions-empty': 'positions is empty: an account needs at least one position',
    'positions-dict': 'positions must be a list, got dict',
    'positions-tuple': 'positions must be a list, got tuple',
    'positions-text': 'positions must be a list, got str',
    'position-not-an-object': 'positions[0] must be an object, got str',
    'position-none': 'positions[0] must be an object, got NoneType',
    'second-position-not-an-object': 'positions[1] must be an object, got list',
    'position-empty': 'positions[0].symbol is missing',
    'symbol-missing': 'positions[0].symbol is missing',
    'symbol-empty': "positions[0].symbol must be a non-empty string, got ''",
    'symbol-number': 'positions[0].symbol must be a non-empty string, got 5',
    'symbol-bytes': "positions[0].symbol must be a non-empty string, got b'BTCUSDT'",
    'symbol-text-subclass': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: Text 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 100.0'
    ),
    'symbol-bad-and-qty-missing': 'positions[0].qty is missing',
    'symbol-bad-and-side-bad': "positions[0].symbol must be a non-empty string, got ''",
    'side-missing': 'positions[0].side is missing',
    'side-true': 'positions[0].side must be 1 (long) or -1 (short), got True',
    'side-false': 'positions[0].side must be 1 (long) or -1 (short), got False',
    'side-float-long': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        'float 100.0'
    ),
    'side-float-short': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int -1, float 0.5, float "
        '40000.0, float 100.0'
    ),
    'side-numpy': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int -1, float 0.5, float "
        '40000.0, float 100.0'
    ),
    'side-2': 'positions[0].side must be 1 (long) or -1 (short), got 2',
    'side-0': 'positions[0].side must be 1 (long) or -1 (short), got 0',
    'side-1.5': 'positions[0].side must be 1 (long) or -1 (short), got 1.5',
    'side-text': "positions[0].side must be 1 (long) or -1 (short), got '1'",
    'side-nan': 'positions[0].side must be 1 (long) or -1 (short), got nan',
    'side-huge': f'positions[0].side must be 1 (long) or -1 (short), got {HUGE}',
    'side-bad-and-qty-bad': 'positions[0].side must be 1 (long) or -1 (short), got 3',
    'qty-missing': 'positions[0].qty is missing',
    'qty-none': 'positions[0].qty is missing',
    'qty-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 2.0, float 40000.0, "
        'float 100.0'
    ),
    'qty-numpy': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 2.0, float 40000.0, "
        'float 100.0'
    ),
    'qty-zero': 'positions[0].qty must be > 0, got 0.0',
    'qty-zero-int': 'positions[0].qty must be > 0, got 0',
    'qty-minus-zero': 'positions[0].qty must be > 0, got -0.0',
    'qty-negative': 'positions[0].qty must be > 0, got -1.0',
    'qty-negative-int': 'positions[0].qty must be > 0, got -1',
    'qty-nan': 'positions[0].qty must be finite, got nan',
    'qty-inf': 'positions[0].qty must be finite, got inf',
    'qty-minus-inf': 'positions[0].qty must be finite, got -inf',
    'qty-numpy-nan': 'positions[0].qty must be finite, got np.float64(nan)',
    'qty-text': "positions[0].qty must be a JSON number, got '1'",
    'qty-bool': 'positions[0].qty must be a JSON number, got True',
    'qty-list': 'positions[0].qty must be a JSON number, got [1.0]',
    'qty-huge': 'positions[0].qty must be finite, got an integer too large for a float',
    'qty-tiny': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 5e-324, float "
        '40000.0, float 100.0'
    ),
    'qty-bad-and-entry-bad': "positions[0].qty must be a JSON number, got 'x'",
    'entry-missing': 'positions[0].entry_price is missing',
    'entry-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        'float 100.0'
    ),
    'entry-zero': 'positions[0].entry_price must be > 0, got 0.0',
    'entry-nan': 'positions[0].entry_price must be finite, got nan',
    'entry-text': "positions[0].entry_price must be a JSON number, got '40000'",
    'entry-bool': 'positions[0].entry_price must be a JSON number, got False',
    'entry-huge': 'positions[0].entry_price must be finite, got an integer too large for a float',
    'second-position-qty-bad': 'positions[1].qty must be > 0, got -2.0',
    'own-collateral-missing': (
        'positions[0].collateral is missing (isolated margin: each position carries its own)'
    ),
    'own-collateral-none': (
        'positions[0].collateral is missing (isolated margin: each position carries its own)'
    ),
    'own-collateral-second-missing': (
        'positions[1].collateral is missing (isolated margin: each position carries its own)'
    ),
    'own-collateral-negative': 'positions[0].collateral must be >= 0, got -1.0',
    'own-collateral-zero': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 0.0'
    ),
    'own-collateral-minus-zero': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float -0.0'
    ),
    'own-collateral-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 5.0'
    ),
    'own-collateral-nan': 'positions[0].collateral must be finite, got nan',
    'own-collateral-inf': 'positions[0].collateral must be finite, got inf',
    'own-collateral-text': "positions[0].collateral must be a JSON number, got '5'",
    'own-collateral-bool': 'positions[0].collateral must be a JSON number, got True',
    'own-collateral-numpy': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 5.0'
    ),
    'own-collateral-huge': 'positions[0].collateral must be finite, got an integer too large for a float',
    'own-collateral-bad-and-entry-bad': 'positions[0].entry_price must be > 0, got 0',
    'cross-position-collateral-ignored': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        'float 100.0'
    ),
    'parquet-plain-cross': (
        "ok 2024-01-02T03:00:00+00:00 (us) cross: str 'BTCUSDT', int 1, float 0.5, float 40000.0, "
        'float 100.0'
    ),
    'parquet-qty-nan': 'qty must be finite, got nan',
    'parquet-side-text': "side must be 1 (long) or -1 (short), got '1'",
    'parquet-symbol-none': 'symbol is missing',
    'parquet-collateral-text': "collateral must be a number, got 'x'",
    'parquet-own-collateral': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 2.0'
    ),
    'parquet-own-collateral-missing': (
        'position_collateral is missing (isolated margin: each position carries its own)'
    ),
    'parquet-own-collateral-negative': 'position_collateral must be >= 0, got -2.0',
    'parquet-own-collateral-int': (
        "ok 2024-01-02T03:00:00+00:00 (us) isolated: str 'BTCUSDT', int 1, float 0.5, float "
        '40000.0, float 2.0'
    ),
}


def _params(cases, dialect):
    return [pytest.param(raw, dialect, EXPECTED[name], id=name) for name, raw in cases.items()]


ALL = [*_params(CASES, JSON), *_params(PARQUET_CASES, _PARQUET)]


def test_every_case_has_a_recorded_outcome():
    assert set(EXPECTED) == set(CASES) | set(PARQUET_CASES)


@pytest.mark.parametrize(("raw", "dialect", "expected"), ALL)
def test_account_fields_accepts_and_refuses_as_before(raw, dialect, expected):
    assert outcome(account_fields, raw, dialect) == expected


@pytest.mark.parametrize(("raw", "expected"), [p.values[::2] for p in ALL if p.values[1] is JSON])
def test_builder_rows_and_errors_are_account_fields(raw, expected):
    parsed = accounts_from_dicts([{"account_id": "before"} | cross(), raw])
    assert parsed.errors[0] == ""
    if not expected.startswith("ok "):
        assert parsed.errors[1] == expected and all(row[0] == 0 for row in parsed._rows)
        return
    fields = account_fields(raw)
    head = (1, fields["as_of"], fields["margin_mode"])
    expected_rows = [
        (*head, p["collateral"], p["symbol"], p["side"], p["qty"], p["entry_price"])
        for p in fields["positions"]
    ]
    rows = [row for row in parsed._rows if row[0] == 1]
    assert rows == expected_rows
    assert [list(map(type, row)) for row in rows] == [list(map(type, row)) for row in expected_rows]
    assert parsed.errors[1] == "" and parsed.as_of[1] == fields["as_of"]
