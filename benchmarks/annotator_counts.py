"""The annotator-count curve of a real corpus: soft-label entropy and the human split-half ceiling
against the number of raters drawn per utterance (``ambiemo.stats.annotators``), for docs/conventions.md.

    python benchmarks/annotator_counts.py --root ../shared/data/crema-d            # 500 clips, 5 redraws
    python benchmarks/annotator_counts.py --root ../shared/data/crema-d --full     # every clip, 20 redraws

It prepares CREMA-D's voice-only votes with the project's params (its ``datasets.crema-d`` entry, the
root replaced) and prints one row per k: mean and interval of the entropy and of the ceiling, and how
many clips have at least k raters.
"""

from __future__ import annotations

import argparse
import copy

import pandas as pd

from ambiemo.core.config import load_params
from ambiemo.data import prepare_dataset
from ambiemo.stats.annotators import annotator_curve, raters_from_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the CREMA-D folder holding processedResults/")
    ap.add_argument("--full", action="store_true", help="every clip and 20 redraws (default: 500 clips, 5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    params = copy.deepcopy(load_params("params.yaml"))
    params["datasets"]["crema-d"]["root"] = args.root
    m = prepare_dataset("crema-d", params, allow_missing_audio=True)
    df = m.df if args.full else m.df.head(500)
    labels = list(m.labels)
    raters, frac = raters_from_counts(df[[f"votes_{x}" for x in labels]].to_numpy(dtype=float))
    empty = pd.DataFrame(columns=["dataset", "model", "strategy", "budget", "utt_id", *[f"p_{x}" for x in labels]])
    table = annotator_curve(
        raters, df["utt_id"].tolist(), empty, "crema-d", labels, repeats=20 if args.full else 5, seed=args.seed
    )
    wide = table.pivot_table(index="k", columns="quantity", values=["mean", "ci_low", "ci_high"])
    out = pd.DataFrame(
        {
            "clips_with_k": table.groupby("k")["n_with_k"].first(),
            "entropy_bits": wide[("mean", "entropy_bits")],
            "entropy_ci": wide[("ci_low", "entropy_bits")].round(3).astype(str)
            + "–"
            + wide[("ci_high", "entropy_bits")].round(3).astype(str),
            "ceiling_js": wide[("mean", "ceiling_js")],
            "ceiling_ci": wide[("ci_low", "ceiling_js")].round(3).astype(str)
            + "–"
            + wide[("ci_high", "ceiling_js")].round(3).astype(str),
        }
    )
    print(f"clips: {len(df)} (fractional vote counts left out: {int(frac.sum())}), labels: {labels}")
    print(out.round(3).to_string())


if __name__ == "__main__":
    main()
