"""The conventions table: the same predictions under each definition the literature uses a name for.

Published numbers on distributional emotion recognition use different definitions under the same
names. The table (``results/summary/conventions.parquet``) has one row per cell × convention:

- ambiemo's own alternatives, each labelled by what it computes (none of them is a peer's code):
  ``js_distance_nat`` (sqrt of the JS divergence, natural log: ``scipy.spatial.distance.jensenshannon``),
  ``js_divergence_bits`` (the divergence in bits, no square root), ``r2_utterance_mean`` (squared
  Pearson correlation per utterance, averaged over the rows where it is defined; constant rows are
  counted in ``undefined``), ``r2_pooled`` (ambiemo's set-level ``r2``), ``r2_label_mean``
  (``sklearn.metrics.r2_score`` per label, averaged) and ``lewidi-2025/manhattan`` (LeWiDi 2025's
  soft-label metric ``Σ|p − q|``). They see the failed answers as params ``parsing.on_failure`` wrote
  them (a ``nan`` row is left out and counted in ``undefined``).
- the peers' presets, ``<preset>/<metric>`` (``aer-llm/js`` … ``scaling-ambiguity-ser/ece``), computed
  as ``ambiemo.scoring.presets`` documents, with ``source`` naming repository, commit and files. They
  apply the peer's own failure rule (AER-LLM: one-hot neutral; scaling-ambiguity-SER: dropped, counted
  in ``undefined``) whatever ambiemo's policy, and AER-LLM's two-decimal truth.

A preset equals the peer's printed number only for the peer's truth: for IEMOCAP that is the
manifest built with the ``aer-llm`` label set and ``votes: drop_votes`` (``docs/conventions.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ambiemo.scoring import metrics as M
from ambiemo.scoring.presets import PRESETS

LEWIDI_SOURCE = "LeWiDi 2025 shared task (Learning With Disagreements), soft-label evaluation"

COLUMNS = ("convention", "definition", "source", "value", "undefined", "n")


def js_divergence_bits(p, q) -> np.ndarray:
    """Jensen–Shannon divergence per utterance in bits (no square root), in [0, 1]."""
    return M.js_distance(p, q, base=2) ** 2


def r2_utterance_mean(p, q) -> tuple[float, int]:
    """The mean per-utterance squared correlation over the rows that have one, and how many have none."""
    per = M.r2_per_utterance(p, q)
    undefined = int(np.isnan(per).sum())
    return (float(np.nanmean(per)) if undefined < per.size else float("nan")), undefined


def r2_label_mean(p, q) -> float:
    """scikit-learn's coefficient of determination per label column, averaged over labels."""
    from sklearn.metrics import r2_score

    p, q = M.check_distributions(p, "p (human)"), M.check_distributions(q, "q (model)")
    if len(p) < 2:
        return float("nan")
    return float(r2_score(p, q, multioutput="uniform_average"))


# (name, definition, source): the source says whose definition it is, and names no peer's code
# unless the value equals that code's (the peers' own forms are the presets below).
CONVENTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "js_distance_nat",
        "sqrt(JSD), natural log, unrounded",
        "scipy.spatial.distance.jensenshannon (ambiemo's js); AER-LLM's rounded form is aer-llm/js",
    ),
    (
        "js_divergence_bits",
        "JSD, log base 2, no square root",
        "ambiemo; equals scaling-ambiguity-ser/js on the same rows (its failures are dropped there)",
    ),
    (
        "r2_utterance_mean",
        "mean over utterances of corr(p_i, q_i)^2; constant rows left out (undefined)",
        "ambiemo; AER-LLM's R scores constant rows 0 instead: aer-llm/r2",
    ),
    ("r2_pooled", "corr over all (utterance, label) cells, squared", "ambiemo's set-level r2"),
    (
        "r2_label_mean",
        "mean over labels of sklearn r2_score",
        "ambiemo; equals scaling-ambiguity-ser/r2 on the same rows",
    ),
    ("lewidi-2025/manhattan", "mean over utterances of sum_k |p_k - q_k|", LEWIDI_SOURCE),
)


def conventions_table(p, q) -> pd.DataFrame:
    """ambiemo's own conventions on (p, q): one row each, means over utterances where per utterance;
    ``undefined`` counts utterances the convention has no value for."""
    r2u, undefined = r2_utterance_mean(p, q)
    values = {
        "js_distance_nat": (float(M.js_distance(p, q, math.e).mean()), 0),
        "js_divergence_bits": (float(js_divergence_bits(p, q).mean()), 0),
        "r2_utterance_mean": (r2u, undefined),
        "r2_pooled": (M.r2(p, q), 0),
        "r2_label_mean": (r2_label_mean(p, q), 0),
        "lewidi-2025/manhattan": (float(M.manhattan_distance(p, q).mean()) if len(p) else float("nan"), 0),
    }
    return pd.DataFrame(
        [
            {"convention": name, "definition": d, "source": src, "value": values[name][0], "undefined": values[name][1]}
            for name, d, src in CONVENTIONS
        ]
    )


def preset_table(p, q, parsed_ok, labels: Sequence[str]) -> pd.DataFrame:
    """Every preset's metrics on one cell: ``convention`` = ``<preset>/<metric>``."""
    rows = []
    for name, (source, fn) in PRESETS.items():
        for metric, v in fn(p, q, parsed_ok, labels).items():
            rows.append(
                {
                    "convention": f"{name}/{metric}",
                    "definition": v.definition,
                    "source": source.cite(),
                    "value": v.value,
                    "undefined": v.excluded,
                    "n": v.n,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def cell_conventions(p, q, parsed_ok, labels: Sequence[str]) -> pd.DataFrame:
    """ambiemo's conventions on the rows with a distribution, then every preset on all rows."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    has = np.isfinite(q).all(axis=1)
    own = conventions_table(p[has], q[has])
    own["n"] = int(has.sum()) - own["undefined"]  # the rows each value averages over
    own["undefined"] = own["undefined"] + int((~has).sum())
    return pd.concat([own, preset_table(p, q, parsed_ok, labels)], ignore_index=True)[list(COLUMNS)]
