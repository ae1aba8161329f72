"""The params schema: the repository's params.yaml passes; each kind of mistake is refused, naming its dotted key."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ambiemo.cli import app
from ambiemo.core.config import load_params
from ambiemo.core.validation import ParamsError, validate_params
from ambiemo.strategies import strategy_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def problems(params: dict) -> dict[str, str]:
    with pytest.raises(ParamsError) as e:
        validate_params(params)
    return dict(e.value.problems)


def test_the_repository_params_validate():
    model = validate_params(load_params(ROOT / "params.yaml"))
    assert model.run.profile == "demo" and model.run.models == ["cascade-smollm2", "tiny-qwen2-audio"]


def test_an_unknown_key_names_the_closest_known_one(repo_params):
    p = copy.deepcopy(repo_params)
    p["strategies"]["sampling"]["temprature"] = 0.5
    p["scoring"]["ci_levl"] = 0.9
    p["sed"] = 1
    found = problems(p)
    assert found["strategies.sampling.temprature"] == "unknown key; did you mean `temperature`?"
    assert found["scoring.ci_levl"] == "unknown key; did you mean `ci_level`?"
    assert found["sed"] == "unknown key; did you mean `seed`?"


@pytest.mark.parametrize(
    "path,value,key",
    [
        (("strategies", "sampling", "temperature"), -0.1, "strategies.sampling.temperature"),
        (("strategies", "w-bon", "temperature"), 0, "strategies.w-bon.temperature"),
        (("strategies", "bon", "budgets"), {"demo": [0], "paper": [2]}, "strategies.bon.budgets.demo.0"),
        (("strategies", "alm-v", "budgets"), [3, "many"], "strategies.alm-v.budgets.1"),
        (("strategies", "prompt-ensemble", "budgets"), [1, 6], "strategies.prompt-ensemble.budgets.1"),
        (("strategies", "batch_size"), 0, "strategies.batch_size"),
        (("scoring", "ci_level"), 1.0, "scoring.ci_level"),
        (("scoring", "tie_policy"), "random", "scoring.tie_policy"),
        (("stats", "alpha"), 0, "stats.alpha"),
        (("models", "fake", "dtype"), "int8", "models.fake.dtype"),
        (("models", "tiny-qwen2-audio", "params_b"), "small", "models.tiny-qwen2-audio.params_b"),
        (("datasets", "demo", "votes"), "keep", "datasets.demo.votes"),
        (("run", "limit"), -1, "run.limit"),
    ],
)
def test_a_wrong_type_or_an_impossible_value_names_its_key(repo_params, path, value, key):
    p = copy.deepcopy(repo_params)
    node = p
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    found = problems(p)
    assert list(found) == [key], found


def test_cross_references_are_checked(repo_params):
    p = copy.deepcopy(repo_params)
    p["run"]["models"] = ["cascade-smollm2", "gpt4o"]
    p["run"]["strategies"] = ["bon", "w-bonn"]
    p["profiles"]["paper"]["datasets"] = ["iemocap", "nowhere"]
    p["datasets"]["demo"]["label_set"] = "five"
    p["strategies"]["verifier"]["model"] = {"demo": "no-such-model", "paper": "gpt-4o"}
    found = problems(p)
    assert found["run.models"] == "'gpt4o' is not under `models`; did you mean `gpt-4o`?"
    assert found["run.strategies"] == "'w-bonn' is no registered strategy; did you mean `w-bon`?"
    assert found["profiles.paper.datasets"].startswith("'nowhere' is not under `datasets`")
    assert found["datasets.demo.label_set"] == "'five' is not under `label_sets`"
    assert found["strategies.verifier.model"].startswith("'no-such-model' is not under `models`")


def test_an_unknown_profile_and_a_missing_per_profile_entry(repo_params):
    p = copy.deepcopy(repo_params)
    p["run"]["profile"] = "papr"
    known = ", ".join(repo_params["profiles"])
    assert problems(p) == {"run.profile": f"unknown profile 'papr'; profiles: {known}"}
    p = copy.deepcopy(repo_params)
    p["strategies"]["bon"]["budgets"] = {"paper": [5], "dmeo": [3]}
    msg = problems(p)["strategies.bon.budgets"]
    assert "unknown profiles ['dmeo']" in msg or "no entry for the run's profile 'demo'" in msg


def test_model_and_dataset_entries_keep_their_own_keys(repo_params):
    p = copy.deepcopy(repo_params)
    p["models"]["fake"]["answers"] = {"*": ["{}"]}  # an adapter-specific key
    p["datasets"]["demo"]["n_speakers"] = 4  # a loader-specific key
    p["paths"]["weights_dir"] = "weights"  # ambiemo.models.weights
    validate_params(p)
    del p["models"]["fake"]["adapter"]
    assert "models.fake.adapter" in problems(p)


def test_every_problem_in_one_paragraph(tmp_path, repo_params):
    p = copy.deepcopy(repo_params)
    p["strategies"]["sampling"]["temprature"] = 0.5
    p["scoring"]["ci_level"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    with pytest.raises(ParamsError) as e:
        load_params(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: 2 problems: ")
    assert "`strategies.sampling.temprature`" in text and "`scoring.ci_level`" in text
    result = CliRunner().invoke(app, ["strategies", "list", "--params", str(path)])
    assert result.exit_code != 0  # the commands refuse it before any work


def test_defaults_are_the_schemas():
    s = strategy_settings({})
    assert s["batch_size"] == 8 and s["sampling"] == {"temperature": 0.7, "top_p": 1.0}
    assert s["max_new_tokens"] == {"base": 8, "per_label": 10, "reasoning": 112, "single": 6, "verifier": 4}
    assert s["w-bon"] == {"temperature": 1.0} and s["label-scoring"] == {"variants": ["lower", "title"]}
    assert "temperature" not in s["self-consistency"]  # unset: the sampling temperature applies
    # a user's section keeps its own keys and order; the defaults fill what it leaves out
    s = strategy_settings({"strategies": {"w-bon": {"budgets": [2]}, "sampling": {"top_p": 0.9}}})
    assert list(s["w-bon"]) == ["budgets", "temperature"] and s["sampling"] == {"top_p": 0.9, "temperature": 0.7}


def test_profile_round_trip_and_the_merged_run_block(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    runner = CliRunner()
    assert runner.invoke(app, ["profile", "use", "paper", "--params", str(p)]).exit_code == 0
    text = p.read_text()
    assert "run:\n  <<: *paper\n  profile: paper\n" in text
    run = load_params(p)["run"]
    assert run["models"][0] == "qwen2-audio-7b" and run["profile"] == "paper"
    assert runner.invoke(app, ["profile", "use", "demo", "--params", str(p)]).exit_code == 0
    assert p.read_bytes() == (ROOT / "params.yaml").read_bytes()


def test_an_override_under_the_merge_key_wins(tmp_path):
    text = (
        (ROOT / "params.yaml")
        .read_text()
        .replace("  <<: *demo\n  profile: demo\n", "  <<: *demo\n  profile: demo\n  limit: 4\n")
    )
    p = tmp_path / "params.yaml"
    p.write_text(text)
    run = load_params(p)["run"]
    assert run["limit"] == 4 and run["models"] == ["cascade-smollm2", "tiny-qwen2-audio"]


def test_a_strategy_registered_as_the_manual_says(tmp_path, monkeypatch):
    """docs/extending.md, "Adding a strategy": subclass, register, settings under strategies.<name>, a profile."""
    from ambiemo.models.fake import FakeModel
    from ambiemo.strategies import STRATEGIES, Context, Cost, Row, Strategy, Utterance, register_strategy
    from ambiemo.strategies.prompts import PromptBook

    # The registry is left as the other tests expect it (without this test's strategy) afterwards.
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))

    if "uniform-test" not in STRATEGIES:

        @register_strategy("uniform-test")
        class Uniform(Strategy):
            summary = "the uniform distribution, whatever it hears"
            budget_name = "K"
            selection = "none"

            @classmethod
            def requests(cls, settings, budgets, route):
                return []  # it asks the model nothing

            def run(self, utts, budgets):
                k = len(self.ctx.labels)
                return [[Row(self.name, b, np.full(k, 1 / k), [], Cost()) for b in budgets] for _ in utts]

    cls = STRATEGIES.get("uniform-test")
    assert cls.name == "uniform-test"  # the decorator names the class
    text = (ROOT / "params.yaml").read_text()
    text = text.replace(
        "  <<: *demo\n  profile: demo\n", "  <<: *demo\n  profile: demo\n  strategies: [baseline, uniform-test]\n"
    )
    text = text.replace(
        "  prompt-ensemble:\n", "  uniform-test:\n    budgets: {demo: [1, 2], paper: [1, 2, 3]}\n  prompt-ensemble:\n"
    )
    p = tmp_path / "params.yaml"
    p.write_text(text)
    params = load_params(p)
    labels = ("neutral", "happy", "angry", "sad")
    ctx = Context(FakeModel(), labels, PromptBook(labels, seed=0), strategy_settings(params))
    strategy = cls(ctx)
    assert strategy.default_budgets() == [1, 2]
    (rows,) = strategy.run([Utterance("u0", np.zeros(160, np.float32), 16000)], strategy.default_budgets())
    assert [r.budget for r in rows] == [1, 2] and np.allclose(rows[0].p, 0.25)
    result = CliRunner().invoke(app, ["strategies", "list", "--params", str(p)])
    assert result.exit_code == 0 and "uniform-test" in result.output and "K in [1, 2]" in result.output


def test_dvc_exp_run_set_param_keeps_the_file_valid_and_switchable(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with DVC's own writer: the override lands in `run` beside the
    merge key; `profile use` then still switches (restoring an anchor DVC dropped)."""
    from dvc.utils import hydra  # a dependency: the pipeline's runner

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    hydra.apply_overrides(str(p), ["run.models=[fake]", "run.limit=2"])
    run = load_params(p)["run"]
    assert run["models"] == ["fake"] and run["limit"] == 2 and run["profile"] == "demo"
    assert run["strategies"] == load_params(ROOT / "params.yaml")["profiles"]["demo"]["strategies"]
    assert CliRunner().invoke(app, ["profile", "use", "paper", "--params", str(p)]).exit_code == 0
    params = load_params(p)
    assert params["run"] == {"profile": "paper", **params["profiles"]["paper"]}
