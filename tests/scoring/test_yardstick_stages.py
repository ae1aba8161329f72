"""The aggregate and stats stages write the calibration, annotators and paired-after-calibration tables."""

from __future__ import annotations

import copy

import numpy as np
from synthetic import LABELS, PARAMS, candidates_table, manifest_df, predictions_df

from ambiemo import scoring
from ambiemo.core.layout import Layout
from ambiemo.data import manifest as mm
from ambiemo.data.labels import LabelSet
from ambiemo.inference.predictions import write_predictions

BINS = {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}


def test_stages_write_the_calibration_and_annotator_tables(tmp_path):
    from ambiemo.scoring.stages import aggregate_run
    from ambiemo.stats.stage import stats_run

    params = copy.deepcopy(PARAMS)
    params.update(paths={"results": str(tmp_path / "results")}, seed=0)
    params["run"] = {"datasets": ["demo"], "models": ["small"], "strategies": ["baseline", "w-bon"]}
    params["stats"] = {**params["stats"], "annotator_repeats": 3, "permutation_resamples": 50}
    layout = Layout.from_params(params)
    man = manifest_df(n=24, n_speakers=6)
    mm.write_manifest(man, layout.manifest("demo"), label_set=LabelSet("four", LABELS), ambiguity=BINS, exclusions={})
    for i, strategy in enumerate(("baseline", "w-bon")):
        df = predictions_df(man, "small", strategy, seed=i, fail_rate=0.0, quality=0.3 + 0.4 * i)
        kw = {"labels": LABELS, "label_set": "four", "provenance": {"model": "test"}}
        write_predictions(df, layout.predictions("demo", "small", strategy), candidates=candidates_table(df), **kw)
    scoring.score_run(params).write(params)

    agg = aggregate_run(params)
    cal = agg["calibration"]
    assert layout.summary("calibration").is_file()
    assert set(cal["method"]) == {"temperature", "temperature+prior"}
    overall = cal[cal["ambiguity"] == "all"]
    assert len(overall) == 2 * 2 and (overall["folds"] == 5).all()
    assert (overall["js_calibrated"] <= overall["js_raw"] + 0.05).all()
    conv = agg["conventions"]
    assert {"aer-llm/js", "scaling-ambiguity-ser/ece"} <= set(conv["convention"])

    st = stats_run(params)
    ann = st["annotators"]
    assert layout.stats("annotators").is_file() and layout.stats("paired_calibrated").is_file()
    max_k = int(man["n_raters"].max())
    assert sorted(ann["k"].unique()) == list(range(1, max_k + 1))
    assert {"entropy_bits", "ceiling_js", "js", "tau", "comparisons_agree"} <= set(ann["quantity"])
    # With every rater, each cell's JS is the scores' JS: the all-raters draw is the manifest.
    full = ann[(ann["quantity"] == "js") & (ann["k"] == max_k)].set_index("strategy")["mean"]
    scores, _ = scoring.read_scores(layout.scores)
    for strategy in ("baseline", "w-bon"):
        want = scores[(scores["strategy"] == strategy) & (scores["model"] == "small")]["js"].mean()
        assert np.isclose(full[strategy], want)
    paired = st["paired_calibrated"]
    assert set(paired["metric"]) == {"js"} and (paired["strategy"] == "w-bon").all()
