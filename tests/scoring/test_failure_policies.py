"""params parsing.on_failure ``neutral`` (AER-LLM's rule) and ``drop`` (scaling-ambiguity-SER's rule) as
scoring sees them: what a failed answer contributes to the distributional and the hard-label metrics."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import LABELS, PARAMS, manifest_df, predictions_df

from ambiemo.core.failures import apply_failure_policy
from ambiemo.core.validation import validate_params
from ambiemo.scoring.scores import score_predictions


def _cell(policy: str):
    m = manifest_df(n=40, seed=3)
    pred = predictions_df(m, "small", "baseline", seed=4, fail_rate=0.3, on_failure="nan").drop(
        columns=["candidate_records"]
    )
    failed = ~pred["parsed_ok"].to_numpy()
    for i in np.flatnonzero(failed):  # what inference writes under the policy
        dist, _ = apply_failure_policy(None, len(LABELS), policy, LABELS)
        pred.loc[i, [f"p_{x}" for x in LABELS]] = dist
    scores = score_predictions(m, pred, {**PARAMS, "parsing": {"on_failure": policy}})
    return m.set_index("utt_id"), scores.set_index("utt_id"), pred.set_index("utt_id"), failed


def test_neutral_failures_predict_neutral_and_count_for_every_metric():
    m, s, pred, failed = _cell("neutral")
    ids = pred.index[failed]
    assert failed.sum() >= 5
    assert (s.loc[ids, "pred_label"] == "neutral").all()
    # correct exactly where the majority (a clear one) is neutral; js is the one-hot's distance.
    clear = ids[~m.loc[ids, "majority_tie"].to_numpy()]
    want = (m.loc[clear, "majority"] == "neutral").astype(float)
    np.testing.assert_array_equal(s.loc[clear, "correct"].to_numpy(), want.to_numpy())
    onehot = np.eye(4)[0]
    from scipy.spatial.distance import jensenshannon

    for u in ids:
        assert s.loc[u, "js"] == pytest.approx(
            jensenshannon(m.loc[u, [f"p_{x}" for x in LABELS]].to_numpy(float), onehot)
        )


def test_drop_leaves_failures_out_of_every_metric():
    _, s, pred, failed = _cell("drop")
    ids = pred.index[failed]
    assert s.loc[ids, ["js", "bc", "correct", "plausible"]].isna().all().all()
    assert s.loc[pred.index[~failed], ["js", "correct"]].notna().any().all()
    assert (~s["parsed_ok"]).sum() == failed.sum()  # counted, not lost


def test_params_accept_the_new_policies():
    for policy in ("neutral", "drop"):
        validate_params({"parsing": {"on_failure": policy}})
