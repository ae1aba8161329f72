"""Interaction models: capacity × strategy × ambiguity (MixedLM on JS, GEE on correctness).

**Capacity within families.** Models differ in family (training data, architecture) as well as
in size, so a slope fitted across all models mixes "bigger" with "from another family". Both
models therefore carry *family fixed effects with one capacity slope shared by the families*
(params ``stats.family_term: fixed``, the default): a ``C(family)`` intercept per family, and
log10 capacity centred within each family (at the mean of its rows), so that the slope is
estimated from differences between sizes of one family, and a family that scores better for
other reasons moves its intercept, not the slope. Centred within families, the capacity
interactions are also uncorrelated with a family-level difference in strategy gain or in the
entropy slope where each model of a family has the same utterances (a balanced design; rows left
out unbalance it a little). A family with one capacity informs its intercept and the strategy and entropy terms
only. Families come from params ``models.<key>.family``; a model without one is its own family.

Why not random slopes per family: statsmodels' ``MixedLM`` takes one grouping factor, which the
utterance (or speaker) intercepts already hold, families would be crossed with it, and a
variance of slopes over the handful of families a study has (two to ten) is barely estimated;
the GEE has no random effects at all. A shared within-family slope needs only one family with
two capacities.

When no family has two capacities, or there is one family only, the family term is not fitted
(with one family the plain slope already is within it; with no ladder the within-family slope is
not identified): the model is today's one, with capacity centred at its overall mean, a note in
the table says which case it was, and a ``UserWarning`` says so when the slope mixes families.
``stats.family_term: none`` asks for the model without a family term.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.scoring.references import MODEL as REFERENCE_MODEL  # the model name of the reference rows
from ambiemo.stats.bootstrap import stats_params
from ambiemo.stats.families import FAMILY_TERMS, family_term
from ambiemo.stats.grouped_fit import design, gee_exchangeable_logit, reml_intercept

# --------------------------------------------------------------------------- interaction models

_TERM_NAMES = (
    (re.compile(r"C\(strategy, Treatment\('[^']*'\)\)\[T\.([^\]]*)\]"), r"strategy[\1]"),
    (re.compile(r"C\(dataset\)\[T\.([^\]]*)\]"), r"dataset[\1]"),
    (re.compile(r"C\(family\)\[T\.([^\]]*)\]"), r"family[\1]"),
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


def _rows(
    scores: pd.DataFrame, outcome: str, budget: str, notes: list[str], left_out: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The rows a model fits: no reference predictors, one budget per strategy, an outcome and a
    capacity; every row left out is counted in ``notes``. ``left_out``: what a reader already
    left out of ``scores`` (``regression_rows``), counted as if it were still there."""
    if outcome not in scores.columns:
        raise KeyError(f"no per-utterance column {outcome!r} in the scores")
    left_out = left_out or {}
    is_reference = scores["model"].astype(str) == REFERENCE_MODEL
    n_reference = int(is_reference.sum()) + int(left_out.get("reference", 0))
    if n_reference:
        notes.append(f"{n_reference} rows of reference predictors (model {REFERENCE_MODEL!r}) left out")
        scores = scores[~is_reference]
    pick = scores.groupby(["dataset", "model", "strategy"])["budget"].transform(budget)
    d = scores[scores["budget"] == pick]
    if (scores["budget"] != pick).any() or left_out.get("other_budgets", 0):
        notes.append(f"one budget per strategy ({budget})")
    dropped_cap = int(d["params_b"].isna().sum())
    if dropped_cap:
        notes.append(f"{dropped_cap} rows without params_b left out")
    dropped_y = int((d[outcome].isna() & d["params_b"].notna()).sum())
    if dropped_y:
        notes.append(f"{dropped_y} rows without {outcome} left out")
    return d[d[outcome].notna() & d["params_b"].notna()].copy()


def model_frame(
    scores: pd.DataFrame,
    outcome: str,
    params: Mapping[str, Any] | None = None,
    baseline: str | None = None,
    left_out: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows and formulas the interaction models fit, and notes on what was dropped.

    Formulas come from the fullest (capacity × strategy × entropy) to simpler ones (all two-way
    interactions; capacity × entropy plus strategy; capacity × entropy); a model falls back to
    the next only when the fuller one cannot be estimated (for correctness: a strategy that is
    always right for some model separates the data), and says so.

    Leaves out the reference predictors and human ceilings (``model == "reference"``), keeps one
    budget per strategy (params ``stats.budget``), rows with an outcome and a capacity, and builds
    ``log10_capacity`` (centred within families where the family term enters, at its overall mean
    otherwise; see the module's docstring) and centred ``entropy``. Factors that do not vary (one
    model, one strategy, one entropy) leave the formula, with a note.
    """
    st = stats_params(params)
    baseline = baseline or st["baseline"]
    asked = str(st.get("family_term", "fixed"))
    if asked not in FAMILY_TERMS:
        raise ValueError(f"params stats.family_term is {asked!r}; use one of {', '.join(FAMILY_TERMS)}")
    notes: list[str] = []
    d = _rows(scores, outcome, st["budget"], notes, left_out)
    d["y"] = d[outcome].astype(float)
    d["utt_key"] = d["dataset"].astype(str) + "/" + d["utt_id"].astype(str)
    cap = np.log10(d["params_b"].astype(float))
    d["log10_capacity"] = cap - cap.mean() if len(d) else cap
    d["entropy"] = d["entropy_bits"] - d["entropy_bits"].mean() if len(d) else d["entropy_bits"]
    with_family, family_note = family_term(d, cap, params, asked) if len(d) else (False, "")
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
        where = "log10 params_b within each family" if with_family else f"log10 params_b = {float(cap.mean()):.3f}"
        notes.append(f"centred at {where}, entropy = {float(d['entropy_bits'].mean()):.3f} bits")
        notes.append(family_note)
    extra = (" + C(dataset)" if d["dataset"].nunique() > 1 else "") + (" + C(family)" if with_family else "")
    ladder = ["y ~ " + (" * ".join(terms) if terms else "1") + extra]
    if len(terms) == 3:
        cap_t, strat_t, ent_t = terms
        ladder += [
            f"y ~ ({cap_t} + {strat_t} + {ent_t}) ** 2{extra}",
            f"y ~ {cap_t} * {ent_t} + {strat_t}{extra}",
            f"y ~ {cap_t} * {ent_t}{extra}",
        ]
    # only what the formulas and the grouping read: at the study's size each column is 50 MB or more
    return d[[c for c in FRAME_COLUMNS if c in d]], ladder, notes


# The columns of model_frame's rows: the formulas' variables and the grouping (utterance, speaker).
FRAME_COLUMNS = ("y", "log10_capacity", "strategy", "entropy", "dataset", "family", "utt_key", "speaker")


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


_GROUPED_NOTE = (
    "fitted from per-utterance sums (params stats.grouped_fit_min_rows; ambiemo.stats.grouped_fit: "
    "the same estimator as statsmodels')"
)


def _fit_mixedlm(model):
    """REML by L-BFGS, then Powell where L-BFGS does not converge. statsmodels passes on to the next
    method only when one does not converge, not when it raises: L-BFGS can step onto a singular
    random-effects covariance (a variance near zero) and raise, which Powell's search survives."""
    try:
        return model.fit(reml=True, method=["lbfgs", "powell"])
    except np.linalg.LinAlgError as err:
        warnings.warn(f"lbfgs stopped on a singular matrix ({err}); refitted with powell", UserWarning, stacklevel=2)
        return model.fit(reml=True, method="powell")


def interaction_model(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    metric: str | None = None,
    baseline: str | None = None,
    left_out: Mapping[str, Any] | None = None,
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

    d, ladder, notes = model_frame(scores, metric, params, baseline, left_out)
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
            return _fit_mixedlm(
                smf.mixedlm(formula, d, groups="group", re_formula="1", vc_formula={"utterance": "0 + C(utt_key)"})
            )
    elif len(d) >= int(st["grouped_fit_min_rows"]):
        groups = d["utt_key"].nunique()
        notes.append(_GROUPED_NOTE)

        def build(formula):
            return reml_intercept(*design(formula, d), d["utt_key"].to_numpy())
    else:
        groups = d["utt_key"].nunique()

        def build(formula):
            return _fit_mixedlm(smf.mixedlm(formula, d, groups="utt_key", re_formula="1"))

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
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    baseline: str | None = None,
    left_out: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """GEE (binomial, logit link, exchangeable correlation within utterance) of correctness
    against the majority label on log10 capacity × strategy × vote entropy. Estimates are
    log-odds; rows the tie policy excluded (``correct`` NaN) are left out and counted."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    st = stats_params(params)
    d, ladder, notes = model_frame(scores, "correct", params, baseline, left_out)
    if len(d) < 3 or d["utt_key"].nunique() < 2:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "fewer than two utterances to fit"]))
    if d["y"].nunique() < 2:
        which = "correct" if d["y"].iloc[0] else "wrong"
        return _not_fitted(
            "gee", "correct", len(d), "; ".join([*notes, f"every row is {which}: no variation to model"])
        )

    def build(formula):
        if grouped:
            return gee_exchangeable_logit(*design(formula, d), d["utt_key"].to_numpy(), maxiter=200)
        return smf.gee(
            formula, groups="utt_key", data=d, family=sm.families.Binomial(), cov_struct=sm.cov_struct.Exchangeable()
        ).fit(maxiter=200)

    grouped = len(d) >= int(st["grouped_fit_min_rows"])
    if grouped:
        notes.append(_GROUPED_NOTE)

    result = _fit_ladder(build, ladder, notes)
    if result is None:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "no formula could be estimated"]))
    notes.append("estimates in log-odds")
    return _tidy(result, "gee", "correct", len(d), d["utt_key"].nunique(), notes, float(st["alpha"]))


def regression_rows(path: Any, columns: Sequence[str], params: Mapping[str, Any] | None = None) -> tuple:
    """``(frame, left_out)``: the rows of the scores at ``path`` the interaction models fit (not the
    reference predictors; one budget per strategy, params ``stats.budget``), in the file's order,
    and what was left out (``reference`` rows; ``other_budgets``), for ``interaction_model`` and
    ``correctness_model``'s notes (``ambiemo.scoring.schema.rows_at_one_budget``). The models would
    leave out the same rows of the whole table; at the study's size the whole table of strings
    (23.6 M rows) was several times the memory of the rows they fit."""
    from ambiemo.scoring.schema import rows_at_one_budget

    return rows_at_one_budget(path, columns, stats_params(params)["budget"])
