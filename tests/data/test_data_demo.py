"""The synthetic demo corpus, built from scratch: design, audio, determinism, manifest, CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from ambiemo.data import prepare_dataset
from ambiemo.data.audio import load_audio
from ambiemo.data.demo import EMOTIONS, LEVELS, RATERS, build_demo_corpus, design_corpus, design_digest, synthesise
from ambiemo.data.manifest import read_manifest

SEED = 20260203
PARAMS = {
    "seed": SEED,
    "label_sets": {"four": {"labels": list(EMOTIONS), "merge": {"excited": "happy"}}},
    "datasets": {"demo": {"loader": "demo", "root": "demo", "label_set": "four", "n_utterances": 32, "seed": None}},
    "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    build_demo_corpus(root, 32, SEED)
    return root


def test_design_is_balanced_and_follows_its_levels():
    clips = design_corpus(32, SEED)
    assert Counter(c.dominant for c in clips) == {e: 8 for e in EMOTIONS}
    assert Counter((c.weight, c.confusion) for c in clips) == {level: 8 for level in LEVELS}
    for c in clips:
        assert RATERS[0] <= len(c.votes) <= RATERS[1]
        assert set(c.votes) <= set(EMOTIONS)
        assert sum(c.vote_distribution().values()) == pytest.approx(1.0)
        if c.weight == 1.0 and c.confusion == 0.0:
            assert set(c.votes) == {c.dominant}  # pure clips are unanimous by construction
    assert design_corpus(32, SEED) == clips
    assert design_corpus(32, SEED + 1) != clips


def test_votes_follow_the_designed_distribution():
    # Over many clips, the share of votes for each clip's dominant emotion matches the design.
    clips = design_corpus(2000, 7)
    for level in LEVELS[1:]:
        sel = [c for c in clips if (c.weight, c.confusion) == level]
        observed = np.mean([v == c.dominant for c in sel for v in c.votes])
        expected = (1 - level[1]) * level[0] + level[1] / len(EMOTIONS)
        assert observed == pytest.approx(expected, abs=0.02)


def test_built_corpus_audio(demo_root):
    wavs = sorted((demo_root / "wav").glob("*.wav"))
    assert len(wavs) == 32
    for path in wavs:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.0 < info.duration < 6.0
    wav = load_audio(wavs[0])
    assert wav.dtype == np.float32 and wav.ndim == 1 and 0.01 < np.abs(wav).max() <= 1.0
    design = json.loads((demo_root / "design.json").read_text())
    assert design["settings"]["seed"] == SEED and len(design["clips"]) == 32
    rows = (demo_root / "ratings.csv").read_text().splitlines()
    assert rows[0] == "utt_id,rater,emotion" and len(rows) - 1 == sum(len(c["votes"]) for c in design["clips"])


def test_prosody_separates_emotions():
    """Same sentence and voice: 'happy' settings give a higher pitch than 'sad', 'angry' more energy."""
    import librosa

    from ambiemo.data.demo import PROSODY

    text = "We are meeting at the usual place at six."
    sr, (happy, sad, angry) = synthesise([(text, "en-us+m3", PROSODY[e], 1) for e in ("happy", "sad", "angry")])

    def f0(x):
        return np.median(librosa.yin(x.astype(np.float32) / 32768, fmin=50, fmax=400, sr=sr))

    def rms(x):
        return np.sqrt(np.mean((x.astype(np.float64) / 32768) ** 2))

    assert f0(happy) > 1.3 * f0(sad)
    assert rms(angry) > 2 * rms(sad)
    assert len(sad) > 1.2 * len(happy)  # slower


def test_rebuild_is_byte_identical_and_skips_when_complete(demo_root, tmp_path):
    build_demo_corpus(tmp_path, 32, SEED)
    assert design_digest(tmp_path) == design_digest(demo_root)
    stamp = (tmp_path / "wav" / "demo_000.wav").stat().st_mtime_ns
    build_demo_corpus(tmp_path, 32, SEED)
    assert (tmp_path / "wav" / "demo_000.wav").stat().st_mtime_ns == stamp
    (tmp_path / "wav" / "demo_005.wav").unlink()  # an incomplete corpus is rebuilt
    build_demo_corpus(tmp_path, 32, SEED)
    assert design_digest(tmp_path) == design_digest(demo_root)


def test_prepare_demo_manifest(demo_root, tmp_path):
    m = prepare_dataset("demo", PARAMS, root=demo_root, out=tmp_path / "demo.parquet")
    assert len(m) == 32 and m.labels == EMOTIONS and m.exclusions == {}
    df = m.df
    clips = {c.utt_id: c for c in design_corpus(32, SEED)}
    for row in df.itertuples():
        c = clips[row.utt_id]
        assert row.intended == c.dominant and row.n_raters == len(c.votes) and row.blend == c.blend
        assert row.transcript == c.text and row.duration_s > 1.0
        expected = np.array([c.votes.count(e) for e in EMOTIONS]) / len(c.votes)
        np.testing.assert_allclose([getattr(row, f"p_{e}") for e in EMOTIONS], expected)
    pure = df[df["confusion"] == 0.0]
    assert (pure["ambiguity"] == "clear").all()
    # the design spans the ambiguity range: every bin is used
    assert set(df["ambiguity"]) == {"clear", "low", "medium", "high"}
    assert m.meta["provenance"]["seed"] == SEED
    assert read_manifest(tmp_path / "demo.parquet").df.equals(df)
    # an unchanged rerun writes the same bytes (DVC then sees nothing to do downstream)
    prepare_dataset("demo", PARAMS, root=demo_root, out=tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "demo.parquet").read_bytes()


def test_cli_prepare_and_stats(demo_root, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from ambiemo.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    out = tmp_path / "m.parquet"
    runner = CliRunner()
    r = runner.invoke(
        app, ["data", "prepare", "demo", "--root", str(demo_root), "--out", str(out), "--params", str(params)]
    )
    assert r.exit_code == 0, r.output
    assert "utterances     32" in r.output and "clear" in r.output
    r = runner.invoke(app, ["data", "stats", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    m = read_manifest(out)
    assert s["utterances"] == 32 and s["intended"]["distribution"] == {e: 8 for e in EMOTIONS}
    assert s["share_unanimous"] == pytest.approx((m.df["n_distinct"] == 1).mean(), abs=1e-4)
    assert sum(s["ambiguity"]["counts"].values()) == 32
    assert s["raters_per_utterance"]["min"] >= RATERS[0]
    r = runner.invoke(app, ["data", "list", "--params", str(params)])
    assert r.exit_code == 0 and r.output.split()[:2] == ["demo", "loader=demo"], r.output
    r = runner.invoke(app, ["data", "prepare", "nope", "--params", str(params)])
    assert r.exit_code == 1 and "datasets has no 'nope'" in r.output


def test_quantile_bins_from_params(demo_root):
    p = {**PARAMS, "ambiguity": {"method": "quantile", "bins": ["lower", "upper"], "quantiles": [0.5]}}
    m = prepare_dataset("demo", p, root=demo_root)
    h = m.df["entropy_bits"].to_numpy()
    edge = float(np.median(h[h > 0]))
    assert m.meta["ambiguity"] == {
        "method": "quantile",
        "edges": [edge],
        "bins": ["clear", "lower", "upper"],
        "quantiles": [0.5],
    }
    assert (m.df.loc[h > edge, "ambiguity"] == "upper").all()
    assert (m.df.loc[(h > 0) & (h <= edge), "ambiguity"] == "lower").all()
    # a dataset's own `ambiguity` entry overrides the shared one
    p["datasets"] = {
        "demo": {**PARAMS["datasets"]["demo"], "ambiguity": {"method": "fixed", "bins": ["some"], "edges_bits": []}}
    }
    m = prepare_dataset("demo", p, root=demo_root)
    assert set(m.df["ambiguity"]) == {"clear", "some"}
