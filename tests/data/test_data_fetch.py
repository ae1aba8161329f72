"""`ambiemo data fetch crema-d` against a fake GitHub on 127.0.0.1: raw files, LFS pointers, media.

The fake serves a three-clip CREMA-D in the repository's layout: ``/raw/<path>`` answers
like raw.githubusercontent.com (tables as they are, audio as Git LFS pointers) and
``/media/<path>`` like media.githubusercontent.com (the audio itself).
"""

from __future__ import annotations

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from ambiemo.data import prepare_dataset
from ambiemo.data.fetch import FetchError, fetch_crema_d, parse_lfs_pointer, verify_crema_d

CLIPS = ["1001_DFA_ANG_XX", "1001_IEO_NEU_XX", "1002_TIE_SAD_HI"]
VOTES = (
    '"","A","D","F","H","N","S","fileName","numResponses"\n'
    '"100001",5,1,0,0,3,0,"1001_DFA_ANG_XX",9\n"100002",0,0,0,1,10,0,"1001_IEO_NEU_XX",11\n'
    '"100003",0,0,1,0,2,6,"1002_TIE_SAD_HI",9\n'
    '"200001",8,1,0,0,0,0,"1001_DFA_ANG_XX",9\n"200002",0,0,0,0,9,0,"1001_IEO_NEU_XX",9\n'
    '"200003",0,0,0,0,1,8,"1002_TIE_SAD_HI",9\n'
    '"300001",9,0,0,0,0,0,"1001_DFA_ANG_XX",9\n"300002",0,0,0,0,9,0,"1001_IEO_NEU_XX",9\n'
    '"300003",0,0,0,0,0,9,"1002_TIE_SAD_HI",9\n'
)


def _wav(seconds: float, freq: float) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _pointer(data: bytes) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    ).encode()


class FakeGitHub:
    def __init__(self):
        self.audio = {c: _wav(1.0 + i / 2, 200 + 50 * i) for i, c in enumerate(CLIPS)}
        self.files = {
            "processedResults/tabulatedVotes.csv": VOTES.encode(),
            "processedResults/summaryTable.csv": b'"","FileName","VoiceVote"\n',
            "SentenceFilenames.csv": (
                '"Stimulus_Number","Filename"\n' + "".join(f'{i},"{c}"\n' for i, c in enumerate(CLIPS, 1))
            ).encode(),
            "VideoDemographics.csv": b'"ActorID","Age","Sex"\n1001,51,"Male"\n1002,21,"Female"\n',
            "LICENSE.txt": b"Open Database License\n",
        }
        self.media_override: dict[str, bytes] = {}  # clip -> bytes served instead of the audio
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                kind, _, rel = self.path.lstrip("/").partition("/")
                body = None
                if rel.startswith("AudioWAV/"):
                    clip = rel[len("AudioWAV/") : -len(".wav")]
                    if clip in fake.audio:
                        body = (
                            _pointer(fake.audio[clip])
                            if kind == "raw"
                            else fake.media_override.get(clip, fake.audio[clip])
                        )
                elif kind == "raw":
                    body = fake.files.get(rel)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def fetch(self, dest, **kw):
        return fetch_crema_d(dest, raw_base=f"{self.base}/raw/", media_base=f"{self.base}/media/", workers=2, **kw)


@pytest.fixture
def github():
    fake = FakeGitHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_fetch_verifies_and_the_result_prepares(github, tmp_path):
    report = github.fetch(tmp_path)
    assert report.ok, report.summary()
    assert (report.downloaded, report.already_present, report.verified) == (3, 0, 3)
    for clip, data in github.audio.items():
        assert (tmp_path / "AudioWAV" / f"{clip}.wav").read_bytes() == data
    assert report.tables["processedResults/tabulatedVotes.csv"].startswith("ok (differs")  # not the real table
    lines = (tmp_path / "AudioWAV.sha256").read_text().splitlines()
    assert lines[0] == f"{hashlib.sha256(github.audio[CLIPS[0]]).hexdigest()}  AudioWAV/{CLIPS[0]}.wav"
    params = {
        "label_sets": {"crema6": {"labels": ["angry", "disgust", "fear", "happy", "neutral", "sad"]}},
        "datasets": {"crema-d": {"loader": "crema-d", "root": str(tmp_path), "label_set": "crema6"}},
    }
    m = prepare_dataset("crema-d", params)
    assert m.df["duration_s"].tolist() == [1.0, 1.5, 2.0]
    assert not list(tmp_path.rglob("*.part"))


def test_second_fetch_resumes_without_downloading(github, tmp_path):
    github.fetch(tmp_path)
    github.requests.clear()
    report = github.fetch(tmp_path)
    assert (report.downloaded, report.already_present) == (0, 3)
    assert not [r for r in github.requests if r.startswith("/media/")]


def test_corrupt_download_is_refused_and_not_kept(github, tmp_path):
    github.media_override[CLIPS[1]] = github.audio[CLIPS[1]][:-10] + b"0123456789"
    github.media_override[CLIPS[2]] = _pointer(github.audio[CLIPS[2]])  # an LFS stub instead of audio
    report = github.fetch(tmp_path, retries=2)
    assert not report.ok and report.verified == 1
    assert "sha256 mismatch" in report.failed[CLIPS[1]]
    assert "Git LFS pointer instead of the audio" in report.failed[CLIPS[2]]
    assert not (tmp_path / "AudioWAV" / f"{CLIPS[1]}.wav").exists()
    assert "INCOMPLETE" in report.summary()
    assert sum(r == f"/media/AudioWAV/{CLIPS[1]}.wav" for r in github.requests) == 2  # retried


def test_missing_file_and_bad_layout(github, tmp_path):
    del github.audio[CLIPS[0]]
    report = github.fetch(tmp_path / "a")
    assert report.failed == {CLIPS[0]: f"HTTP 404 for its LFS pointer {github.base}/raw/AudioWAV/{CLIPS[0]}.wav"}
    github.files["SentenceFilenames.csv"] += b'4,"1003_IEO_HAP_LO"\n'
    with pytest.raises(FetchError, match="clips differ from the 3 voice-only rows"):
        github.fetch(tmp_path / "b")
    github.files["processedResults/tabulatedVotes.csv"] = VOTES.replace('"100003"', '"400003"').encode()
    with pytest.raises(FetchError, match="same number of rows for modalities"):
        github.fetch(tmp_path / "c")
    del github.files["LICENSE.txt"]
    with pytest.raises(FetchError, match="could not download LICENSE.txt"):
        github.fetch(tmp_path / "d")


def test_verify_only_finds_tampered_and_stub_files(github, tmp_path):
    github.fetch(tmp_path)
    assert verify_crema_d(tmp_path).ok
    (tmp_path / "AudioWAV" / f"{CLIPS[0]}.wav").write_bytes(b"RIFF....")
    (tmp_path / "AudioWAV" / f"{CLIPS[1]}.wav").write_bytes(_pointer(github.audio[CLIPS[1]]))
    (tmp_path / "AudioWAV" / f"{CLIPS[2]}.wav").unlink()
    report = verify_crema_d(tmp_path)
    assert report.failed == {CLIPS[0]: "sha256 mismatch", CLIPS[1]: "a Git LFS pointer, not audio", CLIPS[2]: "missing"}


def test_tables_only_and_cli(github, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import ambiemo.data.fetch as fetch_module
    from ambiemo.cli import app

    monkeypatch.setattr(fetch_module, "RAW_BASE", f"{github.base}/raw/")
    monkeypatch.setattr(fetch_module, "MEDIA_BASE", f"{github.base}/media/")
    runner = CliRunner()
    r = runner.invoke(app, ["data", "fetch", "crema-d", "--dest", str(tmp_path), "--tables-only"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "AudioWAV").exists() and "OK" in r.output
    r = runner.invoke(app, ["data", "fetch", "crema-d", "--dest", str(tmp_path)])
    assert r.exit_code == 0 and "downloaded 3" in r.output, r.output
    r = runner.invoke(app, ["data", "fetch", "crema-d", "--dest", str(tmp_path), "--verify-only"])
    assert r.exit_code == 0 and "verified 3" in r.output, r.output
    r = runner.invoke(app, ["data", "fetch", "iemocap", "--dest", str(tmp_path)])
    assert r.exit_code == 1 and "only crema-d is public" in r.output


def test_parse_lfs_pointer():
    data = b"abc"
    assert parse_lfs_pointer(_pointer(data)) == (hashlib.sha256(data).hexdigest(), 3)
    assert parse_lfs_pointer(b"RIFF\x00\x00WAVEfmt ") is None
    assert parse_lfs_pointer(b"version https://git-lfs.github.com/spec/v1\noid sha256:xyz\nsize 3\n") is None
