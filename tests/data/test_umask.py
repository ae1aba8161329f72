"""Tables written through a temporary name (manifests, predictions, candidates) get the mode every other file
of the user gets: 0o666 less the umask, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from ambiemo.core.tables import current_umask, write_table


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_mask
    os.umask(before)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o027, 0o640)])
def test_a_written_table_has_the_mode_a_plain_open_gives(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    path = write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet", {"x": 1})
    plain = tmp_path / "plain"
    plain.write_text("")  # what open() makes under this umask: the independent reference
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == mode


def test_a_manifest_gets_the_users_mode(tmp_path, umask):
    import numpy as np

    from ambiemo.data.labels import AmbiguityBins, LabelSet
    from ambiemo.data.manifest import build_manifest, write_manifest

    umask(0o022)
    info = pd.DataFrame({"utt_id": ["a", "b"], "dataset": "d"})
    votes = np.array([[2.0, 0.0], [1.0, 1.0]])
    ls = LabelSet("two", ("happy", "sad"))
    df, amb = build_manifest(info, votes, np.array([2, 2]), ls, AmbiguityBins())
    path = write_manifest(df, tmp_path / "m.parquet", label_set=ls, ambiguity=amb, exclusions={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
