"""The bootstrap from per-cluster sums against a straightforward row-weight reference.

The reference repeats each row as often as its speaker was drawn and computes the metric on the
repeated rows with scipy / scikit-learn / ``ambiemo.scoring.metrics``; the new path never builds
those rows. Chunking the resamples must not move a number."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score, recall_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import synthetic as S  # noqa: E402

from ambiemo.scoring import metrics as M  # noqa: E402
from ambiemo.scoring.scores import score_predictions  # noqa: E402
from ambiemo.stats import bootstrap as B  # noqa: E402
from ambiemo.stats import permutation as P  # noqa: E402
from ambiemo.stats.cluster_sums import cluster_statistics, metrics_from_sums  # noqa: E402


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    man = S.manifest_df(n=90, n_speakers=9, seed=4)
    man.loc[man.index % 11 == 0, "speaker"] = ""  # utterances of unknown speaker: their own cluster
    cells = S.cells(man, strategies=("baseline", "bon"), models=("small",), budgets={"bon": [2]})
    return score_predictions(man, [c.drop(columns="candidate_records") for c in cells], S.PARAMS)


def _repeat(frame: pd.DataFrame, weights: np.ndarray) -> pd.DataFrame:
    return frame.loc[frame.index.repeat(weights.astype(int))].reset_index(drop=True)


def test_every_metric_from_cluster_sums_equals_the_metric_on_the_resampled_rows(scores):
    part = scores[scores["strategy"] == "bon"].reset_index(drop=True)
    labels = list(S.LABELS)
    codes, _ = B.clusters(part)
    sums, lay, _ = cluster_statistics(part, codes, labels, 5)
    counts = B.cluster_counts(int(codes.max()) + 1, 6, np.random.default_rng(1))
    got = metrics_from_sums(counts @ sums, lay, (counts > 0) @ sums[:, lay.slices["r2"].start])
    for b in range(len(counts)):
        rows = _repeat(part, counts[b][codes])
        p = rows[[f"true_{x}" for x in labels]].to_numpy()
        q = rows[[f"p_{x}" for x in labels]].to_numpy()
        ok = rows["correct"].notna()
        yt, yp = rows.loc[ok, "majority_used"], rows.loc[ok, "pred_label"]
        assert got["js"][b] == pytest.approx(rows["js"].mean(), abs=1e-12)
        assert got["accuracy"][b] == pytest.approx(rows["correct"].mean(), abs=1e-12)
        assert got["r2"][b] == pytest.approx(sps.pearsonr(p.ravel(), q.ravel())[0] ** 2, abs=1e-10)
        ece = M.expected_calibration_error(rows["confidence"].to_numpy(), rows["correct"].to_numpy(), 5)
        assert got["ece"][b] == pytest.approx(ece, abs=1e-12)
        present = sorted(set(yt))
        assert got["uar"][b] == pytest.approx(recall_score(yt, yp, labels=present, average="macro"), abs=1e-12)
        f1 = f1_score(yt, yp, labels=present, average="weighted", zero_division=0)
        assert got["f1_weighted"][b] == pytest.approx(f1, abs=1e-12)
        # Spearman keeps the observed ranks: Pearson of those ranks on the resampled rows
        rp = sps.rankdata(M.entropy_for_ranking(part[[f"true_{x}" for x in labels]].to_numpy()))
        rq = sps.rankdata(M.entropy_for_ranking(part[[f"p_{x}" for x in labels]].to_numpy()))
        w = counts[b][codes]
        ref = sps.pearsonr(np.repeat(rp, w), np.repeat(rq, w))[0]
        assert got["entropy_spearman"][b] == pytest.approx(ref, abs=1e-10)


def test_point_estimates_are_the_metrics_of_the_rows(scores):
    part = scores[scores["strategy"] == "baseline"].reset_index(drop=True)
    labels = list(S.LABELS)
    codes, _ = B.clusters(part)
    sums, lay, n_q = cluster_statistics(part, codes, labels, 5)
    got = metrics_from_sums(sums.sum(axis=0), lay, np.array([n_q]))
    p = part[[f"true_{x}" for x in labels]].to_numpy()
    q = part[[f"p_{x}" for x in labels]].to_numpy()
    rho = sps.spearmanr(M.entropy_for_ranking(p), M.entropy_for_ranking(q))[0]
    assert got["entropy_spearman"][0] == pytest.approx(rho, abs=1e-12)
    assert got["bc"][0] == pytest.approx(part["bc"].mean(), abs=1e-12)


def test_bootstrap_ci_does_not_depend_on_how_the_resamples_are_chunked(scores, monkeypatch):
    whole = B.bootstrap_ci(scores, S.PARAMS, per_bin=True, n_resamples=60)
    monkeypatch.setattr(B, "_MAX_DRAWS", 7)  # a few resamples per chunk
    chunked = B.bootstrap_ci(scores, S.PARAMS, per_bin=True, n_resamples=60)
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, rtol=0, atol=1e-12)


def test_cluster_mean_bootstrap_equals_row_weights_without_them():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 25, 400)
    codes = pd.factorize(codes, sort=True)[0]
    d = rng.normal(size=400)
    w = B.resample_weights(codes, 300, np.random.default_rng(9))
    ref = w @ d / w.sum(axis=1)
    np.testing.assert_allclose(B.cluster_mean_bootstrap(d, codes, 300, np.random.default_rng(9)), ref, atol=1e-13)


def test_sign_flip_in_chunks_gives_the_same_p_values(monkeypatch):
    rng = np.random.default_rng(5)
    sums = rng.normal(0.1, 1.0, size=(4, 300))
    whole = P.sign_flip_pvalues(sums, 999, np.random.default_rng(2))[0]
    monkeypatch.setattr(P, "_MAX_SIGNS", 1000)  # three patterns per chunk
    chunked = P.sign_flip_pvalues(sums, 999, np.random.default_rng(2))[0]
    np.testing.assert_array_equal(whole, chunked)
    # and against a direct count over every pattern at once
    signs = np.random.default_rng(2).choice((1.0, -1.0), size=(999, 300))
    hits = (np.abs(sums @ signs.T) >= np.abs(sums.sum(axis=1))[:, None] * (1 - 1e-10)).sum(axis=1)
    np.testing.assert_allclose(whole, (1 + hits) / 1000)
