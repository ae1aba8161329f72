"""The per-rater vote matrices, built in one pass, against the straightforward per-utterance loop."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ambiemo.scoring import references as R

LABELS = ["neutral", "happy", "angry", "sad"]


def _ratings(n_utt: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in rng.permutation(n_utt):  # rows in no particular order
        for r in rng.choice(12, size=rng.integers(1, 7), replace=False):
            for _ in range(rng.integers(1, 3)):  # some raters give two labels
                label = rng.choice([*LABELS, None, "other"])
                rows.append(
                    {
                        "utt_id": f"u{u:03d}",
                        "rater": f"r{r}",
                        "label": label if label != "other" else None,
                        "weight": float(rng.choice([1.0, 0.5])),
                        "kind": "primary" if rng.random() > 0.1 else "secondary",
                        "self_eval": bool(rng.random() < 0.1),
                    }
                )
    return pd.DataFrame(rows)


def _reference(ratings: pd.DataFrame, labels, self_eval: bool = False):
    use = ratings[ratings["kind"] == "primary"]
    if not self_eval:
        use = use[~use["self_eval"].astype(bool)]
    index = {x: j for j, x in enumerate(labels)}
    out, without = {}, 0
    for utt, part in use.groupby("utt_id", sort=True):
        raters = sorted(part["rater"].astype(str).unique())
        mat = np.zeros((len(raters), len(labels)))
        for row in part.itertuples():
            if row.label in index:
                mat[raters.index(str(row.rater)), index[row.label]] += row.weight
        has = mat.sum(axis=1) > 0
        without += int((~has).sum())
        out[str(utt)] = mat[has]
    return out, without


def test_rater_votes_equal_the_per_utterance_loop():
    for seed in range(3):
        ratings = _ratings(seed=seed)
        for self_eval in (False, True):
            got, counts = R.rater_votes(ratings, LABELS, self_eval=self_eval)
            ref, without = _reference(ratings, LABELS, self_eval)
            assert list(got) == list(ref)
            for utt in ref:
                np.testing.assert_array_equal(got[utt], ref[utt])
            assert counts["raters_without_vote"] == without
            assert counts["dropped_ratings"] > 0
