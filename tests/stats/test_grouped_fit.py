"""The interaction models fitted from per-utterance sums are statsmodels' fits: the same estimates
(to statsmodels' optimiser tolerance for REML, to rounding for the GEE), the same standard errors
from the same Hessian, and the same tables from ``interaction_model`` / ``correctness_model``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.regression.mixed_linear_model import MixedLMParams
from synthetic import PARAMS, candidates_table, cells, manifest_df

from ambiemo import scoring, stats
from ambiemo.stats.grouped_fit import design, gee_exchangeable_logit, reml_intercept

FORMULA = "~ log10_capacity * C(strategy, Treatment('baseline')) * entropy"


def _planted(n_utts=240, seed=0, keep=0.9) -> pd.DataFrame:
    """JS-like outcome with an utterance intercept (sd 0.1) and a correctness outcome, with a tenth
    of the rows dropped so that groups differ in size (the closed forms must hold off balance)."""
    rng = np.random.default_rng(seed)
    h, u = rng.uniform(0, 2, n_utts), rng.normal(0, 0.1, n_utts)
    rows = []
    for i in range(n_utts):
        for cap in (0.5, 2.0, 7.0, 30.0):
            for s in ("baseline", "tts", "vote"):
                lc = np.log10(cap)
                y = 0.5 - 0.05 * lc + 0.1 * h[i] + 0.03 * lc * h[i] - 0.02 * (s == "tts") + u[i] + rng.normal(0, 0.05)
                logit = 0.3 + lc - 0.8 * h[i] + 0.3 * (s != "baseline") + 2 * u[i]
                rows.append((f"u{i}", lc, s, h[i] - 1, y, float(rng.random() < 1 / (1 + np.exp(-logit)))))
    d = pd.DataFrame(rows, columns=["utt_key", "log10_capacity", "strategy", "entropy", "y", "c"])
    return d.sample(frac=keep, random_state=seed).reset_index(drop=True)


def test_reml_is_statsmodels_mixedlm():
    d = _planted()
    model = smf.mixedlm("y" + FORMULA, d, groups="utt_key", re_formula="1")
    ref = model.fit(reml=True, method=["lbfgs", "powell"])
    got = reml_intercept(*design("y" + FORMULA, d), d["utt_key"].to_numpy())
    names = model.exog_names
    assert got.exog_names == names
    assert np.abs(got.params[names].to_numpy() - ref.fe_params[names].to_numpy()).max() < 1e-6
    # statsmodels stops its search within its tolerance; ours is at least as high on its own criterion
    model.cov_pen = model.fe_pen = None
    gamma = float(got.cov_re[0, 0] / got.scale)
    at = MixedLMParams.from_components(cov_re=np.array([[gamma]]), vcomp=np.zeros(0))
    at_ref = MixedLMParams.from_components(cov_re=np.asarray(ref.cov_re) / ref.scale, vcomp=np.zeros(0))
    assert model.loglike(at, profile_fe=True) >= model.loglike(at_ref, profile_fe=True) - 1e-9
    assert gamma == pytest.approx(float(np.asarray(ref.cov_re)[0, 0] / ref.scale), rel=1e-3)
    # the closed-form Hessian is statsmodels' Hessian at the same point
    at.fe_params = got.params[names].to_numpy()
    hess, _ = model.hessian(at)
    expected_bse = np.sqrt(np.diag(np.linalg.inv(-hess))[: len(names)])
    np.testing.assert_allclose(got.bse[names].to_numpy(), expected_bse, rtol=1e-9)
    assert got.scale == pytest.approx(model.get_scale(at.fe_params, np.array([[gamma]]), np.zeros(0)), rel=1e-10)
    np.testing.assert_allclose(got.bse[names].to_numpy(), ref.bse[names].to_numpy(), rtol=1e-3)


def test_reml_on_the_boundary_and_without_a_group_effect():
    """No utterance effect at all: the variance ratio is at (or next to) zero and the fixed effects
    are ordinary least squares'."""
    rng = np.random.default_rng(3)
    d = _planted(n_utts=60, seed=3)
    d["y"] = 0.2 + 0.1 * d["log10_capacity"] + rng.normal(0, 0.05, len(d))
    got = reml_intercept(*design("y" + FORMULA, d), d["utt_key"].to_numpy())
    ols = smf.ols("y" + FORMULA, d).fit()
    assert got.cov_re[0, 0] / got.scale < 0.05
    np.testing.assert_allclose(got.params.to_numpy(), ols.params.to_numpy(), atol=5e-3)


def test_gee_is_statsmodels_gee():
    d = _planted(seed=1)
    ref = smf.gee(
        "c" + FORMULA, groups="utt_key", data=d, family=sm.families.Binomial(), cov_struct=sm.cov_struct.Exchangeable()
    ).fit(maxiter=200)
    got = gee_exchangeable_logit(*design("c" + FORMULA, d), d["utt_key"].to_numpy(), maxiter=200)
    names = ref.model.exog_names
    np.testing.assert_allclose(got.params[names].to_numpy(), ref.params[names].to_numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.bse[names].to_numpy(), ref.bse[names].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(got.pvalues[names].to_numpy(), ref.pvalues[names].to_numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got.conf_int(0.05).to_numpy(), ref.conf_int(0.05).loc[names].to_numpy(), rtol=1e-8)


@pytest.fixture(scope="module")
def scored():
    man = manifest_df(n=48, seed=11)
    preds = cells(man, budgets={"bon": [2, 4]})
    return scoring.score_predictions(man, preds, PARAMS, candidates=candidates_table(preds))


@pytest.mark.parametrize("fit", [stats.interaction_model, stats.correctness_model])
def test_the_stage_tables_are_the_same_either_way(scored, fit):
    """On scored predictions (the pipeline's own scoring), the grouped path gives statsmodels' table:
    same terms, estimates and errors; the note says which path was taken."""
    base = {**PARAMS["stats"], "speaker_component_max_utterances": 1}  # utterance intercept only
    slow = fit(scored, {**PARAMS, "stats": base})
    fast = fit(scored, {**PARAMS, "stats": {**base, "grouped_fit_min_rows": 1}})
    assert fast["term"].tolist() == slow["term"].tolist()
    assert "per-utterance sums" in fast["note"].iloc[0] and "per-utterance sums" not in slow["note"].iloc[0]
    coef = ~fast["term"].str.startswith("var(")
    for col in ("estimate", "std_err", "ci_low", "ci_high"):
        np.testing.assert_allclose(fast.loc[coef, col], slow.loc[coef, col], rtol=2e-3, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(fast["estimate"], slow["estimate"], rtol=2e-2, atol=1e-6)  # variances too
    assert (fast[["n_obs", "n_groups"]].to_numpy() == slow[["n_obs", "n_groups"]].to_numpy()).all()


def test_blocks_give_the_same_design_and_fits(monkeypatch):
    """The design built block by block (each block's own rows, the whole data's factor levels) is
    the design built at once, even where a block lacks a level; so are the fits summed by block."""
    import ambiemo.stats.grouped_fit as GF

    d = _planted(n_utts=80, seed=5)
    d.loc[d.index[:150], "strategy"] = "baseline"  # the first block sees one strategy only
    whole = design("c" + FORMULA, d)
    gee_whole = gee_exchangeable_logit(*whole, d["utt_key"].to_numpy())
    monkeypatch.setattr(GF, "BLOCK_ROWS", 150)
    blocked = design("c" + FORMULA, d)
    assert blocked[2] == whole[2]
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])
    gee_blocked = gee_exchangeable_logit(*blocked, d["utt_key"].to_numpy())
    np.testing.assert_allclose(gee_blocked.params, gee_whole.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gee_blocked.bse, gee_whole.bse, rtol=1e-10)
