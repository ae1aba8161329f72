"""The family term of the capacity models: a planted within-family slope under a between-family
confound, the within-family estimator against least squares, and every fallback said out loud."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ambiemo import stats
from ambiemo.core.config import load_params
from ambiemo.stats import families

ROOT = Path(__file__).resolve().parents[2]

PLANTED_SLOPE = -0.05  # JS distance per log10 parameter, within a family
PLANTED_LOGIT_SLOPE = 0.8  # log-odds of a correct answer per log10 parameter, within a family
# three families, each a ladder of three sizes; the larger families are much better for other reasons
LADDERS = {"small": (0.5, 1.5, 4.5), "mid": (3.0, 9.0, 27.0), "big": (20.0, 60.0, 180.0)}
FAMILY_JS = {"small": 0.0, "mid": -0.08, "big": -0.16}  # better training data, not capacity
FAMILY_LOGIT = {"small": 0.0, "mid": 1.2, "big": 2.4}
FAMILY_TTS_GAIN = {"small": -0.01, "mid": -0.03, "big": -0.05}  # test-time scaling helps some families more


def _params(family_term="fixed"):
    models = {f"{fam}-{cap}": {"family": fam, "params_b": cap} for fam, caps in LADDERS.items() for cap in caps}
    return {"models": models, "stats": {"baseline": "baseline", "alpha": 0.05, "family_term": family_term}}


def _simulate(n_utts=80, seed=0, strategies=("baseline", "tts"), entropy=True):
    """Per-utterance scores from the planted model: a within-family capacity slope, no capacity ×
    strategy interaction, and family offsets (in level and in the strategy's gain) that grow with
    the family's sizes, so that a model without a family term reads them as capacity effects."""
    rng = np.random.default_rng(seed)
    h = rng.uniform(0, 2, n_utts) if entropy else np.ones(n_utts)
    u = rng.normal(0, 0.03, n_utts)
    rows = []
    for fam, caps in LADDERS.items():
        for cap in caps:
            lc = np.log10(cap)
            for s in strategies:
                tts = float(s != "baseline")
                js = 0.45 + FAMILY_JS[fam] + PLANTED_SLOPE * lc + 0.1 * h + FAMILY_TTS_GAIN[fam] * tts + u
                js = js + rng.normal(0, 0.03, n_utts)
                logit = -0.5 + FAMILY_LOGIT[fam] + PLANTED_LOGIT_SLOPE * lc - 0.5 * (h - 1) + 0.2 * tts
                rows.append(
                    pd.DataFrame(
                        {
                            "dataset": "sim",
                            "model": f"{fam}-{cap}",
                            "strategy": s,
                            "budget": 1,
                            "utt_id": [f"u{i}" for i in range(n_utts)],
                            "speaker": "",
                            "entropy_bits": h,
                            "params_b": cap,
                            "js": js,
                            "correct": (rng.random(n_utts) < 1 / (1 + np.exp(-logit))).astype(float),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def _fit(fit, scores, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit(scores, params).set_index("term")


def _report(name, planted, old, new):
    def fmt(row):
        return f"{row['estimate']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"

    print(f"\n{name}: planted {planted:+.4f}; without family term {fmt(old)}; with family term {fmt(new)}")


@pytest.fixture(scope="module")
def sim():
    return _simulate()


def test_family_term_recovers_planted_within_family_slope_that_the_old_model_gets_wrong(sim):
    old = _fit(stats.interaction_model, sim, _params("none"))
    new = _fit(stats.interaction_model, sim, _params("fixed"))
    _report("mixedlm js, log10_capacity", PLANTED_SLOPE, old.loc["log10_capacity"], new.loc["log10_capacity"])
    row = new.loc["log10_capacity"]
    assert row["ci_low"] <= PLANTED_SLOPE <= row["ci_high"]
    assert row["estimate"] == pytest.approx(PLANTED_SLOPE, abs=0.01)
    # the old model mistakes the better families for a capacity effect: more than twice the slope
    wrong = old.loc["log10_capacity"]
    assert wrong["ci_high"] < 2 * PLANTED_SLOPE
    # no capacity × strategy interaction was planted; the family-level gains fake one without the term
    inter = "log10_capacity × strategy[tts]"
    _report(f"mixedlm js, {inter}", 0.0, old.loc[inter], new.loc[inter])
    # within 3 standard errors of zero (seeds 0-5 give -0.008 to +0.004, standard error 0.004)
    assert abs(new.loc[inter, "estimate"]) < 3 * new.loc[inter, "std_err"]
    assert old.loc[inter, "ci_high"] < 0
    # the family terms are in the table under their own names, and the note says what was fitted
    assert {"family[mid]", "family[small]"} <= set(new.index)
    # each family's level at its own mean capacity, against the reference family (big), by hand:
    # its offset, the slope times the difference in mean log10 capacity, half its rows' strategy gain
    for fam in ("mid", "small"):
        lc_gap = np.mean(np.log10(LADDERS[fam])) - np.mean(np.log10(LADDERS["big"]))
        gain_gap = (FAMILY_TTS_GAIN[fam] - FAMILY_TTS_GAIN["big"]) / 2
        expected = FAMILY_JS[fam] - FAMILY_JS["big"] + PLANTED_SLOPE * lc_gap + gain_gap
        assert new.loc[f"family[{fam}]", "estimate"] == pytest.approx(expected, abs=0.01)
    assert "family term: fixed" in row["note"] and "3 families, 3 with two or more capacities" in row["note"]
    assert "family term: none (params stats.family_term)" in wrong["note"]
    assert not old.index.str.startswith("family[").any()


def test_gee_family_term_recovers_planted_within_family_slope():
    scores = _simulate(n_utts=120, seed=3)
    old = _fit(stats.correctness_model, scores, _params("none"))
    new = _fit(stats.correctness_model, scores, _params("fixed"))
    _report("gee correct, log10_capacity", PLANTED_LOGIT_SLOPE, old.loc["log10_capacity"], new.loc["log10_capacity"])
    row = new.loc["log10_capacity"]
    assert row["ci_low"] <= PLANTED_LOGIT_SLOPE <= row["ci_high"]
    assert old.loc["log10_capacity", "ci_low"] > 1.5 * PLANTED_LOGIT_SLOPE
    assert "family term: fixed" in row["note"] and "log-odds" in row["note"]


def test_within_family_slope_equals_least_squares_with_family_dummies():
    """Balanced design, one strategy, one entropy: the mixed model's fixed effects equal ordinary
    least squares on an intercept, log10 capacity and family indicators (numpy, not statsmodels)."""
    scores = _simulate(n_utts=40, seed=1, strategies=("baseline",), entropy=False)
    table = _fit(stats.interaction_model, scores, _params())
    fam = scores["model"].str.split("-").str[0].to_numpy()
    lc = np.log10(scores["params_b"].to_numpy())
    # the table's family terms are levels at each family's mean capacity: shift the raw indicators' ones
    mean_lc = {f: lc[fam == f].mean() for f in LADDERS}
    X = np.column_stack([np.ones(len(lc)), lc, fam == "mid", fam == "small"]).astype(float)
    intercept, slope, mid, small = np.linalg.lstsq(X, scores["js"].to_numpy(), rcond=None)[0]
    assert table.loc["log10_capacity", "estimate"] == pytest.approx(slope, abs=1e-6)
    for name, raw in (("mid", mid), ("small", small)):
        expected = raw + slope * (mean_lc[name] - mean_lc["big"])
        assert table.loc[f"family[{name}]", "estimate"] == pytest.approx(expected, abs=1e-6)
    assert table.loc["Intercept", "estimate"] == pytest.approx(intercept + slope * mean_lc["big"], abs=1e-6)


def test_reference_rows_are_left_out_and_counted(sim):
    reference = sim[sim["model"] == "small-0.5"].assign(model="reference", params_b=1000.0, js=0.0)
    with_ref = _fit(stats.interaction_model, pd.concat([sim, reference], ignore_index=True), _params())
    without = _fit(stats.interaction_model, sim, _params())
    np.testing.assert_allclose(with_ref["estimate"], without["estimate"], rtol=1e-10)
    assert f"{len(reference)} rows of reference predictors (model 'reference') left out" in with_ref["note"].iloc[0]


def test_no_ladder_falls_back_to_todays_model_with_a_warning(sim):
    """Every model its own family (the demo profile, the study's eight): the family term is not
    identified, the fit is exactly the model without it, and both the note and a warning say so."""
    own = {"models": {}, "stats": _params()["stats"]}  # no params family: each model its own family
    with pytest.warns(UserWarning, match="within-family capacity slope not identified"):
        fallback = stats.interaction_model(sim, own).set_index("term")
    plain = _fit(stats.interaction_model, sim, _params("none"))
    np.testing.assert_allclose(fallback["estimate"], plain["estimate"], rtol=1e-10)
    assert "no family has two capacities (9 families, one capacity each)" in fallback["note"].iloc[0]
    # one family: no term is needed, the slope is within it; no warning
    one = _params()
    for spec in one["models"].values():
        spec["family"] = "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        single = stats.interaction_model(sim, one).set_index("term")
    np.testing.assert_allclose(single["estimate"], plain["estimate"], rtol=1e-10)
    assert "family term: none (one family only, all" in single["note"].iloc[0]


def test_families_from_params_and_models_without_one():
    params = _params()
    params["models"]["loner"] = {"params_b": 2.0}
    got = families(pd.Series(["small-0.5", "loner", "unknown", "big-20.0"]), params)
    assert got.tolist() == ["small", "loner", "unknown", "big"]
    scores = _simulate(n_utts=30, seed=2)
    loner = scores[scores["model"] == "mid-3.0"].assign(model="loner", params_b=2.0)
    table = _fit(stats.interaction_model, pd.concat([scores, loner], ignore_index=True), params)
    note = table["note"].iloc[0]
    assert "4 families, 3 with two or more capacities (big, mid, small)" in note
    assert "families with one capacity inform their intercept only (loner)" in note
    assert "models without a params family are their own family (loner)" in note
    assert "family[loner]" in set(table.index)


def test_bad_family_term_names_the_key(sim):
    with pytest.raises(ValueError, match=r"`stats\.family_term`.*'random'"):
        stats.interaction_model(sim, _params("random"))


def test_profiles_in_params_yaml():
    """The demo and paper profiles have no family with two capacities (today's model, with a note);
    the ladder profile has, so the family term enters."""
    params = load_params(ROOT / "params.yaml")
    assert params["stats"]["family_term"] == "fixed"
    models = params["models"]

    def ladders(profile):
        keys = [k for k in params["profiles"][profile]["models"] if models[k].get("params_b") is not None]
        fam = families(pd.Series(keys), params)
        caps = pd.Series([models[k]["params_b"] for k in keys])
        return caps.groupby(fam.to_numpy()).nunique()

    assert (ladders("demo") == 1).all()
    assert (ladders("paper") == 1).all()  # the study's eight: Ultravox v0.3 and v0.4 share one capacity
    ladder = ladders("ladder")
    assert {"qwen2.5-omni", "voxtral", "gemma-3n"} <= set(ladder[ladder >= 2].index)
