"""A strategy's own params section (``strategies.<name>``), typed: ``StrategySettings`` and the
per-profile budgets most strategies share. A strategy class names its model as ``Settings``; the
defaults stated there are the only ones."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ambiemo.core.params import PerProfile, PositiveInt


class StrategySettings(BaseModel):
    """No settings of its own: an empty section, or none."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class BudgetSettings(StrategySettings):
    """The budget grid, per profile or one for all (params ``strategies.<name>.budgets``)."""

    budgets: PerProfile[Annotated[list[PositiveInt], Field(min_length=1)]] | None = None
