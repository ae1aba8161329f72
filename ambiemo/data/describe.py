"""Annotation statistics of a manifest (``ambiemo data stats``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ambiemo.data.manifest import Manifest

TIE = "(tie)"


def manifest_stats(m: Manifest) -> dict[str, Any]:
    """Counts and shares that describe a manifest's votes; JSON-serialisable."""
    df = m.df
    n = len(df)
    votes = m.votes()
    out: dict[str, Any] = {
        "dataset": m.dataset,
        "label_set": {"name": m.label_set, "labels": list(m.labels)},
        "vote_policy": m.meta.get("vote_policy"),
        "multi_label": m.meta.get("multi_label"),
        "utterances": n,
        "speakers": int(df["speaker"].replace("", np.nan).nunique()),
        "audio": {
            "with_audio": int((df["audio_path"] != "").sum()),
            "missing": int(m.meta.get("audio", {}).get("missing", 0)),
            "hours": round(float(np.nansum(df["duration_s"].to_numpy(dtype=float))) / 3600, 3),
        },
        "exclusions": dict(m.exclusions),
        "excluded_total": int(sum(m.exclusions.values())),
        "dropped_votes": dict(m.meta.get("dropped_votes", {})),
        "categories_outside_label_set": dict(m.meta.get("categories_outside_label_set", {})),
        "rules": {k: m.meta[k] for k in ("secondary_weight", "duplicate_raters") if k in m.meta},
        "source": dict(m.meta.get("source", {})),
    }
    if n == 0:
        return out
    raters = df["n_raters"].to_numpy()
    out["raters_per_utterance"] = {
        "mean": round(float(raters.mean()), 3),
        "min": int(raters.min()),
        "max": int(raters.max()),
    }
    out["votes_total"] = round(float(votes.sum()), 3)
    majority = df["majority"].replace("", TIE)
    out["majority"] = {k: int((majority == k).sum()) for k in [*m.labels, TIE]}
    out["share_vote_per_label"] = {
        x: round(float(v), 4) for x, v in zip(m.labels, votes.sum(axis=0) / votes.sum(), strict=True)
    }
    out["share_unanimous"] = round(float((df["n_distinct"] == 1).mean()), 4)
    out["share_majority_tie"] = round(float(df["majority_tie"].mean()), 4)
    h = df["entropy_bits"].to_numpy(dtype=float)
    out["entropy_bits"] = {
        "mean": round(float(h.mean()), 4),
        "median": round(float(np.median(h)), 4),
        "max_possible": round(float(np.log2(len(m.labels))), 4),
    }
    out["ambiguity"] = {
        "method": m.meta["ambiguity"].get("method"),
        "edges": m.meta["ambiguity"].get("edges"),
        "counts": {b: int((df["ambiguity"] == b).sum()) for b in m.ambiguity_order()},
    }
    known = df["intended"].isin(m.labels).to_numpy()
    if known.any():
        idx = np.array([m.labels.index(x) for x in df.loc[known, "intended"]])
        v = votes[known]
        p = m.distributions()[known]
        out["intended"] = {
            "utterances": int(known.sum()),
            "distribution": {x: int((df.loc[known, "intended"] == x).sum()) for x in m.labels},
            # share of all votes that name the intended emotion
            "vote_agreement": round(float(v[np.arange(len(idx)), idx].sum() / v.sum()), 4),
            # mean over utterances of the intended emotion's share of its votes
            "mean_p_intended": round(float(p[np.arange(len(idx)), idx].mean()), 4),
            # share of utterances whose (untied) majority is the intended emotion
            "majority_agreement": round(float((df.loc[known, "majority"] == df.loc[known, "intended"]).mean()), 4),
        }
    return out


def format_stats(s: dict[str, Any]) -> str:
    """The stats as aligned plain text."""
    lines = [
        f"dataset        {s['dataset']}   label set {s['label_set']['name']}: {', '.join(s['label_set']['labels'])}",
        f"vote policy    {s['vote_policy']}   multi-label raters: {s['multi_label']}",
        f"utterances     {s['utterances']}   speakers {s['speakers']}",
        f"audio          {s['audio']['with_audio']} files, {s['audio']['hours']} h"
        + (f"; {s['audio']['missing']} missing (labels-only manifest)" if s["audio"]["missing"] else ""),
    ]
    source = dict(s.get("source", {}))
    if "layout" in source:
        lines.append(f"release        {source.pop('layout')}")
    for key, value in source.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"  {key:<26} {shown}")
    if s.get("rules"):
        lines.append("rules          " + "  ".join(f"{k} {v}" for k, v in s["rules"].items()))
    if s["exclusions"]:
        lines.append(f"excluded       {s['excluded_total']}")
        lines += [f"  {reason:<28} {count}" for reason, count in s["exclusions"].items()]
    else:
        lines.append("excluded       0")
    if s["dropped_votes"]:
        lines.append("votes dropped  " + ", ".join(f"{k} {v:g}" for k, v in s["dropped_votes"].items()))
    if s["categories_outside_label_set"]:
        lines.append("outside set    " + ", ".join(f"{k} {v:g}" for k, v in s["categories_outside_label_set"].items()))
    if not s["utterances"]:
        return "\n".join(lines)
    r = s["raters_per_utterance"]
    lines.append(f"raters/utt     mean {r['mean']:.2f}  min {r['min']}  max {r['max']}   votes {s['votes_total']:g}")
    n = s["utterances"]
    lines.append("majority       " + "  ".join(f"{k} {v} ({v / n:.1%})" for k, v in s["majority"].items()))
    lines.append("vote shares    " + "  ".join(f"{k} {v:.1%}" for k, v in s["share_vote_per_label"].items()))
    lines.append(f"unanimous      {s['share_unanimous']:.1%}   majority tied {s['share_majority_tie']:.1%}")
    e = s["entropy_bits"]
    lines.append(f"entropy bits   mean {e['mean']:.3f}  median {e['median']:.3f}  (max {e['max_possible']:.3f})")
    a = s["ambiguity"]
    edges = ", ".join(f"{x:.3f}" for x in a["edges"])
    lines.append(f"ambiguity      {a['method']} edges [{edges}]")
    lines += [f"  {b:<12} {c:>7} ({c / n:.1%})" for b, c in a["counts"].items()]
    if "intended" in s:
        i = s["intended"]
        lines.append(
            f"intended       {i['utterances']} utterances: "
            + "  ".join(f"{k} {v}" for k, v in i["distribution"].items())
        )
        lines.append(f"  votes naming the intended emotion        {i['vote_agreement']:.1%}")
        lines.append(f"  mean vote share of the intended emotion  {i['mean_p_intended']:.1%}")
        lines.append(f"  majority = intended                      {i['majority_agreement']:.1%}")
    return "\n".join(lines)
