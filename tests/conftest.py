"""Shared test fixtures. ``../shared`` (beside the checkout) holds real data for tests only;
tests that need it skip with a reason where it is absent, and are marked ``real_data``.

Helper modules beside this file (``fake_api``, ``fake_hub``, ``synthetic``) are importable from
every test folder (pyproject's ``pythonpath``); a test module never imports another test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_api import GEMINI_KEY, OPENAI_KEY, fake_servers, set_api_env

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for ``shared_dir`` reads the real corpora: mark it ``real_data``."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"no shared/ folder beside the checkout ({SHARED.name} absent): real-data test skipped")
    return SHARED


@pytest.fixture
def fake_api():
    """``start(reply) -> FakeAPI``: fake HTTP servers on 127.0.0.1 (tests/fake_api.py), closed after the test."""
    yield from fake_servers()


@pytest.fixture
def api_env(monkeypatch):
    """Fake API keys in the environment and nothing that would send the SDKs elsewhere than 127.0.0.1.
    API-route modules use it for every test: ``pytestmark = pytest.mark.usefixtures("api_env")``."""
    set_api_env(monkeypatch, OPENAI_KEY, GEMINI_KEY)
