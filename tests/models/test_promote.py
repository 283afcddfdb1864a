import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from liqrisk.models.promote import (
    DECISION_FILE,
    NO_CHAMPION,
    RegisteredOutcome,
    current_champion,
    decide,
    gate_and_register,
)
from liqrisk.models.tracking import configure_tracking

NAN = math.nan
# A rule score has no Brier (not a probability); the structural baseline is a probability.
BASELINES = {
    "margin_ratio": {"pr_auc": 0.0150, "brier": NAN},
    "structural": {"pr_auc": 0.0213, "brier": 0.00620},
}
CHAMPION = {"pr_auc": 0.0400, "brier": 0.00490}
NAME = "liqrisk-test"


def _m(pr_auc: float, brier: float) -> dict[str, float]:
    return {"pr_auc": pr_auc, "brier": brier}


# id: (candidate, champion, promote?, one expected reason); the champion is labelled "champion v3"
DECIDE_CASES = {
    "better-on-both": (
        _m(0.0412, 0.00480),
        CHAMPION,
        True,
        "pr_auc 0.0412 > structural 0.0213: better",
    ),
    "worse-pr-auc-than-a-baseline": (
        _m(0.0200, 0.00480),
        None,
        False,
        "pr_auc 0.0200 <= structural 0.0213: not better",
    ),
    "worse-brier-than-champion": (
        _m(0.0412, 0.00510),
        CHAMPION,
        False,
        "brier 0.00510 >= champion v3 0.00490: not better",
    ),
    "rule-baseline-on-pr-auc-only": (
        _m(0.0412, 0.00480),
        None,
        True,
        "brier not compared with margin_ratio: not a probability, PR-AUC only",
    ),
    "worse-than-the-rule": (
        _m(0.0100, 0.00480),
        None,
        False,
        "pr_auc 0.0100 <= margin_ratio 0.0150: not better",
    ),
    "nan-candidate": (_m(NAN, 0.00480), None, False, "candidate pr_auc is nan: not promoted"),
    "nan-candidate-brier": (_m(0.0412, NAN), None, False, "candidate brier is nan: not promoted"),
    "equal-pr-auc-is-not-better": (
        _m(0.0400, 0.00480),
        CHAMPION,
        False,
        "pr_auc 0.0400 <= champion v3 0.0400: not better",
    ),
    "no-champion": (_m(0.0412, 0.00480), None, True, NO_CHAMPION),
}


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"), DECIDE_CASES.values(), ids=DECIDE_CASES.keys()
)
def test_decide(candidate, champion, promote, reason):
    decision = decide(candidate, BASELINES, champion, champion_label="champion v3")

    assert decision.promote is promote
    assert reason in decision.reasons


def test_every_comparison_has_a_reason_naming_metric_and_competitor():
    decision = decide({"pr_auc": 0.0412, "brier": 0.00480}, BASELINES, CHAMPION)

    assert decision.reasons == (
        "pr_auc 0.0412 > margin_ratio 0.0150: better",
        "brier not compared with margin_ratio: not a probability, PR-AUC only",
        "pr_auc 0.0412 > structural 0.0213: better",
        "brier 0.00480 < structural 0.00620: better",
        "pr_auc 0.0412 > champion 0.0400: better",
        "brier 0.00480 < champion 0.00490: better",
    )
    assert set(decision.compared) == {"margin_ratio", "structural", "champion"}


def test_close_values_are_printed_apart():
    champion = {"pr_auc": 0.041237, "brier": 0.005}
    decision = decide({"pr_auc": 0.041234, "brier": 0.0048}, BASELINES, champion)

    assert "pr_auc 0.04123 <= champion 0.04124: not better" in decision.reasons


def test_record_is_plain_json():
    decision = decide({"pr_auc": 0.0412, "brier": 0.00480}, BASELINES, None)

    record = json.loads(json.dumps(decision.record(), allow_nan=False))

    assert record["promote"] is True
    assert record["compared"]["margin_ratio"] == {"pr_auc": 0.0150, "brier": None}
    assert record["reasons"] == list(decision.reasons)


def test_decide_names_a_competitor_without_gate_metrics():
    with pytest.raises(ValueError, match=r"structural lacks gate metric\(s\) \['brier'\]"):
        decide({"pr_auc": 0.04, "brier": 0.005}, {"structural": {"pr_auc": 0.02}}, None)


def _log_candidate(seed: int) -> tuple[str, str, LogisticRegression]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 2))
    model = LogisticRegression().fit(X, X[:, 0] + rng.normal(size=20) > 0)
    with mlflow.start_run() as run:
        # Explicit requirements: inferring them starts a subprocess (~7 s); cloudpickle: the
        # default skops format costs 2-6 s of imports the first time, and nothing here needs it.
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    return info.model_uri, run.info.run_id, model


def _gate(client: MlflowClient, seed: int, metrics: dict[str, float], scored: dict[str, dict]):
    """Log a candidate, judge it against the baselines and the champion, register it.

    ``scored`` maps version -> metrics, standing in for re-scoring the champion on the same rows.
    """
    model_uri, run_id, model = _log_candidate(seed)
    champion = current_champion(NAME, client=client)
    decision = decide(
        metrics,
        BASELINES,
        None if champion is None else scored[str(champion.version)],
        champion_label="champion" if champion is None else f"champion v{champion.version}",
    )
    outcome = gate_and_register(
        model_uri=model_uri, run_id=run_id, name=NAME, decision=decision, client=client
    )
    scored[outcome.version] = metrics
    return outcome, run_id, model


def test_gate_registers_every_candidate_and_moves_champion_only_when_better(
    mlflow_work_dir: Path,
):
    configure_tracking(mlflow_work_dir)
    client = MlflowClient()
    scored: dict[str, dict] = {}
    assert current_champion(NAME, client=client) is None

    first, _, _ = _gate(client, 1, {"pr_auc": 0.0412, "brier": 0.00480}, scored)
    assert first == RegisteredOutcome(NAME, "1", True, "1")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    second, run_2, _ = _gate(client, 2, {"pr_auc": 0.0200, "brier": 0.00450}, scored)
    why = "pr_auc 0.0200 <= structural 0.0213: not better"
    assert second == RegisteredOutcome(NAME, "2", False, "1")
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promoted"] == "false"
    assert why in tags["gate_reasons"].splitlines()
    assert (tags["pr_auc"], tags["brier"]) == ("0.02", "0.0045")
    logged = mlflow.artifacts.load_dict(f"runs:/{run_2}/{DECISION_FILE}")
    assert (logged["version"], logged["promote"]) == ("2", False)
    assert why in logged["reasons"]
    run_tags = client.get_run(run_2).data.tags
    assert (run_tags["promotion.promoted"], run_tags["promotion.version"]) == ("false", "2")
    assert str(current_champion(NAME, client=client).version) == "1"

    third, _, model_3 = _gate(client, 3, {"pr_auc": 0.0500, "brier": 0.00470}, scored)
    assert third == RegisteredOutcome(NAME, "3", True, "3")
    assert (
        "brier 0.00470 < champion v1 0.00480: better"
        in client.get_model_version(NAME, "3").tags["gate_reasons"].splitlines()
    )
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    loaded = mlflow.sklearn.load_model(f"models:/{NAME}@champion")
    np.testing.assert_array_equal(loaded.coef_, model_3.coef_)


def test_a_first_candidate_that_fails_leaves_no_champion(mlflow_work_dir: Path):
    configure_tracking(mlflow_work_dir)
    model_uri, run_id, _ = _log_candidate(0)
    decision = decide({"pr_auc": 0.0100, "brier": 0.00480}, BASELINES, None)

    outcome = gate_and_register(model_uri=model_uri, run_id=run_id, name=NAME, decision=decision)

    assert outcome == RegisteredOutcome(NAME, "1", False, None)
    assert current_champion(NAME) is None  # the model exists, the alias does not
