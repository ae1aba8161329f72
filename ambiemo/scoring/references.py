"""Reference predictors: the yardsticks every model's number is read against.

A model's score means little alone: the uniform distribution is nearer to a split vote than to a
unanimous one, so any model that answers close to uniform "improves" with ambiguity for free.
These references are computed from the manifest (and the per-rater ratings table where a corpus
has one) alone, never from a model, and come in the same form as a model's output. The score
stage (``ambiemo.scoring.score_run``) scores the distribution references with
``score_predictions`` and turns the ceilings into score rows (``ambiemo.scoring.run.ceiling_scores``:
the manifest's speaker, entropy and bin, NaN in every metric but ``CEILING_METRICS``), so that
they get the same CIs and per-bin breakdown as a model.

Distribution references, one predictions-table row per utterance (``model = "reference"``,
``strategy`` = the name below, ``budget = 1``, ``p_<L>`` the distribution, no calls, no tokens):

- **uniform**: ``1/L`` for each of the ``L`` labels.
- **label-prior**: the dataset's mean soft label (mean over utterances of ``p_<L>``), computed
  leaving the utterance's own speaker out, so that no vote of that speaker's utterances reaches
  the prediction. An utterance with no speaker id ("") is its own cluster (leave that utterance
  out). A dataset with a single speaker has no leave-one-speaker-out prior: ``ValueError``.
- **hard-oracle**: the one-hot majority of the human votes, the best any single-label
  classifier can do: the price of hard labels. On a tied top vote the oracle names the *first*
  tied label in label-set order. Every distributional metric of ``ambiemo.scoring.metrics`` (JS, BC, TV,
  Brier, KL) of a one-hot ``e_k`` against ``p`` depends on ``p_k`` only, so any tied label gives
  the same distributional score; for the hard-label metrics the scoring tie policy
  (``scoring.tie_policy``) decides as for a model: ``exclude`` leaves tied utterances out,
  ``any`` and ``first`` count the oracle right.

The **human ceiling** is how far one annotator is from the others, per utterance (a score
table, not a distribution: ``utt_id``, ``reference``, ``n_raters`` and one column per metric):

- **human-loo** (from the ratings table, interface: ``ambiemo.data.ratings``): for each rater ``r``
  of an utterance, the metric of ``r``'s vote (their ``weight`` per ``label``, normalised) as
  the prediction against the normalised sum of the other raters' votes as the human
  distribution; the utterance's score is the mean over its raters. Needs at least 2 raters.
- **human-split-half**: where an utterance has at least ``min_split_raters`` raters (4 by
  default), its raters are split at random into two halves of sizes ``floor(n/2)`` and
  ``ceil(n/2)``; the metric of one half's pooled vote distribution against the other's, averaged
  over ``n_splits`` random splits (seeded per utterance from ``seed`` and the utterance id, so
  the value does not depend on row order or on which other utterances are present).
- **human-loo-counts** (where only vote counts exist): the expected leave-one-rater-out score
  under the count distribution, ``Σ_k (c_k/n) · metric(e_k, (c − e_k)/(n − 1))``: a rater drawn
  in proportion to the votes names label ``k`` and is compared with the remaining votes. It
  equals human-loo exactly when every rater gave one whole vote; utterances with fractional
  counts (multi-label raters) have no such reading and are excluded and counted.

Ratings rows used: ``kind == "primary"`` and (unless ``self_eval=True``) not self-evaluations;
rows whose ``label`` is null (a category outside the label set) carry no mass and are counted in
``attrs["dropped_ratings"]``; a rater left with no mass is counted in ``attrs["raters_without_vote"]``.
Every excluded utterance is counted by reason in ``attrs["excluded"]``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ambiemo.inference.predictions import prediction_columns
from ambiemo.scoring import metrics as M

MODEL = "reference"
DISTRIBUTION_REFERENCES = ("uniform", "label-prior", "hard-oracle")
CEILING_REFERENCES = ("human-loo", "human-split-half", "human-loo-counts")
CEILING_METRICS = ("js", "bc", "tv", "brier")
MIN_SPLIT_RATERS = 4  # fewer raters make halves of one vote each: that is LOO, not split-half
N_SPLITS = 20
_WHOLE_VOTE_ATOL = 1e-9


def _soft_labels(manifest: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    cols = [f"p_{x}" for x in labels]
    missing = [c for c in cols if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest: missing column(s) {missing} for label set {list(labels)}")
    return M.check_distributions(manifest[cols].to_numpy(dtype=float), "manifest p_*")


def uniform(manifest: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """``1/L`` for every utterance."""
    return np.full((len(manifest), len(labels)), 1.0 / len(labels))


def label_prior(manifest: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The mean soft label over the utterances of every other speaker (leave-one-speaker-out)."""
    p = _soft_labels(manifest, labels)
    speaker = manifest["speaker"].astype(str).to_numpy()
    # An utterance without a speaker id is its own cluster.
    cluster = np.where(speaker == "", "\0utt:" + manifest["utt_id"].astype(str).to_numpy(), speaker)
    codes, uniques = pd.factorize(cluster)
    if len(uniques) < 2:
        ds = manifest["dataset"].iloc[0] if "dataset" in manifest and len(manifest) else "?"
        raise ValueError(f"dataset {ds}: one speaker only, so there is no leave-one-speaker-out label prior")
    sums = np.zeros((len(uniques), len(labels)))
    np.add.at(sums, codes, p)
    counts = np.bincount(codes, minlength=len(uniques)).astype(float)
    rest = (p.sum(axis=0) - sums[codes]) / (len(p) - counts[codes])[:, None]
    return rest / rest.sum(axis=1, keepdims=True)


def hard_oracle(manifest: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """One-hot majority vote; a tie names the first tied label in label-set order."""
    p = _soft_labels(manifest, labels)
    top = M.majority_label(p, "first")
    return np.eye(len(labels))[top]


_BUILDERS: dict[str, Callable[[pd.DataFrame, Sequence[str]], np.ndarray]] = {
    "uniform": uniform,
    "label-prior": label_prior,
    "hard-oracle": hard_oracle,
}


def reference_predictions(
    manifest: pd.DataFrame, labels: Sequence[str], references: Sequence[str] = DISTRIBUTION_REFERENCES
) -> pd.DataFrame:
    """The distribution references as a predictions table (``ambiemo.inference.predictions`` columns)."""
    unknown = [r for r in references if r not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown reference predictor(s) {unknown}; choose from {list(_BUILDERS)}")
    frames = []
    for name in references:
        q = _BUILDERS[name](manifest, labels)
        frame = pd.DataFrame(
            {
                "utt_id": manifest["utt_id"].astype(str).to_numpy(),
                "dataset": manifest["dataset"].astype(str).to_numpy(),
                "model": MODEL,
                "strategy": name,
                "budget": 1,
            }
        )
        for j, label in enumerate(labels):
            frame[f"p_{label}"] = q[:, j]
        frame["pred_label"] = np.asarray(labels, dtype=object)[q.argmax(axis=1)]
        frame["parsed_ok"] = True
        frame[["n_candidates", "model_calls", "verifier_calls", "prompt_tokens", "gen_tokens"]] = 0
        frame["wall_s"] = 0.0
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    columns = prediction_columns(labels)
    # No calls, so no verifier tokens or time.
    for c in ("verifier_prompt_tokens", "verifier_gen_tokens"):
        if c in columns:
            out[c] = 0
    if "verifier_wall_s" in columns:
        out["verifier_wall_s"] = 0.0
    return out[columns]


# --- the human ceiling ----------------------------------------------------------------------


def _metric_rows(p: np.ndarray, q: np.ndarray, js_base: float | str) -> dict[str, np.ndarray]:
    """Each ceiling metric of prediction rows ``q`` against human rows ``p``."""
    return {
        "js": M.js_distance(p, q, js_base),
        "bc": M.bhattacharyya_coefficient(p, q),
        "tv": M.total_variation(p, q),
        "brier": M.brier(p, q),
    }


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / v.sum(axis=-1, keepdims=True)


def _ceiling_frame(rows: list[dict], reference: str, excluded: Mapping[str, int], **attrs) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["utt_id", "reference", "n_raters", *CEILING_METRICS])
    out["reference"] = reference
    out.attrs["reference"] = reference  # named even when no utterance qualifies
    out.attrs["excluded"] = {k: int(v) for k, v in excluded.items() if v}
    out.attrs.update(attrs)
    return out


def rater_votes(
    ratings: pd.DataFrame, labels: Sequence[str], *, self_eval: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per utterance, a (raters, labels) matrix of vote mass (raters sorted by id), and counts of
    what was left out (``dropped_ratings``: null label; ``raters_without_vote``)."""
    need = {"utt_id", "rater", "label", "weight", "kind", "self_eval"}
    missing = sorted(need - set(ratings.columns))
    if missing:
        raise ValueError(f"ratings table: missing column(s) {missing}")
    use = ratings[ratings["kind"] == "primary"]
    if not self_eval:
        use = use[~use["self_eval"].astype(bool)]
    known = use["label"].isin(list(labels))
    counts = {"dropped_ratings": int((~known).sum()), "raters_without_vote": 0}
    # One pass over the table (a loop over utterances in pandas cost ~1 ms each): every (utterance,
    # rater) pair in sorted order, its vote mass per label summed in row order, then one slice each.
    utt, rater = use["utt_id"].to_numpy(), use["rater"].astype(str).to_numpy()
    pairs = pd.DataFrame({"utt_id": utt, "rater": rater}).drop_duplicates()
    pairs = pairs.sort_values(["utt_id", "rater"], kind="stable").reset_index(drop=True)
    at = pd.MultiIndex.from_frame(pairs)
    ok = known.to_numpy()
    where = at.get_indexer(pd.MultiIndex.from_arrays([utt[ok], rater[ok]]))
    mass = np.zeros((len(pairs), len(labels)))
    column = pd.Index(list(labels)).get_indexer(use["label"][ok])
    np.add.at(mass, (where, column), use["weight"].to_numpy(dtype=float)[ok])
    has = mass.sum(axis=1) > 0
    counts["raters_without_vote"] = int((~has).sum())
    keys = pairs["utt_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.array([], dtype=int)
    ends = np.r_[starts[1:], len(keys)]
    out: dict[str, np.ndarray] = {}
    for a, b in zip(starts, ends, strict=True):
        out[str(keys[a])] = mass[a:b][has[a:b]]
    return out, counts


def human_loo(
    ratings: pd.DataFrame, labels: Sequence[str], *, js_base: float | str = M.JS_BASE, self_eval: bool = False
) -> pd.DataFrame:
    """Leave-one-rater-out ceiling per utterance, from the per-rater ratings table."""
    votes, counts = rater_votes(ratings, labels, self_eval=self_eval)
    rows, excluded = [], {"fewer_than_2_raters": 0}
    for utt, mat in votes.items():
        n = len(mat)
        if n < 2:
            excluded["fewer_than_2_raters"] += 1
            continue
        rest = mat.sum(axis=0, keepdims=True) - mat
        scores = _metric_rows(_normalise(rest), _normalise(mat), js_base)
        rows.append({"utt_id": utt, "n_raters": n, **{k: float(v.mean()) for k, v in scores.items()}})
    return _ceiling_frame(rows, "human-loo", excluded, **counts)


def _utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(utt_id.encode())])


def human_split_half(
    ratings: pd.DataFrame,
    labels: Sequence[str],
    *,
    js_base: float | str = M.JS_BASE,
    min_raters: int = MIN_SPLIT_RATERS,
    n_splits: int = N_SPLITS,
    seed: int = 0,
    self_eval: bool = False,
) -> pd.DataFrame:
    """Split-half ceiling per utterance with at least ``min_raters`` raters (see the module doc)."""
    if min_raters < 2 or n_splits < 1:
        raise ValueError(f"split-half needs min_raters >= 2 and n_splits >= 1 (got {min_raters}, {n_splits})")
    votes, counts = rater_votes(ratings, labels, self_eval=self_eval)
    rows, excluded = [], {f"fewer_than_{min_raters}_raters": 0}
    for utt, mat in votes.items():
        n = len(mat)
        if n < min_raters:
            excluded[f"fewer_than_{min_raters}_raters"] += 1
            continue
        rng = _utterance_rng(seed, utt)
        perms = np.argsort(rng.random((n_splits, n)), axis=1)
        half = n // 2
        a = _normalise(mat[perms[:, :half]].sum(axis=1))
        b = _normalise(mat[perms[:, half:]].sum(axis=1))
        scores = _metric_rows(b, a, js_base)
        rows.append({"utt_id": utt, "n_raters": n, **{k: float(v.mean()) for k, v in scores.items()}})
    return _ceiling_frame(rows, "human-split-half", excluded, n_splits=n_splits, seed=seed, **counts)


def human_loo_counts(
    manifest: pd.DataFrame, labels: Sequence[str], *, js_base: float | str = M.JS_BASE
) -> pd.DataFrame:
    """Expected leave-one-rater-out ceiling from vote counts (``votes_<L>``), see the module doc."""
    cols = [f"votes_{x}" for x in labels]
    missing = [c for c in cols if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest: missing column(s) {missing} for label set {list(labels)}")
    counts = manifest[cols].to_numpy(dtype=float)
    n = counts.sum(axis=1)
    whole = np.isclose(counts, np.round(counts), rtol=0, atol=_WHOLE_VOTE_ATOL).all(axis=1)
    enough = n >= 2 - _WHOLE_VOTE_ATOL
    keep = whole & enough
    # Every kept utterance × label at once: the rest of the votes when one vote for that label is left
    # out, scored against that vote. A label nobody chose leaves the whole count (a distribution all the
    # same) and weighs nothing; a voted label weighs its share of the votes.
    c = np.round(counts[keep])
    m, L = c.shape
    eye = np.eye(L)
    rest = _normalise(c[:, None, :] - eye[None, :, :] * (c > 0)[:, :, None]).reshape(m * L, L)
    scores = _metric_rows(rest, np.broadcast_to(eye, (m, L, L)).reshape(m * L, L), js_base)
    share = c / c.sum(axis=1, keepdims=True)
    out = pd.DataFrame(
        {
            "utt_id": manifest["utt_id"].to_numpy()[keep].astype(str),
            "n_raters": c.sum(axis=1).astype(int),
            **{k: np.einsum("ij,ij->i", share, v.reshape(m, L)) for k, v in scores.items()},
        }
    )
    excluded = {"fractional_votes": int((~whole).sum()), "fewer_than_2_votes": int((whole & ~enough).sum())}
    return _ceiling_frame(out, "human-loo-counts", excluded)
