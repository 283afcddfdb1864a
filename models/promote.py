"""The promotion gate: a candidate becomes ``champion`` only if it beats every baseline and the
current champion, measured on the same test rows.

Choices, stated once:

- **Two metrics, both must improve.** PR-AUC ranks rare events (higher is better); Brier
  scores the probability itself (lower is better). Strictly: a tie is no improvement, so
  re-registering an equally good model never moves the alias.
- **Rule baselines have no Brier.** A rule score is not a probability, so its Brier is NaN
  (``liqrisk.models.metrics``); against it only PR-AUC is compared, and the reason line says
  so. A competitor without PR-AUC cannot be beaten: the candidate is not promoted.
- **NaN in the candidate** (no positives in the test rows, a broken model) means nothing can
  be shown: not promoted, and the reason names the metric.
- **Same rows.** :func:`decide` trusts that all metric dicts come from the same test rows: the
  caller re-scores the current champion on them instead of reusing the numbers tagged on its
  version, which came from an older test period.
- **Decision apart from side effects.** :func:`decide` is pure and returns every reason;
  :func:`gate_and_register` writes to the registry and the run.
- **Every candidate is registered**, tagged ``promoted``, ``gate_reasons`` and its gate
  metrics, so the registry shows what was tried and why it was turned down; only the alias
  (not a stage: stages are deprecated in MLflow 3) moves.
- **Registration** is ``client.create_model_version(name, source=model_uri, run_id=...)`` with
  the ``models:/m-...`` URI that ``log_model`` returns; it waits (up to 300 s) until the version
  is READY and raises if registration fails. ``mlflow.register_model`` would also tag the
  logged model with its versions, but it ignores the client passed here (global registry URI).
- **Numbers in reasons** have 3 significant digits, more where 3 would print two different
  values alike.
"""

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ALREADY_EXISTS,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

GATE_METRICS: tuple[str, ...] = ("pr_auc", "brier")
HIGHER_IS_BETTER: dict[str, bool] = {"pr_auc": True, "brier": False}
# Metrics a competitor may lack (NaN): then that metric is not compared with it.
ONLY_FOR_PROBABILITIES: tuple[str, ...] = ("brier",)
NO_CHAMPION = "no current champion"
DECISION_FILE = "promotion/decision.json"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, one reason line per comparison.

    ``candidate`` and each entry of ``compared`` (baselines by name, then the champion by its
    label) hold the :data:`GATE_METRICS` as floats.
    """

    promote: bool
    reasons: tuple[str, ...]
    candidate: Mapping[str, float]
    compared: Mapping[str, Mapping[str, float]]

    def record(self) -> dict[str, Any]:
        """Plain dict for JSON (NaN becomes ``None``), as logged to the run."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "candidate": _json_metrics(self.candidate),
            "compared": {who: _json_metrics(m) for who, m in self.compared.items()},
        }


@dataclass(frozen=True)
class RegisteredOutcome:
    """What the gate did: the new version and the champion after the step."""

    name: str
    version: str
    promoted: bool
    champion_version: str | None


def decide(
    candidate: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    champion: Mapping[str, float] | None,
    *,
    champion_label: str = "champion",
) -> Decision:
    """Promote ``candidate`` only if it beats every baseline and the champion on both metrics.

    Parameters
    ----------
    candidate : mapping of str to float
        At least :data:`GATE_METRICS`; any NaN blocks promotion.
    baselines : mapping of name to metrics
        At least one. A NaN Brier (a rule score) limits that comparison to PR-AUC.
    champion : mapping of str to float, or None
        The current champion re-scored on the same rows; None when there is none yet.
    champion_label : str
        How reasons name the champion, e.g. ``"champion v3"``; must differ from baseline names.

    Returns
    -------
    Decision
        Reasons like ``"pr_auc 0.0412 > structural 0.0213: better"``.
    """
    cand = _gate_metrics(candidate, "candidate")
    if not baselines:
        raise ValueError("decide: no baselines; the gate needs at least one")
    compared = {who: _gate_metrics(m, who) for who, m in baselines.items()}
    if champion is not None:
        if champion_label in compared:
            raise ValueError(f"decide: champion_label {champion_label!r} is also a baseline name")
        compared[champion_label] = _gate_metrics(champion, champion_label)

    invalid = [f"candidate {m} is {v}: not promoted" for m, v in cand.items() if math.isnan(v)]
    if invalid:
        return Decision(False, tuple(invalid), cand, compared)
    verdicts = [v for who, other in compared.items() for v in _compare(cand, other, who)]
    if champion is None:
        verdicts.append((True, NO_CHAMPION))
    return Decision(
        promote=all(ok for ok, _ in verdicts),
        reasons=tuple(line for _, line in verdicts),
        candidate=cand,
        compared=compared,
    )


def gate_and_register(
    *,
    model_uri: str,
    run_id: str,
    name: str,
    decision: Decision,
    alias: str = "champion",
    client: MlflowClient | None = None,
) -> RegisteredOutcome:
    """Register ``model_uri`` as a new version of ``name``; move ``alias`` to it if promoted.

    The version is tagged ``promoted`` (``"true"``/``"false"``), ``gate_reasons`` (one reason
    a line) and the candidate's gate metrics. The run ``run_id`` gets :data:`DECISION_FILE`
    and the tags ``promotion.promoted`` and ``promotion.version``.

    Parameters
    ----------
    model_uri : str
        What ``log_model`` returned as ``info.model_uri`` (``models:/m-...``).
    run_id : str
        The run that trained and evaluated the candidate.
    name : str
        Registered model, created if missing.
    decision : Decision
        From :func:`decide`.
    alias : str
    client : MlflowClient, optional
        Defaults to one on the current tracking and registry URIs.

    Returns
    -------
    RegisteredOutcome
        ``champion_version`` is read back after the step (the old one when not promoted).
    """
    client = MlflowClient() if client is None else client
    _ensure_registered_model(client, name)
    created = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=_version_tags(decision)
    )
    version = str(created.version)  # the SQLite store returns an int
    if decision.promote:
        client.set_registered_model_alias(name, alias, version)
    logged = {"model": name, "version": version, "alias": alias, **decision.record()}
    client.log_dict(run_id, logged, DECISION_FILE)
    client.set_tag(run_id, "promotion.promoted", _flag(decision.promote))
    client.set_tag(run_id, "promotion.version", version)
    champion = current_champion(name, alias=alias, client=client)
    return RegisteredOutcome(
        name=name,
        version=version,
        promoted=decision.promote,
        champion_version=None if champion is None else str(champion.version),
    )


def current_champion(
    name: str, *, alias: str = "champion", client: MlflowClient | None = None
) -> ModelVersion | None:
    """The version ``alias`` points to, or None when the model or the alias does not exist."""
    client = MlflowClient() if client is None else client
    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None
    # Not get_model_version_by_alias: it reports a missing alias as INVALID_PARAMETER_VALUE,
    # the same code as a malformed request, so "no alias" is read from the model's alias map.
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def _gate_metrics(metrics: Mapping[str, float], who: str) -> dict[str, float]:
    missing = [m for m in GATE_METRICS if m not in metrics]
    if missing:
        raise ValueError(f"decide: {who} lacks gate metric(s) {missing}; needs {GATE_METRICS}")
    return {m: float(metrics[m]) for m in GATE_METRICS}


def _compare(
    cand: Mapping[str, float], other: Mapping[str, float], who: str
) -> Iterator[tuple[bool, str]]:
    for metric in GATE_METRICS:
        c, o = cand[metric], other[metric]
        if math.isnan(o) and metric in ONLY_FOR_PROBABILITIES:
            yield True, f"{metric} not compared with {who}: not a probability, PR-AUC only"
        elif math.isnan(o):
            yield False, f"{metric} {c:#.3g} vs {who} nan: cannot compare: not better"
        else:
            yield _verdict(metric, c, o, who)


def _verdict(metric: str, c: float, o: float, who: str) -> tuple[bool, str]:
    higher = HIGHER_IS_BETTER[metric]
    better = c > o if higher else c < o
    op = {(True, True): ">", (True, False): "<=", (False, True): "<", (False, False): ">="}
    sc, so = _distinct(c, o)
    outcome = "better" if better else "not better"
    return better, f"{metric} {sc} {op[higher, better]} {who} {so}: {outcome}"


def _distinct(a: float, b: float) -> tuple[str, str]:
    for digits in range(3, 18):
        sa, sb = f"{a:#.{digits}g}", f"{b:#.{digits}g}"
        if sa != sb or a == b:
            return sa, sb
    return repr(a), repr(b)


def _version_tags(decision: Decision) -> dict[str, str]:
    metrics = {m: repr(v) for m, v in decision.candidate.items()}
    return {
        "promoted": _flag(decision.promote),
        "gate_reasons": "\n".join(decision.reasons),
        **metrics,
    }


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        # Creating first and tolerating "exists" is safe when two trainers register at once.
        # (ALREADY_EXISTS is what Unity Catalog answers; mlflow.register_model accepts both.)
        if e.error_code not in (
            ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
            ErrorCode.Name(ALREADY_EXISTS),
        ):
            raise


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _json_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {m: None if math.isnan(v) else v for m, v in metrics.items()}
