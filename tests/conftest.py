"""Shared test fixtures. ``../shared`` (beside the checkout) holds real data for tests only;
tests that need it skip with a reason where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"no shared/ folder beside the checkout ({SHARED.name} absent): real-data test skipped")
    return SHARED
