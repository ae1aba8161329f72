"""Interaction models: capacity × strategy × ambiguity (MixedLM on JS, GEE on correctness)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.stats.bootstrap import stats_params

# --------------------------------------------------------------------------- interaction models

_TERM_NAMES = (
    (re.compile(r"C\(strategy, Treatment\('[^']*'\)\)\[T\.([^\]]*)\]"), r"strategy[\1]"),
    (re.compile(r"C\(dataset\)\[T\.([^\]]*)\]"), r"dataset[\1]"),
)
TABLE_COLUMNS = [
    "term",
    "estimate",
    "std_err",
    "ci_low",
    "ci_high",
    "p",
    "model",
    "outcome",
    "n_obs",
    "n_groups",
    "note",
]


def _term(name: str) -> str:
    for pattern, repl in _TERM_NAMES:
        name = pattern.sub(repl, name)
    return name.replace(":", " × ")


def model_frame(
    scores: pd.DataFrame, outcome: str, params: Mapping[str, Any] | None = None, baseline: str | None = None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows and formulas the interaction models fit, and notes on what was dropped.

    Formulas come from the fullest (capacity × strategy × entropy) to simpler ones (all two-way
    interactions; capacity × entropy plus strategy; capacity × entropy); a model falls back to
    the next only when the fuller one cannot be estimated (for correctness: a strategy that is
    always right for some model separates the data), and says so.

    Keeps one budget per strategy (params ``stats.budget``), rows with an outcome and a
    capacity, and builds centred ``log10_capacity`` and ``entropy``. Factors that do not vary
    (one model, one strategy, one entropy) leave the formula, with a note.
    """
    st = stats_params(params)
    baseline = baseline or st["baseline"]
    notes: list[str] = []
    if outcome not in scores.columns:
        raise KeyError(f"no per-utterance column {outcome!r} in the scores")
    pick = scores.groupby(["dataset", "model", "strategy"])["budget"].transform(st["budget"])
    d = scores[scores["budget"] == pick].copy()
    if (scores["budget"] != pick).any():
        notes.append(f"one budget per strategy ({st['budget']})")
    dropped_cap = int(d["params_b"].isna().sum())
    if dropped_cap:
        notes.append(f"{dropped_cap} rows without params_b left out")
    dropped_y = int((d[outcome].isna() & d["params_b"].notna()).sum())
    if dropped_y:
        notes.append(f"{dropped_y} rows without {outcome} left out")
    d = d[d[outcome].notna() & d["params_b"].notna()].copy()
    d["y"] = d[outcome].astype(float)
    d["utt_key"] = d["dataset"].astype(str) + "/" + d["utt_id"].astype(str)
    cap = np.log10(d["params_b"].astype(float))
    d["log10_capacity"] = cap - cap.mean() if len(d) else cap
    d["entropy"] = d["entropy_bits"] - d["entropy_bits"].mean() if len(d) else d["entropy_bits"]
    terms = []
    if d["log10_capacity"].nunique() >= 2:
        terms.append("log10_capacity")
    else:
        notes.append("one model capacity only: capacity terms dropped")
    strategies = sorted(d["strategy"].unique())
    if len(strategies) >= 2:
        ref = baseline if baseline in strategies else strategies[0]
        if ref != baseline:
            notes.append(f"no {baseline!r} rows: reference strategy is {ref!r}")
        terms.append(f"C(strategy, Treatment('{ref}'))")
    else:
        notes.append("one strategy only: strategy terms dropped")
    if d["entropy"].nunique() >= 2:
        terms.append("entropy")
    else:
        notes.append("no variation in vote entropy: entropy terms dropped")
    if len(d):
        notes.append(
            f"centred at log10 params_b = {float(cap.mean()):.3f}, entropy = {float(d['entropy_bits'].mean()):.3f} bits"
        )
    extra = " + C(dataset)" if d["dataset"].nunique() > 1 else ""
    ladder = ["y ~ " + (" * ".join(terms) if terms else "1") + extra]
    if len(terms) == 3:
        cap_t, strat_t, ent_t = terms
        ladder += [
            f"y ~ ({cap_t} + {strat_t} + {ent_t}) ** 2{extra}",
            f"y ~ {cap_t} * {ent_t} + {strat_t}{extra}",
            f"y ~ {cap_t} * {ent_t}{extra}",
        ]
    return d, ladder, notes


def _usable(result) -> bool:
    """Fixed effects that are finite and not running off to infinity (separation in a logit model).
    Variance components may sit on the boundary (zero, no standard error): that is allowed."""
    names = list(result.model.exog_names)
    params = np.asarray(pd.Series(result.params)[names], dtype=float)
    bse = np.asarray(pd.Series(result.bse)[names], dtype=float)
    return bool(np.isfinite(params).all() and np.isfinite(bse).all() and np.abs(params).max() < 15)


def _fit_ladder(build, ladder: list[str], notes: list[str]):
    """Fit the first formula of ``ladder`` that gives usable estimates; notes say which and why."""
    messages: set[str] = set()
    for i, formula in enumerate(ladder):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = build(formula)
            except (np.linalg.LinAlgError, ValueError) as err:
                messages.add(f"{type(err).__name__}: {err}".split("\n")[0])
                result = None
        messages |= {
            str(w.message).split("\n")[0]
            for w in caught
            if any(s in str(w.message).lower() for s in ("converge", "boundary", "singular", "overflow", "separation"))
        }
        if result is not None and _usable(result):
            if i:
                notes.append(f"fuller model(s) not estimable (e.g. separation); fitted {formula.replace('y ~ ', '')}")
            notes.extend(f"statsmodels: {m}" for m in sorted(messages))
            return result
    notes.extend(f"statsmodels: {m}" for m in sorted(messages))
    return None


def _not_fitted(kind: str, outcome: str, n_obs: int, note: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "term": "(not fitted)",
                "estimate": np.nan,
                "std_err": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p": np.nan,
                "model": kind,
                "outcome": outcome,
                "n_obs": n_obs,
                "n_groups": 0,
                "note": note,
            }
        ],
        columns=TABLE_COLUMNS,
    )


def _tidy(result, kind: str, outcome: str, n_obs: int, n_groups: int, notes: list[str], alpha: float) -> pd.DataFrame:
    ci = result.conf_int(alpha=alpha)
    names = [n for n in result.model.exog_names]
    table = pd.DataFrame(
        {
            "term": [_term(n) for n in names],
            "estimate": [float(result.params[n]) for n in names],
            "std_err": [float(result.bse[n]) for n in names],
            "ci_low": [float(ci.loc[n, 0]) for n in names],
            "ci_high": [float(ci.loc[n, 1]) for n in names],
            "p": [float(result.pvalues[n]) for n in names],
        }
    )
    table["model"], table["outcome"], table["n_obs"], table["n_groups"] = kind, outcome, n_obs, n_groups
    table["note"] = "; ".join(notes)
    return table[TABLE_COLUMNS]


def interaction_model(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    metric: str | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Linear mixed model of a per-utterance metric (params ``stats.mixed_model_metric``, JS
    distance by default) on log10 capacity × strategy × vote entropy.

    Random intercepts for utterance; where speakers are known (at least two, fewer than the
    utterances), utterances are nested in speakers with a speaker intercept too (variance
    components). Returns the tidy coefficient table (``TABLE_COLUMNS``) plus rows ``var(...)``
    for the variance components (estimate only).
    """
    st = stats_params(params)
    metric = metric or st["mixed_model_metric"]
    import statsmodels.formula.api as smf

    d, ladder, notes = model_frame(scores, metric, params, baseline)
    if len(d) < 3 or d["utt_key"].nunique() < 2:
        return _not_fitted("mixedlm", metric, len(d), "; ".join([*notes, "fewer than two utterances to fit"]))
    speaker = d["speaker"].fillna("").astype(str)
    n_spk, n_utt = speaker[speaker != ""].nunique(), d["utt_key"].nunique()
    nested = n_spk >= 2 and n_spk < n_utt
    if nested and n_utt > int(st["speaker_component_max_utterances"]):
        nested = False
        notes.append(
            f"speaker variance component skipped for size ({n_utt} utterances > params "
            "stats.speaker_component_max_utterances): utterance intercept only, so standard errors of "
            "utterance-level terms such as entropy may be optimistic"
        )
    elif not nested:
        notes.append("speaker not identifiable: random intercept for utterance only")
    if nested:
        # unknown speakers: each such utterance its own speaker group
        d["group"] = np.where(speaker != "", "spk:" + d["dataset"].astype(str) + "/" + speaker, "utt:" + d["utt_key"])
        if (speaker == "").any():
            notes.append("utterances without a speaker are their own speaker group")
        groups = d["group"].nunique()

        def build(formula):
            return smf.mixedlm(
                formula, d, groups="group", re_formula="1", vc_formula={"utterance": "0 + C(utt_key)"}
            ).fit(reml=True, method=["lbfgs", "powell"])
    else:
        groups = d["utt_key"].nunique()

        def build(formula):
            return smf.mixedlm(formula, d, groups="utt_key", re_formula="1").fit(reml=True, method=["lbfgs", "powell"])

    result = _fit_ladder(build, ladder, notes)
    if result is None:
        return _not_fitted("mixedlm", metric, len(d), "; ".join([*notes, "no formula could be estimated"]))
    table = _tidy(result, "mixedlm", metric, len(d), groups, notes, float(st["alpha"]))
    var_rows = [("var(speaker)" if nested else "var(utterance)", float(np.asarray(result.cov_re)[0, 0]))]
    if nested:
        var_rows.append(("var(utterance)", float(result.vcomp[0])))
    var_rows.append(("var(residual)", float(result.scale)))
    extra = pd.DataFrame(
        [
            {
                "term": t,
                "estimate": v,
                "model": "mixedlm",
                "outcome": metric,
                "n_obs": len(d),
                "n_groups": groups,
                "note": table["note"].iloc[0],
            }
            for t, v in var_rows
        ],
        columns=TABLE_COLUMNS,
    )
    return pd.concat([table, extra], ignore_index=True)


def correctness_model(
    scores: pd.DataFrame, params: Mapping[str, Any] | None = None, *, baseline: str | None = None
) -> pd.DataFrame:
    """GEE (binomial, logit link, exchangeable correlation within utterance) of correctness
    against the majority label on log10 capacity × strategy × vote entropy. Estimates are
    log-odds; rows the tie policy excluded (``correct`` NaN) are left out and counted."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    st = stats_params(params)
    d, ladder, notes = model_frame(scores, "correct", params, baseline)
    if len(d) < 3 or d["utt_key"].nunique() < 2:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "fewer than two utterances to fit"]))
    if d["y"].nunique() < 2:
        which = "correct" if d["y"].iloc[0] else "wrong"
        return _not_fitted(
            "gee", "correct", len(d), "; ".join([*notes, f"every row is {which}: no variation to model"])
        )

    def build(formula):
        return smf.gee(
            formula, groups="utt_key", data=d, family=sm.families.Binomial(), cov_struct=sm.cov_struct.Exchangeable()
        ).fit(maxiter=200)

    result = _fit_ladder(build, ladder, notes)
    if result is None:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "no formula could be estimated"]))
    notes.append("estimates in log-odds")
    return _tidy(result, "gee", "correct", len(d), d["utt_key"].nunique(), notes, float(st["alpha"]))
