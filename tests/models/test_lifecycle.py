"""Model lifecycle (issue 19): retired, retiring and unpinned models found before any spend, each with
its fix; a retired model refused when built unless pointed at a compatible endpoint on purpose; an
answer under another model's name detected; and the repository's profiles: `paper` names its retired
Gemini rows with their successors and the checked date, `today` names none."""

from __future__ import annotations

import copy
import datetime

import pytest

from ambiemo.core.config import load_params
from ambiemo.core.validation import ParamsError, validate_params
from ambiemo.models import load_model
from ambiemo.models.lifecycle import RetiredModel, findings, is_dated, model_findings, served_mismatch

DAY = datetime.date(2026, 12, 7)


def api(model_id="gpt-audio-2025-08-28", **lifecycle):
    spec = {"adapter": "openai-chat", "model_id": model_id}
    if lifecycle:
        spec["lifecycle"] = {"checked": "2026-12-07", **lifecycle}
    return spec


def kinds(spec, key="m"):
    return [f["kind"] for f in model_findings(key, spec, on=DAY)]


def test_retired_retiring_and_current_by_date():
    assert kinds(api(retires="2026-12-01", successor="new")) == ["retired"]
    assert kinds(api(retires="2026-12-07")) == ["retired"]  # shut down today
    assert kinds(api(retires="2026-12-20")) == ["retiring"]  # within the 30-day horizon
    assert kinds(api(retires="2027-03-01")) == []
    assert kinds(api()) == []  # a dated snapshot with no announced shutdown


def test_the_fix_names_the_successor_and_the_checked_date():
    (f,) = model_findings("g", api("gemini-2.5-pro", retires="2026-12-01", successor="gemini-3.8-flash"), on=DAY)
    assert "2026-12-01" in f["what"] and "checked 2026-12-07" in f["what"]
    assert "gemini-3.8-flash" in f["fix"] and "accept_retired" in f["fix"]


def test_aliases_and_unpinned_checkpoints():
    assert kinds({"adapter": "gemini", "model_id": "gemini-3.8-flash"}) == ["unpinned"]
    assert kinds(api("gpt-audio-1.5", alias_ok="no dated snapshot offered")) == []
    assert kinds({"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Qwen2-Audio-7B-Instruct", "revision": "main"}) == [
        "unpinned"
    ]
    assert kinds({"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Q", "revision": "a" * 40}) == []
    assert kinds({"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio"}) == []
    assert kinds({"adapter": "openai-compatible", "model_id": "org/m", "revision": None}) == ["unpinned"]


@pytest.mark.parametrize(
    ("model_id", "dated"),
    [
        ("gpt-audio-2025-08-28", True),
        ("gemini-2.0-flash-001", True),
        ("gemini-2.5-pro-preview-06-05", True),
        ("gpt-audio", False),
        ("gemini-2.5-flash", False),
        ("gpt-audio-1.5", False),
    ],
)
def test_dated_snapshots(model_id, dated):
    assert is_dated(model_id) is dated


def test_a_retired_model_is_refused_unless_pointed_at_an_endpoint_on_purpose():
    retired = api("gemini-2.0-flash", retires="2026-06-01", successor="gemini-2.5-flash")
    retired["adapter"] = "gemini"
    with pytest.raises(RetiredModel, match="retired on 2026-06-01"):
        load_model("old", retired)
    on_purpose = {**retired, "base_url": "http://127.0.0.1:9/v1beta"}
    on_purpose["lifecycle"] = {**retired["lifecycle"], "accept_retired": True}
    assert load_model("old", on_purpose).model_id == "gemini-2.0-flash"
    # accept_retired without an endpoint is not "on purpose": still refused.
    no_url = {**retired, "lifecycle": {**retired["lifecycle"], "accept_retired": True}}
    with pytest.raises(RetiredModel):
        load_model("old", no_url)


def test_served_names():
    assert served_mismatch("gpt-audio", "gpt-audio-2025-08-28", {}) is None  # the alias's snapshot
    assert served_mismatch("gpt-audio-1.5", None, {}) is None  # nothing named
    assert served_mismatch("gemini-2.5-pro", "models/gemini-2.5-pro", {}) is None
    why = served_mismatch("gemini-2.5-pro", "gemini-3.8-flash", {})
    assert why and "gemini-3.8-flash" in why and "served_as" in why
    assert (
        served_mismatch("gemini-2.5-pro", "gemini-3.8-flash", {"lifecycle": {"served_as": ["gemini-3.8-flash"]}})
        is None
    )
    assert served_mismatch("gpt-audio-2025-08-28", "gpt-audio-2026-01-01", {})  # a dated id answered by another date


def test_the_schema_refuses_unknown_lifecycle_keys(repo_root):
    params = load_params(repo_root / "params.yaml")
    params["models"]["gpt-4o"]["lifecycle"]["retired"] = "2026-01-01"  # a typo of `retires`
    with pytest.raises(ParamsError, match="lifecycle.retired"):
        validate_params(params)


def on_profile(params, name):
    p = copy.deepcopy(params)
    p["run"] = {**p["profiles"][name], "profile": name}
    return p


def test_the_paper_profile_names_its_retired_models_and_today_names_none(repo_root):
    params = load_params(repo_root / "params.yaml")
    paper = findings(on_profile(params, "paper"), on=DAY)
    retired = {f["model"]: f for f in paper if f["kind"] == "retired"}
    assert set(retired) == {"gemini-2.0-flash", "gemini-2.5-pro"}
    assert (
        "gemini-3.8-flash" in retired["gemini-2.5-pro"]["fix"]
        and "checked 2026-12-07" in retired["gemini-2.5-pro"]["what"]
    )
    assert not set(params["profiles"]["paper"]["models"]) & set(retired)  # the paper runs what can still run
    assert findings(on_profile(params, "today"), on=DAY) == []


def test_plan_lists_them_before_any_spend(repo_root, tmp_path):
    from ambiemo.inference.plan import plan
    from ambiemo.inference.plan_report import format_plan

    params = on_profile(load_params(repo_root / "params.yaml"), "paper")
    params["paths"] = {**params["paths"], "cache_dir": str(tmp_path / "cache")}
    text = format_plan(plan(params, results=tmp_path))
    assert "gemini-2.5-pro was retired on 2026-12-01" in text and "gemini-3.8-flash" in text
    today = on_profile(load_params(repo_root / "params.yaml"), "today")
    today["paths"] = params["paths"]
    assert "retired" not in format_plan(plan(today, results=tmp_path))


def test_the_paper_model_table_says_who_answered_each_row(repo_root):
    from ambiemo.models.lifecycle import answered_by_rows

    rows = {
        r["model"]: r for r in answered_by_rows(on_profile(load_params(repo_root / "params.yaml"), "paper"), on=DAY)
    }
    assert rows["gpt-4o"]["answered_by"].startswith("gpt-audio-2025-08-28 (checked 2026-12-07")
    assert rows["gpt-4o"]["status"] == "run"
    assert rows["gemini-2.5-pro"]["status"] == "reference"
    assert rows["qwen2-audio-7b"]["answered_by"] == "Qwen/Qwen2-Audio-7B-Instruct@4b3a56c36858"
