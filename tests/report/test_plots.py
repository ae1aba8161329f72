"""Each figure renders to PDF and PNG from small synthetic tables; files are real and stable."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from synthetic import PARAMS, cells, manifest_df

from ambiemo import scoring, stats
from ambiemo.report import figures as plots
from ambiemo.report import figures_distributions as distributions
from ambiemo.report import figures_scaling as scaling

STRATEGIES = ("baseline", "cot", "bon", "w-bon", "self-consistency")
# Two families: a ladder of two sizes and a family of one model (a point in figure 3).
FAMILY_PARAMS = {
    **PARAMS,
    "models": {
        "small": {"params_b": 0.5, "family": "ladder"},
        "large": {"params_b": 7.0, "family": "ladder"},
        "solo": {"params_b": 3.0, "family": "single"},
    },
}


def with_references(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with reference rows as the scoring stage writes them (team interface 3):
    ``model == "reference"``, budget 1; the human ceiling has NaN where it defines no metric."""
    base = summary[(summary["model"] == "small") & (summary["strategy"] == "baseline")]
    refs = []
    for name, shift in (("uniform", 0.11), ("label-prior", 0.05), ("hard-oracle", 0.2), ("human-loo", -0.1)):
        r = base.assign(model="reference", strategy=name, budget=1, params_b=np.nan)
        r["js"] = r["js"] + shift
        if name.startswith("human"):
            r[["accuracy", "r2", "ece", "f1_weighted", "uar"]] = np.nan
        refs.append(r)
    return pd.concat([summary, *refs], ignore_index=True)


@pytest.fixture(scope="module")
def tables():
    man = manifest_df(n=24, seed=9)
    preds = cells(man, strategies=STRATEGIES, budgets={"bon": [2, 4]}, models=("small", "large", "solo"))
    scores = scoring.score_predictions(man, preds, FAMILY_PARAMS)
    summary = with_references(scoring.summarise(scores, params=PARAMS))
    return {
        "manifest": man,
        "scores": scores,
        "summary": summary,
        "ci": stats.bootstrap_ci(scores, metrics=["js", "accuracy"], params=PARAMS, n_resamples=50, per_bin=True),
        "gains": scoring.gain_over_baseline(summary, "js"),
        "gain_ci": scaling.gain_intervals(scores, "js", PARAMS, n_resamples=200),
        "reliability": scoring.reliability(scores, params=PARAMS),
    }


FIGURES = {
    "heatmap": lambda t: plots.metric_heatmap(t["summary"], "js", t["ci"]),
    "heatmap_accuracy": lambda t: plots.metric_heatmap(t["summary"], "accuracy"),
    "by_ambiguity": lambda t: plots.metric_vs_ambiguity(t["summary"], "bc"),
    "by_ambiguity_ci": lambda t: plots.metric_vs_ambiguity(t["summary"], "js", ci=t["ci"]),
    "interaction": lambda t: scaling.interaction(t["gains"]),
    "interaction_families": lambda t: scaling.interaction(
        t["gain_ci"], families=scaling.model_families(FAMILY_PARAMS, ["small", "large", "solo"])
    ),
    "compute": lambda t: scaling.compute_curves(t["summary"], "js"),
    "reliability": lambda t: distributions.reliability_diagrams(t["reliability"]),
    "entropy": lambda t: distributions.ambiguity_distribution(t["manifest"]),
}


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_renders_to_pdf_and_png(tables, tmp_path, name):
    fig = FIGURES[name](tables)
    assert isinstance(fig, Figure)
    assert any(ax.has_data() for ax in fig.axes)
    paths = plots.save_figure(fig, tmp_path / name, PARAMS)
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    pdf, png = paths
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_save_figure_is_byte_identical_on_rerun(tables, tmp_path):
    a = plots.save_figure(FIGURES["by_ambiguity"](tables), "a", folder=tmp_path / "one")
    b = plots.save_figure(FIGURES["by_ambiguity"](tables), "a", {"formats": ["pdf", "png"]}, folder=tmp_path / "two")
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.suffix


def test_heatmap_shows_every_model_and_strategy(tables):
    fig = plots.metric_heatmap(tables["summary"], "js")
    ax = fig.axes[0]
    # By capacity, 0.5B first; the reference rows are not a model.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["small", "solo", "large"]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert columns[0] == "baseline" and "bon\nB=2" in columns and "bon\nB=4" in columns
    image = ax.images[0].get_array()
    summary = tables["summary"]
    expected = summary[
        (summary["ambiguity"] == "all") & (summary["model"] == "small") & (summary["strategy"] == "baseline")
    ]["js"].iloc[0]
    assert image[0, 0] == pytest.approx(expected)


def test_interaction_plots_gain_against_capacity(tables):
    fig = scaling.interaction(tables["gains"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "all utterances" and any("high" in t or "medium" in t for t in titles)
    # Without families every model is its own family: w-bon's row, first column, one point per model.
    rows = sorted({s for s in tables["gains"]["strategy"]})
    ax = fig.axes[rows.index("w-bon") * len(titles)]
    assert ax.get_ylabel() == "w-bon"
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"small", "large", "solo"}
    np.testing.assert_allclose(lines["large"].get_xdata(), [7.0])


def test_interaction_draws_one_line_per_family_with_error_bars(tables):
    gains = tables["gain_ci"]
    fig = scaling.interaction(gains, families=scaling.model_families(FAMILY_PARAMS, ["small", "large", "solo"]))
    n_levels = gains["ambiguity"].nunique()
    strategies = sorted(set(gains["strategy"]))
    ax = fig.axes[strategies.index("cot") * n_levels]  # cot, all utterances
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"ladder", "single"}  # one line per family, not per model
    np.testing.assert_allclose(lines["ladder"].get_xdata(), [0.5, 7.0])
    np.testing.assert_allclose(lines["single"].get_xdata(), [3.0])  # a family of one model is a point
    want = gains[(gains["strategy"] == "cot") & (gains["ambiguity"] == "all")].set_index("model")
    np.testing.assert_allclose(lines["ladder"].get_ydata(), want.loc[["small", "large"], "gain"])
    # The families look different, and each point has its error bar (a LineCollection per line).
    assert (lines["ladder"].get_color(), lines["ladder"].get_marker()) != (
        lines["single"].get_color(),
        lines["single"].get_marker(),
    )
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    lows = sorted(round(float(min(s[:, 1])), 9) for s in segments)
    np.testing.assert_allclose(lows, sorted(want["ci_low"].round(9)))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ladder", "single"]


def test_interaction_leaves_out_references_and_models_without_capacity(tables):
    gains = pd.concat(
        [
            tables["gain_ci"],
            tables["gain_ci"].assign(model="reference"),
            tables["gain_ci"].assign(model="api", params_b=np.nan),
        ]
    )
    fig = scaling.interaction(gains)
    labels = {ln.get_label() for ax in fig.axes for ln in ax.get_lines()}
    assert "reference" not in labels and "api" not in labels
    assert "left out, no capacity: api" in fig._supxlabel.get_text()


def test_gain_intervals_match_the_summary_and_do_not_depend_on_row_order(tables):
    gains = tables["gain_ci"]
    # The point gain is the baseline's mean JS minus the strategy's, as the summary computes it.
    ref = scoring.gain_over_baseline(tables["summary"], "js").set_index(["model", "strategy", "budget", "ambiguity"])
    got = gains.set_index(["model", "strategy", "budget", "ambiguity"])
    common = got.index.intersection(ref.index)
    assert len(common) > 20
    np.testing.assert_allclose(got.loc[common, "gain"], ref.loc[common, "gain"], atol=1e-12)
    assert (got["ci_low"] <= got["gain"] + 1e-12).all() and (got["gain"] <= got["ci_high"] + 1e-12).all()
    shuffled = tables["scores"].sample(frac=1.0, random_state=3)
    again = scaling.gain_intervals(shuffled, "js", PARAMS, n_resamples=200)
    pd.testing.assert_frame_equal(again, gains)
    assert "reference" not in set(gains["model"])


def test_gain_interval_of_a_constant_difference_is_that_difference():
    man = manifest_df(n=12, seed=2)
    scores = scoring.score_predictions(man, cells(man, strategies=("baseline", "cot"), models=("small",)), PARAMS)
    cot = scores["strategy"] == "cot"
    base = scores[scores["strategy"] == "baseline"].set_index("utt_id")["js"]
    scores.loc[cot, "js"] = scores.loc[cot, "utt_id"].map(base).to_numpy() - 0.05  # 0.05 closer everywhere
    g = scaling.gain_intervals(scores, "js", PARAMS, n_resamples=100)
    np.testing.assert_allclose(g[["gain", "ci_low", "ci_high"]].to_numpy(), 0.05, atol=1e-12)


def test_metric_vs_ambiguity_draws_labelled_references_and_ci_bands(tables):
    fig = plots.metric_vs_ambiguity(tables["summary"], "js", ci=tables["ci"])
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert {"uniform", "label-prior", "hard-oracle", "human-loo"} <= set(lines)
    assert "reference" not in {a.get_title() for a in fig.axes}  # references are lines, not a panel
    texts = {t.get_text() for t in ax.texts}
    assert {"uniform", "label-prior", "hard-oracle", "human-loo"} <= texts
    s = tables["summary"]
    uni = s[(s["model"] == "reference") & (s["strategy"] == "uniform") & (s["ambiguity"] != "all")]
    np.testing.assert_allclose(lines["uniform"].get_ydata(), uni.sort_values("ambiguity_rank")["js"])
    # One confidence band per strategy line (the references have no per-bin CI rows here).
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(STRATEGIES)
    ci = tables["ci"]
    base_ci = ci[
        (ci["model"] == ax.get_title())
        & (ci["strategy"] == "baseline")
        & (ci["metric"] == "js")
        & (ci["ambiguity"] != "all")
    ].sort_values("ambiguity_rank")
    ys = np.concatenate([p.vertices[:, 1] for p in bands[0].get_paths()])
    assert np.isclose(ys.min(), base_ci["ci_low"].min()) and np.isclose(ys.max(), base_ci["ci_high"].max())


def test_metric_vs_ambiguity_leaves_out_a_reference_without_the_metric(tables):
    fig = plots.metric_vs_ambiguity(tables["summary"], "accuracy")
    labels = {ln.get_label() for ln in fig.axes[0].get_lines()}
    assert "uniform" in labels and "human-loo" not in labels


def test_metric_vs_ambiguity_says_when_the_uniform_reference_is_missing(tables):
    s = tables["summary"]
    fig = plots.metric_vs_ambiguity(s[s["model"] != "reference"], "js")
    assert "uniform reference missing" in {t.get_text() for t in fig.axes[0].texts}


def test_compute_curves_use_total_compute_and_count_verifier_calls(tables):
    summary = tables["summary"]
    compute = scoring.compute_table(tables["scores"])
    compute = compute.assign(
        tokens_total=compute["prompt_tokens"] + compute["gen_tokens"] + 100.0, flops_est=1e9 * compute["gen_tokens"]
    )
    compute["verifier_calls"] = 2.0
    fig = scaling.compute_curves(summary.drop(columns="verifier_calls"), "js", compute=compute)
    xlabels = [ax.get_xlabel() for ax in fig.axes[:3]]
    assert xlabels[0].startswith("tokens processed") and "verifier" in xlabels[1] and "estimate" in xlabels[2]
    line = next(ln for ln in fig.axes[1].get_lines() if ln.get_label() == "cot")
    cell = compute[(compute["model"] == "small") & (compute["strategy"] == "cot")]
    np.testing.assert_allclose(line.get_xdata(), cell["model_calls"] + 2.0)
    assert "reference" not in {ax.get_ylabel().split("\n")[-1] for ax in fig.axes}
    # Without the new columns, today's two axes.
    old = scaling.compute_curves(summary.drop(columns="verifier_calls"), "js")
    assert [ax.get_xlabel() for ax in old.axes][:2] == [
        "generated tokens per utterance\n(model only)",
        "model calls per utterance",
    ]


def test_entropy_distribution_counts_each_utterance_once(tables):
    fig = distributions.ambiguity_distribution(tables["scores"])  # scores repeat utterances per cell
    total = sum(p.get_height() for p in fig.axes[0].patches)
    assert total == len(tables["manifest"])


def test_ambiguity_distribution_takes_manifests(tables):
    mm = pytest.importorskip("ambiemo.data.manifest")
    meta = {
        "label_set": {"name": "four", "labels": ["neutral", "happy", "angry", "sad"]},
        "ambiguity": {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]},
    }
    fig = distributions.ambiguity_distribution({"demo": mm.Manifest(tables["manifest"], meta)})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["clear", "low", "medium", "high"]


def test_every_strategy_readout_and_reference_looks_different():
    from ambiemo.report import figures as plots
    from ambiemo.report import style

    names = list(style.ENCODINGS)
    looks = [tuple(str(v) for v in (e["color"], e["marker"], e["linestyle"])) for e in style.encodings(names).values()]
    assert len(set(looks)) == len(looks)
    # The demo's figure 3 bug: alm-v and w-bon shared colour and marker once nine strategies wrapped the palette.
    st = plots._styles(["baseline", *names, "new-strategy"])
    assert (st["alm-v"]["color"], st["alm-v"]["marker"]) != (st["w-bon"]["color"], st["w-bon"]["marker"])
    assert st["new-strategy"]["color"] not in style.FAMILY_COLOUR.values()
    # Okabe & Ito's published colours, a colour-blind-safe palette.
    assert style.OKABE_ITO["vermilion"] == "#D55E00" and style.OKABE_ITO["bluish green"] == "#009E73"


def test_every_registered_strategy_and_readout_has_a_stated_encoding():
    import ambiemo.strategies  # noqa: F401  (registers every strategy)
    from ambiemo.report import style
    from ambiemo.strategies.base import STRATEGIES

    classes = [STRATEGIES.get(n) for n in STRATEGIES.names()]
    names = {row for cls in classes for row in (cls.name, *cls.readouts)}
    assert names and names <= set(style.ENCODINGS), sorted(names - set(style.ENCODINGS))
    assert set(style.REFERENCES) == {
        "uniform",
        "label-prior",
        "hard-oracle",
        "human-loo",
        "human-split-half",
        "human-loo-counts",
    }


def test_model_families_look_different_and_keep_their_look():
    from ambiemo.report import style

    names = [f"family-{i:02d}" for i in range(24)]
    looks = style.model_family_encodings(names)
    assert len({(e["color"], e["marker"], str(e["linestyle"])) for e in looks.values()}) == len(names)
    # A family's look depends on the set of families, not on the order they are given in.
    assert style.model_family_encodings(list(reversed(names))) == looks
    assert scaling.model_families({"models": {"a": {"family": "x"}, "b": {}}}, ["a", "b", "c"]) == {
        "a": "x",
        "b": "b",
        "c": "c",
    }
