"""The tables a run writes: predictions rows and candidates in a fixed order, and what they say as a whole."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ambiemo.core.failures import apply_failure_policy
from ambiemo.inference.candidates import candidates_frame
from ambiemo.inference.predictions import predicted_label, prediction_columns
from ambiemo.strategies import Cost, Row, Strategy

# Fewer utterances than this with the same answer are no sign that the audio is ignored.
MIN_IDENTICAL = 3


def identical_answers(strat: Strategy, results: dict[int, list[Row]], budgets: list[int]) -> dict[str, Any] | None:
    """When every answered utterance got the identical answer (candidate texts and distribution of the
    first readout at the largest budget), what it was; else None."""
    label, budget = strat.row_labels()[0], max(budgets)
    prints, texts = set(), []
    n = 0
    for i in sorted(results):
        row = next((r for r in results[i] if r.strategy == label and r.budget == budget), None)
        if row is None:
            continue
        texts = [str(c.get("text", "")) for c in row.candidates]
        p = None if row.p is None else [round(float(x), 9) for x in row.p]
        prints.add(json.dumps([texts, p]))
        n += 1
        if len(prints) > 1:
            return None
    if n < MIN_IDENTICAL:
        return None
    return {"n_utterances": n, "readout": label, "budget": budget, "answer": texts[0][:500] if texts else ""}


def tables(
    strat: Strategy,
    df: pd.DataFrame,
    budgets: list[int],
    results: dict[int, list[Row]],
    failures: dict[str, str],
    labels: tuple[str, ...],
    model_key: str,
    policy: str,
    record_wall_s: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The predictions rows (readout, then budget, then manifest order), the candidates table (in the
    same order, then candidate order) and parse failures per readout@budget. ``record_wall_s`` false:
    the measured seconds are NaN (params ``inference.record_wall_s``)."""
    seconds = (lambda s: s) if record_wall_s else (lambda s: float("nan"))
    rows: list[dict[str, Any]] = []
    cands: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    parse_failures: dict[str, int] = {}
    for label in strat.row_labels():
        for b in budgets:
            for i in range(len(df)):
                utt_id = str(df.at[i, "utt_id"])
                found = [r for r in results.get(i, []) if r.strategy == label and r.budget == b]
                row = found[0] if found else Row(label, b, None, [], Cost())  # a failed utterance
                p, ok = apply_failure_policy(row.p, len(labels), policy, labels)
                if not ok and utt_id not in failures:
                    parse_failures[f"{label}@{b}"] = parse_failures.get(f"{label}@{b}", 0) + 1
                c = row.cost
                rows.append(
                    {
                        "utt_id": utt_id,
                        "dataset": str(df.at[i, "dataset"]),
                        "model": model_key,
                        "strategy": label,
                        "budget": b,
                        **{f"p_{x}": float(v) for x, v in zip(labels, p, strict=True)},
                        "pred_label": predicted_label(p, ok, labels),
                        "parsed_ok": ok,
                        "n_candidates": len(row.candidates),
                        "model_calls": c.model_calls,
                        "verifier_calls": c.verifier_calls,
                        "prompt_tokens": _tokens(c.prompt_tokens),
                        "gen_tokens": c.gen_tokens,
                        "wall_s": seconds(c.wall_s),
                        "verifier_prompt_tokens": pd.NA
                        if c.verifier_prompt_tokens is None
                        else c.verifier_prompt_tokens,
                        "verifier_gen_tokens": c.verifier_gen_tokens,
                        "verifier_wall_s": seconds(c.verifier_wall_s),
                    }
                )
                cands.append((rows[-1], row.candidates))
    return pd.DataFrame(rows, columns=prediction_columns(labels)), candidates_frame(cands, labels), parse_failures


def _tokens(n: int | None) -> Any:
    return pd.NA if n is None else n


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Usage spent between two snapshots (a model object passed in may have served earlier runs)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}
