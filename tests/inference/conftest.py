"""Fixtures of the inference tests: the tiny corpus with audio that the fake model answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import write_tiny_manifest


@pytest.fixture(scope="session")
def manifest(tmp_path_factory) -> Path:
    """Five utterances of half a second of noise, with votes (``synthetic.write_tiny_manifest``)."""
    return write_tiny_manifest(tmp_path_factory.mktemp("tiny"))
