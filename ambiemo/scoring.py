"""Scores: predictions joined with the ground truth, one row per utterance × cell.

``score_predictions`` turns prediction tables (``ambiemo.predictions``) and a manifest
(``ambiemo.manifest``) into the **scores** table, long format, one row per
dataset × model × strategy × budget × utterance:

    dataset, model, strategy, budget, utt_id      the keys
    speaker, n_raters, entropy_bits, ambiguity,   from the manifest; ``ambiguity_rank`` orders
      ambiguity_rank, majority, majority_tie        the bins (0 = least ambiguous)
    params_b, log10_params                        model capacity (params ``models.<key>.params_b``)
    parsed_ok, n_candidates, model_calls,         from the predictions (compute per utterance)
      verifier_calls, prompt_tokens, gen_tokens, wall_s
    pred_label                                    the predicted label; "" for a parse failure
    majority_used                                 the true label under the tie policy; "" if excluded
    js, bc, kl, tv, brier, r2_utt                 distributional metrics (``ambiemo.metrics``)
    pred_entropy_bits, confidence                 of the model's distribution / predicted label
    correct                                       1/0 against ``majority_used``; NaN if excluded
    plausible                                     1/0: the predicted label got at least one vote
    oracle_js, oracle_bc, oracle_correct,         the best stored candidate by JS (see below)
      oracle_n_parsed, pass_at_n
    true_<L>, p_<L>                               human and model distributions, per label L

A parse failure (``parsed_ok`` False) keeps the fallback distribution the predictions carry
(params ``parsing.on_failure``) for the distributional metrics, but has no predicted label, so
it counts as wrong for the hard-label ones; ``summarise`` reports the failure rate beside every
number.

**Oracle readout.** Each prediction row stores its candidates (JSON) with their parsed
distributions. ``oracle_js`` is the JS distance of the candidate closest to the human
distribution, a ceiling no selection rule that cannot see the labels reaches; ``oracle_bc`` and
``oracle_correct`` describe that same candidate, ``pass_at_n`` says whether any candidate's top
label is the majority label, and ``oracle_n_parsed`` how many candidates parsed.

``summarise`` reduces scores to one row per dataset × model × strategy × budget (× ambiguity
bin, with ``ambiguity == "all"`` for the whole set): every metric of ``ambiemo.metrics.METRICS``,
the parse-failure rate, the counts behind the hard-label metrics, the oracle and the compute
spent per utterance.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo import metrics as M

KEYS = ("dataset", "model", "strategy", "budget")
ALL = "all"  # the ambiguity value of a summary row over every bin

# scoring defaults, stated once; params.yaml `scoring` overrides them.
SCORING_DEFAULTS: dict[str, Any] = {
    "js_base": "e",
    "kl_epsilon": M.KL_EPSILON,
    "ece_bins": M.ECE_BINS,
    "tie_policy": M.TIE_POLICY,
    "ambiguity_from": "manifest",  # manifest: its `ambiguity` bins; entropy: one bin per distinct entropy
    "bootstrap_resamples": 1000,
    "ci_level": 0.95,
}

PREDICTION_REQUIRED = (
    "utt_id",
    "dataset",
    "model",
    "strategy",
    "budget",
    "parsed_ok",
    "n_candidates",
    "model_calls",
    "verifier_calls",
    "prompt_tokens",
    "gen_tokens",
    "wall_s",
)
COMPUTE_COLUMNS = ("model_calls", "verifier_calls", "prompt_tokens", "gen_tokens", "wall_s")
_MANIFEST_COLUMNS = (
    "utt_id",
    "dataset",
    "speaker",
    "n_raters",
    "majority",
    "majority_tie",
    "entropy_bits",
    "ambiguity",
)


class ScoringError(ValueError):
    """Predictions and a manifest that cannot be scored together."""


def scoring_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``scoring`` over the defaults, checked."""
    out = {**SCORING_DEFAULTS, **dict((params or {}).get("scoring") or {})}
    M.log_base(out["js_base"])
    if out["tie_policy"] not in M.TIE_POLICIES:
        raise ValueError(f"params scoring.tie_policy is {out['tie_policy']!r}; use one of {M.TIE_POLICIES}")
    if out["ambiguity_from"] not in ("manifest", "entropy"):
        raise ValueError(f"params scoring.ambiguity_from is {out['ambiguity_from']!r}; use 'manifest' or 'entropy'")
    return out


def labels_of(df: pd.DataFrame, prefix: str = "p_") -> list[str]:
    """Label names from a table's ``<prefix><label>`` columns, in column order."""
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


# --------------------------------------------------------------------------- scoring


def score_predictions(manifest: Any, predictions: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per-utterance scores of ``predictions`` against ``manifest`` (see the module docstring).

    ``manifest`` is an ``ambiemo.manifest.Manifest`` or a DataFrame with the manifest's columns;
    ``predictions`` one prediction table or a list of them (for example one per cell), each an
    ``ambiemo.predictions.Predictions`` or a DataFrame. ``params`` is the
    whole params mapping: its ``scoring`` section and ``models.<key>.params_b`` are used.
    Utterances of the manifest that a cell has no prediction for are counted in
    ``scores.attrs["missing"]``; predictions for utterances the manifest lacks are an error.
    """
    sp = scoring_params(params)
    mdf, labels, order = _manifest_frame(manifest)
    preds = _prediction_frame(predictions)
    _check_predictions(preds, labels)

    unknown = ~preds["utt_id"].isin(mdf["utt_id"])
    if unknown.any():
        ids = preds.loc[unknown, "utt_id"].astype(str).unique().tolist()
        raise ScoringError(
            f"{len(ids)} predicted utterance(s) are not in the manifest: {ids[:5]}"
            f"{' ...' if len(ids) > 5 else ''}; were the predictions made from another manifest?"
        )
    datasets = set(mdf["dataset"].astype(str))
    other = sorted(set(preds["dataset"].astype(str)) - datasets)
    if other:
        raise ScoringError(f"predictions name dataset(s) {other} but the manifest holds {sorted(datasets)}")

    df = preds.drop(columns=["dataset"]).merge(mdf, on="utt_id", how="left", validate="many_to_one")
    p_true = df[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    # params parsing.on_failure "nan" leaves a failed row without a distribution: it has no
    # distributional scores (NaN, left out of the means) but still counts as wrong.
    has_q = np.isfinite(q).all(axis=1)
    parsed = df["parsed_ok"].astype(bool).to_numpy()
    if (parsed & ~has_q).any():
        row = int(np.argmax(parsed & ~has_q))
        raise ScoringError(f"utterance {df.loc[row, 'utt_id']!r} in cell {_cell(df, row)} parsed but has NaN in p_*")
    for name, arr, rows in (("predictions", q, np.flatnonzero(has_q)), ("manifest", p_true, np.arange(len(df)))):
        try:
            M.check_distributions(arr[rows], name)
        except M.DistributionError as err:  # name the utterance and cell, not a row number
            row = rows[err.row]
            raise ScoringError(
                f"{name}: utterance {df.loc[row, 'utt_id']!r} in cell {_cell(df, row)} {err.reason}"
            ) from None

    y_pred = _predicted_index(df, labels)
    y_true = M.majority_label(p_true, sp["tie_policy"], y_pred)
    base = sp["js_base"]
    names = np.asarray([*labels, ""], dtype=object)  # index -1 -> ""

    def per_row(f, *args, **kwargs) -> np.ndarray:
        values = np.full(len(df), np.nan)
        values[has_q] = f(p_true[has_q], q[has_q], *args, **kwargs)
        return values

    out = df[[*KEYS, "utt_id"]].copy()
    out["speaker"] = df["speaker"].fillna("").astype(str)
    for c in ("n_raters", "entropy_bits", "majority", "majority_tie"):
        out[c] = df[c].to_numpy()
    out["ambiguity"], out["ambiguity_rank"] = _ambiguity(df, order, sp["ambiguity_from"])
    out["params_b"] = _capacity(df["model"], params)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["log10_params"] = np.log10(out["params_b"].to_numpy(dtype=float))
    out["parsed_ok"] = parsed
    out["n_candidates"] = df["n_candidates"].to_numpy()
    for c in COMPUTE_COLUMNS:
        out[c] = df[c].astype(float).to_numpy()
    out["pred_label"] = names[y_pred].astype(str)
    out["majority_used"] = names[y_true].astype(str)
    out["js"] = per_row(M.js_distance, base=base)
    out["bc"] = per_row(M.bhattacharyya_coefficient)
    out["kl"] = per_row(M.kl_divergence, eps=float(sp["kl_epsilon"]))
    out["tv"] = per_row(M.total_variation)
    out["brier"] = per_row(M.brier)
    out["r2_utt"] = per_row(M.r2_per_utterance)
    out["pred_entropy_bits"] = per_row(lambda _p, qq: M.entropy_bits(qq))
    out["confidence"] = per_row(lambda _p, qq: M.confidence(qq, y_pred[has_q]))
    out["correct"] = M.correct(y_true, y_pred)
    out["plausible"] = M.plausible(p_true, y_pred).astype(float)
    oracle = _oracle(df, labels, p_true, y_true, base)
    for c in oracle:
        out[c] = oracle[c]
    for j, x in enumerate(labels):
        out[f"true_{x}"] = p_true[:, j]
    for j, x in enumerate(labels):
        out[f"p_{x}"] = q[:, j]

    out = out.sort_values([*KEYS, "utt_id"], kind="stable").reset_index(drop=True)
    out.attrs["labels"] = list(labels)
    out.attrs["ambiguity_order"] = levels(out)
    out.attrs["missing"] = _missing(preds, mdf)
    out.attrs["scoring"] = {k: sp[k] for k in ("js_base", "kl_epsilon", "tie_policy", "ambiguity_from")}
    return out


def _prediction_frame(predictions: Any) -> pd.DataFrame:
    """One DataFrame from a predictions table, a DataFrame, or a list of either."""
    if isinstance(predictions, pd.DataFrame) or hasattr(predictions, "df"):
        predictions = [predictions]
    frames = [p.df if hasattr(p, "df") else p for p in predictions]
    bad = [type(f).__name__ for f in frames if not isinstance(f, pd.DataFrame)]
    if bad or not frames:
        raise TypeError(
            f"predictions must be ambiemo Predictions or DataFrames (or a list of them), got {bad or 'nothing'}"
        )
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _cell(df: pd.DataFrame, row: int) -> str:
    return "/".join(str(df.loc[row, k]) for k in KEYS)


def _manifest_frame(manifest: Any) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The manifest's columns scoring needs (p_<L> renamed true_<L>), its labels and bin order."""
    if hasattr(manifest, "df") and hasattr(manifest, "labels"):
        df, labels = manifest.df, list(manifest.labels)
        order = list(manifest.meta.get("ambiguity", {}).get("bins", []))
    elif isinstance(manifest, pd.DataFrame):
        df, labels, order = manifest, labels_of(manifest), []
    else:
        raise TypeError(f"manifest must be an ambiemo Manifest or a DataFrame, not {type(manifest).__name__}")
    missing = [c for c in (*_MANIFEST_COLUMNS, *(f"p_{x}" for x in labels)) if c not in df.columns]
    if missing or not labels:
        raise ScoringError(
            f"manifest lacks column(s) {missing or ['p_<label>']}; read it with ambiemo.manifest.read_manifest"
        )
    if not order:  # a bare DataFrame: order the bins by their entropy
        order = list(df.groupby("ambiguity")["entropy_bits"].mean().sort_values(kind="stable").index)
    out = df[list(_MANIFEST_COLUMNS)].copy()
    for x in labels:
        out[f"true_{x}"] = df[f"p_{x}"].to_numpy(dtype=float)
    return out, labels, order


def _check_predictions(preds: pd.DataFrame, labels: Sequence[str]) -> None:
    missing = [c for c in PREDICTION_REQUIRED if c not in preds.columns]
    if missing:
        raise ScoringError(f"predictions lack column(s) {missing}; write them with ambiemo.predictions")
    plabels = labels_of(preds)
    if set(plabels) != set(labels):
        raise ScoringError(
            f"predictions have labels {plabels} but the manifest {list(labels)}; "
            "score each dataset with the predictions made for its label set"
        )
    dup = preds.duplicated(["utt_id", *KEYS], keep=False)
    if dup.any():
        first = preds.loc[dup].iloc[0]
        raise ScoringError(
            f"{int(dup.sum())} prediction rows repeat an utterance within a cell, e.g. "
            f"{first['utt_id']!r} in {'/'.join(str(first[k]) for k in KEYS)}; "
            "was a prediction file passed twice?"
        )


def _predicted_index(df: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Index of each row's predicted label: ``pred_label`` where given, else the argmax; -1 for
    parse failures, which have no label of their own."""
    q = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    idx = np.nan_to_num(q, nan=-1.0).argmax(axis=1)  # rows with NaN are failures, set to -1 below
    if "pred_label" in df.columns:
        lookup = {x: j for j, x in enumerate(labels)}
        given = df["pred_label"].fillna("").astype(str).map(lambda s: lookup.get(s, -2)).to_numpy(dtype=int)
        idx = np.where(given >= 0, given, idx)
    idx[~df["parsed_ok"].astype(bool).to_numpy()] = -1
    return idx


def _ambiguity(df: pd.DataFrame, order: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "entropy":  # one bin per distinct vote entropy, as AER-LLM analysed it
        h = np.round(df["entropy_bits"].to_numpy(dtype=float), 3)
        levels = np.unique(h)
        return np.array([f"{x:.3f}" for x in h], dtype=object), np.searchsorted(levels, h)
    rank = {b: i for i, b in enumerate(order)}
    bins = df["ambiguity"].astype(str)
    unknown = sorted(set(bins) - set(rank))
    if unknown:
        raise ScoringError(f"ambiguity bin(s) {unknown} are not in the manifest's order {list(order)}")
    return bins.to_numpy(dtype=object), bins.map(rank).to_numpy(dtype=int)


def _capacity(models: pd.Series, params: Mapping[str, Any] | None) -> np.ndarray:
    """Billions of parameters per row from params ``models.<key>.params_b`` (NaN, with a warning, if absent)."""
    specs = (params or {}).get("models") or {}
    out, absent = {}, []
    for key in models.unique():
        value = (specs.get(key) or {}).get("params_b")
        if value is None:
            absent.append(key)
        out[key] = float(value) if value is not None else float("nan")
    if absent:
        warnings.warn(
            f"params models.<key>.params_b is missing for {sorted(absent)}: their capacity is NaN and "
            "the capacity analyses leave them out; add params_b (billions of parameters)",
            stacklevel=3,
        )
    return models.map(out).to_numpy(dtype=float)


def _missing(preds: pd.DataFrame, mdf: pd.DataFrame) -> dict[str, int]:
    """Manifest utterances with no prediction, per cell (cells with none missing are left out)."""
    n = len(mdf)
    counts = preds.groupby(list(KEYS), sort=True)["utt_id"].nunique()
    return {"/".join(str(k) for k in key): int(n - c) for key, c in counts.items() if c < n}


def parse_candidates(raw: Any) -> list[dict[str, Any]]:
    """The ``candidates`` cell of a prediction row as a list of dicts ([] when absent)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw == "":
        return []
    items = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if not isinstance(items, list):
        raise ScoringError(f"candidates must be a JSON list, got {type(items).__name__}")
    return [c for c in items if isinstance(c, dict)]


def candidate_distribution(cand: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray | None:
    """A candidate's parsed distribution in label order, or None if it did not parse.

    The parsed distribution is stored under ``p`` as a list in label-set order (``ambiemo.predictions``);
    ``parsed`` or ``distribution`` and a {label: probability} mapping are read too. It is renormalised: parsers return
    proportions, and a candidate's probabilities that do not add up are read as proportions.
    """
    d = next((cand[k] for k in ("p", "parsed", "distribution") if k in cand), None)
    if d is None:
        return None
    if isinstance(d, Mapping):
        vec = np.array([float(d.get(x, 0.0) or 0.0) for x in labels])
    else:
        vec = np.asarray(d, dtype=float)
        if vec.shape != (len(labels),):
            return None
    total = vec.sum()
    if not np.isfinite(vec).all() or (vec < 0).any() or total <= 0:
        return None
    return vec / total


def _oracle(
    df: pd.DataFrame, labels: Sequence[str], p_true: np.ndarray, y_true: np.ndarray, base: Any
) -> dict[str, np.ndarray]:
    n = len(df)
    out = {
        "oracle_js": np.full(n, np.nan),
        "oracle_bc": np.full(n, np.nan),
        "oracle_correct": np.full(n, np.nan),
        "oracle_n_parsed": np.zeros(n, dtype=int),
        "pass_at_n": np.full(n, np.nan),
    }
    if "candidates" not in df.columns:
        return out
    for i, raw in enumerate(df["candidates"].to_numpy()):
        dists = [d for d in (candidate_distribution(c, labels) for c in parse_candidates(raw)) if d is not None]
        out["oracle_n_parsed"][i] = len(dists)
        if not dists:
            continue
        cand = np.vstack(dists)
        truth = np.repeat(p_true[i : i + 1], len(cand), axis=0)
        js = M.js_distance(truth, cand, base=base)
        best = int(np.argmin(js))  # first best on a tie: candidate order is the model's
        out["oracle_js"][i] = js[best]
        out["oracle_bc"][i] = M.bhattacharyya_coefficient(truth[:1], cand[best : best + 1])[0]
        if y_true[i] >= 0:
            tops = cand.argmax(axis=1)
            out["oracle_correct"][i] = float(tops[best] == y_true[i])
            out["pass_at_n"][i] = float((tops == y_true[i]).any())
    return out


# --------------------------------------------------------------------------- summaries


def group_metrics(g: pd.DataFrame, labels: Sequence[str], ece_bins: int = M.ECE_BINS) -> dict[str, float]:
    """Every metric of ``ambiemo.metrics.METRICS`` over one group of score rows."""
    p = g[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    has_q = np.isfinite(q).all(axis=1)  # rows a parse failure left without a distribution have no say
    p, q = p[has_q], q[has_q]
    lookup = {x: j for j, x in enumerate(labels)}
    y_true = g["majority_used"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
    y_pred = g["pred_label"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
    return {
        "js": float(g["js"].mean()),
        "bc": float(g["bc"].mean()),
        "r2": M.r2(p, q),
        "kl": float(g["kl"].mean()),
        "tv": float(g["tv"].mean()),
        "brier": float(g["brier"].mean()),
        "ece": M.expected_calibration_error(g["confidence"].to_numpy(), g["correct"].to_numpy(), ece_bins),
        "entropy_spearman": M.entropy_spearman(p, q),
        "accuracy": M.accuracy(y_true, y_pred),
        "f1_weighted": M.weighted_f1(y_true, y_pred),
        "uar": M.uar(y_true, y_pred),
        "plausible_accuracy": float(g["plausible"].mean()),
    }


def _labels_in(g: pd.DataFrame) -> list[str]:
    """Labels of this group (score tables of several label sets leave others' columns NaN)."""
    return [x for x in labels_of(g, "true_") if g[f"true_{x}"].notna().all()]


def summarise(
    scores: pd.DataFrame, by: Sequence[str] = KEYS, params: Mapping[str, Any] | None = None, per_bin: bool = True
) -> pd.DataFrame:
    """One row per group of ``by`` (default dataset × model × strategy × budget) with every metric,
    and, when ``per_bin``, one more row per ambiguity bin (``ambiguity`` is ``"all"`` for the whole group).

    Columns: the keys, ``ambiguity``, ``ambiguity_rank`` (-1 for "all"), ``n`` utterances,
    ``n_dist`` (those with a predicted distribution: all unless params ``parsing.on_failure`` is nan),
    ``n_hard`` (those with a majority label under the tie policy), ``n_tie_excluded``,
    ``parse_failure_rate``, the metrics, ``entropy_mean`` (mean vote entropy in bits, an x position for
    the bin), ``oracle_js``, ``oracle_bc``, ``pass_at_n``, ``params_b`` and
    compute per utterance: ``model_calls``, ``verifier_calls``, ``prompt_tokens``, ``gen_tokens``, ``wall_s``.
    """
    if isinstance(by, Mapping):
        raise TypeError(
            "summarise(scores, by=..., params=...): the second argument is the grouping columns; "
            "pass the params mapping as params="
        )
    sp = scoring_params(params)
    by = list(by)
    missing = [c for c in by if c not in scores.columns]
    if missing:
        raise KeyError(f"summarise: scores have no column(s) {missing}")
    rows = []
    for key, g in scores.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = _labels_in(g)
        parts = [(ALL, -1, g)]
        if per_bin:
            parts += [
                (b, int(gb["ambiguity_rank"].iloc[0]), gb)
                for b, gb in sorted(g.groupby("ambiguity"), key=lambda t: int(t[1]["ambiguity_rank"].iloc[0]))
            ]
        for bin_name, rank, part in parts:
            row = dict(zip(by, key, strict=True))
            row.update(
                ambiguity=bin_name,
                ambiguity_rank=rank,
                n=len(part),
                n_dist=int(part["js"].notna().sum()),
                n_hard=int(part["correct"].notna().sum()),
                n_tie_excluded=int((part["majority_used"] == "").sum()),
                parse_failure_rate=float(1 - part["parsed_ok"].mean()),
            )
            row.update(group_metrics(part, labels, int(sp["ece_bins"])))
            row.update(
                entropy_mean=float(part["entropy_bits"].mean()),
                oracle_js=_nanmean(part["oracle_js"]),
                oracle_bc=_nanmean(part["oracle_bc"]),
                pass_at_n=_nanmean(part["pass_at_n"]),
                params_b=float(part["params_b"].iloc[0])
                if "params_b" in part and part["params_b"].nunique(dropna=False) == 1
                else float("nan"),
            )
            row.update({c: float(part[c].mean()) for c in COMPUTE_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


def compute_table(scores: pd.DataFrame, by: Sequence[str] = KEYS) -> pd.DataFrame:
    """Compute spent per group: utterances, then per utterance the model calls, verifier calls,
    prompt and generated tokens and wall seconds (means), and the totals of each."""
    by = list(by)
    grouped = scores.groupby(by, sort=True)
    per_utt = grouped[list(COMPUTE_COLUMNS)].mean()
    totals = grouped[list(COMPUTE_COLUMNS)].sum(min_count=1).add_prefix("total_")
    out = pd.concat([grouped["utt_id"].nunique().rename("n"), per_utt, totals], axis=1)
    return out.reset_index()


def metrics_json(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("js", "bc", "r2", "accuracy", "f1_weighted", "uar", "ece", "parse_failure_rate"),
) -> dict[str, Any]:
    """A nested {dataset: {model: {strategy@budget: {metric: value}}}} of the overall summary rows,
    for DVC's ``metrics`` (``dvc metrics show``); NaN becomes None so that the JSON stays valid."""
    out: dict[str, Any] = {}
    rows = summary[summary["ambiguity"] == ALL] if "ambiguity" in summary else summary
    for row in rows.itertuples(index=False):
        cell = out.setdefault(str(row.dataset), {}).setdefault(str(row.model), {})
        values = {m: getattr(row, m) for m in metrics}
        cell[f"{row.strategy}@{row.budget}"] = {
            m: (None if v is None or not np.isfinite(v) else round(float(v), 6)) for m, v in values.items()
        }
    return out


def overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows over every ambiguity bin (``ambiguity == "all"``)."""
    return summary[summary["ambiguity"] == ALL] if "ambiguity" in summary else summary


def at_largest_budget(frame: pd.DataFrame, keys: Sequence[str] = ("dataset", "model", "strategy")) -> pd.DataFrame:
    """Each strategy at its largest budget (its headline setting), per group of ``keys``."""
    top = frame.groupby(list(keys))["budget"].transform("max")
    return frame[frame["budget"] == top]


def _nanmean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else float("nan")


def reliability(
    scores: pd.DataFrame, by: Sequence[str] = KEYS, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Reliability-diagram bins (``ambiemo.metrics.reliability_bins``) per group of ``by``, with the
    group's ``params_b`` (so that plots can order models by capacity)."""
    n_bins = int(scoring_params(params)["ece_bins"])
    by = list(by)
    parts = []
    for key, g in scores.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        table = M.reliability_bins(g["confidence"].to_numpy(), g["correct"].to_numpy(), n_bins)
        capacity = g["params_b"].iloc[0] if "params_b" in g and g["params_b"].nunique() == 1 else np.nan
        parts.append(table.assign(**dict(zip(by, key, strict=True)), params_b=capacity))
    if not parts:
        raise ValueError("reliability: no score rows")
    out = pd.concat(parts, ignore_index=True)
    return out[[*by, *[c for c in out.columns if c not in by]]]


def gain_over_baseline(
    summary: pd.DataFrame,
    metric: str = "js",
    baseline: str = "baseline",
    by: Sequence[str] = ("dataset", "model", "ambiguity"),
) -> pd.DataFrame:
    """Each strategy's improvement over the baseline in a summary table, per ``by``.

    ``gain`` is signed so that positive means better (baseline minus strategy for a metric where
    lower is better, such as JS). If the baseline ran at several budgets, its smallest is used.
    """
    if metric not in M.METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose from {list(M.METRICS)}")
    if baseline not in set(summary["strategy"]):
        raise ValueError(
            f"no {baseline!r} rows in the summary: cannot compute gains over the baseline "
            "(params stats.baseline names the reference strategy)"
        )
    sign = 1.0 if M.METRICS[metric].higher_is_better else -1.0
    by = list(by)
    base = summary[summary["strategy"] == baseline]
    base = base[base["budget"] == base.groupby(by)["budget"].transform("min")]
    base = base[[*by, metric]].rename(columns={metric: "baseline_value"})
    rest = summary[summary["strategy"] != baseline]
    out = rest.merge(base, on=by, how="inner", validate="many_to_one")
    out["value"] = out[metric]
    out["gain"] = sign * (out["value"] - out["baseline_value"])
    out["metric"] = metric
    keep = [
        c
        for c in (*KEYS, "ambiguity", "ambiguity_rank", "params_b", "metric", "value", "baseline_value", "gain")
        if c in out.columns
    ]
    return out[keep].reset_index(drop=True)


def levels(
    frame: pd.DataFrame, column: str = "ambiguity", rank: str = "ambiguity_rank", include_all: bool = False
) -> list[str]:
    """The values of an ordered column (such as the ambiguity bins) from least to most."""
    sub = frame[[column, rank]].drop_duplicates().sort_values([rank, column], kind="stable")
    vals = [str(v) for v in sub[column]]
    return vals if include_all else [v for v in vals if v != ALL]


def read_predictions(paths: Iterable[Any]) -> list[pd.DataFrame]:
    """Read prediction tables (``ambiemo.predictions.read_predictions`` where it exists, which
    checks the schema; the bare parquet otherwise)."""
    try:
        from ambiemo.predictions import read_predictions as _read  # type: ignore[attr-defined]
    except ImportError:
        _read = None
    from ambiemo.tables import read_table

    frames = []
    for path in paths:
        if _read is not None:
            got = _read(path)
            frames.append(got.df if hasattr(got, "df") else got[0] if isinstance(got, tuple) else got)
        else:
            frames.append(read_table(path)[0])
    return frames


# --------------------------------------------------------------------------- files


def write_scores(
    scores: pd.DataFrame, path: Any, params: Mapping[str, Any] | None = None, inputs: Sequence[str] = ()
) -> Any:
    """Write a scores table with what it was scored with (tie policy, JS base ...), its label set,
    the ambiguity order, the missing-prediction counts and the provenance."""
    from ambiemo.provenance import provenance
    from ambiemo.tables import write_table

    sp = scoring_params(params)
    capacity = {
        k: (v or {}).get("params_b")
        for k, v in ((params or {}).get("models") or {}).items()
        if k in set(scores["model"])
    }
    meta = {
        "kind": "scores",
        "label_set": {"labels": list(scores.attrs.get("labels", labels_of(scores, "true_")))},
        "ambiguity_order": list(scores.attrs.get("ambiguity_order", levels(scores))),
        "missing": dict(scores.attrs.get("missing", {})),
        "parse_failures": int((~scores["parsed_ok"]).sum()),
        "inputs": [str(x) for x in inputs],
        "provenance": provenance({"scoring": sp, "models": {"params_b": capacity}}, (params or {}).get("seed")),
    }
    plain = scores.copy()
    plain.attrs = {}  # the metadata above carries them; pandas would store them a second time
    return write_table(plain, path, meta)


def read_scores(path: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a scores table and its metadata (``scoring`` params under ``meta["provenance"]``)."""
    from ambiemo.tables import read_table

    df, meta = read_table(path)
    if meta.get("kind") != "scores" or "js" not in df.columns:
        raise ScoringError(
            f"{path}: not a scores table; make one with `ambiemo score --manifest ... --predictions ...`"
        )
    df.attrs.update(
        labels=meta["label_set"]["labels"],
        ambiguity_order=meta.get("ambiguity_order", []),
        missing=meta.get("missing", {}),
    )
    return df, meta


def params_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The params a scores table was made with, in params.yaml shape (for ``summarise``)."""
    return {"scoring": dict(meta.get("provenance", {}).get("params", {}).get("scoring", {}))}
