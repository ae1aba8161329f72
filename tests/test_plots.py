"""Each figure renders to PDF and PNG from small synthetic tables; files are real and stable."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from synthetic import PARAMS, cells, manifest_df

from ambiemo import plots, scoring, stats

STRATEGIES = ("baseline", "cot", "bon", "w-bon", "self-consistency")


@pytest.fixture(scope="module")
def tables():
    man = manifest_df(n=24, seed=9)
    scores = scoring.score_predictions(man, cells(man, strategies=STRATEGIES, budgets={"bon": [2, 4]}), PARAMS)
    summary = scoring.summarise(scores, params=PARAMS)
    return {
        "manifest": man,
        "scores": scores,
        "summary": summary,
        "ci": stats.bootstrap_ci(scores, metrics=["js", "accuracy"], params=PARAMS, n_resamples=50),
        "gains": scoring.gain_over_baseline(summary, "js"),
        "reliability": scoring.reliability(scores, params=PARAMS),
    }


FIGURES = {
    "heatmap": lambda t: plots.metric_heatmap(t["summary"], "js", t["ci"]),
    "heatmap_accuracy": lambda t: plots.metric_heatmap(t["summary"], "accuracy"),
    "by_ambiguity": lambda t: plots.metric_vs_ambiguity(t["summary"], "bc"),
    "interaction": lambda t: plots.interaction(t["gains"]),
    "compute": lambda t: plots.compute_curves(t["summary"], "js"),
    "reliability": lambda t: plots.reliability_diagrams(t["reliability"]),
    "entropy": lambda t: plots.ambiguity_distribution(t["manifest"]),
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
    assert [t.get_text() for t in ax.get_yticklabels()] == ["small", "large"]  # by capacity, 0.5B first
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert columns[0] == "baseline" and "bon\nB=2" in columns and "bon\nB=4" in columns
    image = ax.images[0].get_array()
    summary = tables["summary"]
    expected = summary[
        (summary["ambiguity"] == "all") & (summary["model"] == "small") & (summary["strategy"] == "baseline")
    ]["js"].iloc[0]
    assert image[0, 0] == pytest.approx(expected)


def test_interaction_plots_gain_against_capacity(tables):
    fig = plots.interaction(tables["gains"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "all utterances" and any("high" in t or "medium" in t for t in titles)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "w-bon")
    np.testing.assert_allclose(line.get_xdata(), [0.5, 7.0])


def test_entropy_distribution_counts_each_utterance_once(tables):
    fig = plots.ambiguity_distribution(tables["scores"])  # scores repeat utterances per cell
    total = sum(p.get_height() for p in fig.axes[0].patches)
    assert total == len(tables["manifest"])


def test_ambiguity_distribution_takes_manifests(tables):
    mm = pytest.importorskip("ambiemo.manifest")
    meta = {
        "label_set": {"name": "four", "labels": ["neutral", "happy", "angry", "sad"]},
        "ambiguity": {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]},
    }
    fig = plots.ambiguity_distribution({"demo": mm.Manifest(tables["manifest"], meta)})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["clear", "low", "medium", "high"]


def test_every_strategy_readout_and_reference_looks_different():
    from ambiemo import plots, style

    names = list(style.ENCODINGS)
    looks = [tuple(str(v) for v in (e["color"], e["marker"], e["linestyle"])) for e in style.encodings(names).values()]
    assert len(set(looks)) == len(looks)
    # The demo's figure 3 bug: alm-v and w-bon shared colour and marker once nine strategies wrapped the palette.
    st = plots._styles(["baseline", *names, "new-strategy"])
    assert (st["alm-v"]["color"], st["alm-v"]["marker"]) != (st["w-bon"]["color"], st["w-bon"]["marker"])
    assert st["new-strategy"]["color"] not in style.FAMILY_COLOUR.values()
    # Okabe & Ito's published colours, a colour-blind-safe palette.
    assert style.OKABE_ITO["vermilion"] == "#D55E00" and style.OKABE_ITO["bluish green"] == "#009E73"
