"""Model families for the interaction models' capacity term (``ambiemo.stats.regression``'s
docstring says why capacity is centred within families and when the family term is left out)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

FAMILY_TERMS = ("fixed", "none")


def families(models: pd.Series, params: Mapping[str, Any] | None) -> pd.Series:
    """Each row's model family: params ``models.<key>.family``, else the model key itself (a model
    without a family, or not in params, is its own family)."""
    specs = dict((params or {}).get("models") or {})

    def family(key: Any) -> str:
        spec = specs.get(str(key))
        named = spec.get("family") if isinstance(spec, Mapping) else None
        return str(named) if named else str(key)

    lookup = {key: family(key) for key in pd.unique(models)}
    return models.map(lookup).astype(str)


def family_term(d: pd.DataFrame, cap: pd.Series, params: Mapping[str, Any] | None, asked: str) -> tuple[bool, str]:
    """Whether the family fixed effects enter (and ``d["log10_capacity"]`` is centred within
    families), and the note that says which family specification was used and why."""
    d["family"] = families(d["model"], params)
    ladders = d.groupby("family")["params_b"].nunique()
    with_ladder = sorted(ladders[ladders >= 2].index)
    alone = sorted(m for m in d["model"].astype(str).unique() if not _named_family(m, params))
    if asked == "none":
        return False, "family term: none (params stats.family_term)"
    if d["log10_capacity"].nunique() < 2:
        return False, "family term: none (one capacity only)"
    if len(ladders) == 1:
        return False, f"family term: none (one family only, {ladders.index[0]}: the capacity slope is within it)"
    if not with_ladder:
        message = (
            f"family term: none, within-family capacity slope not identified: no family has two capacities "
            f"({len(ladders)} families, one capacity each); fitted without a family term, so the capacity "
            "terms mix differences within and between families"
        )
        warnings.warn(message, UserWarning, stacklevel=4)
        return False, message
    d["log10_capacity"] = cap - cap.groupby(d["family"]).transform("mean")
    single = sorted(set(ladders.index) - set(with_ladder))
    note = (
        f"family term: fixed (family intercepts, one capacity slope shared by the families, log10 capacity "
        f"centred within each family); {len(ladders)} families, {len(with_ladder)} with two or more "
        f"capacities ({', '.join(with_ladder)})"
    )
    if single:
        note += f"; families with one capacity inform their intercept only ({', '.join(single)})"
    if alone:
        note += f"; models without a params family are their own family ({', '.join(alone)})"
    return True, note


def _named_family(model: str, params: Mapping[str, Any] | None) -> bool:
    spec = dict((params or {}).get("models") or {}).get(model)
    return isinstance(spec, Mapping) and bool(spec.get("family"))
