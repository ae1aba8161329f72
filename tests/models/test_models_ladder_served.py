"""The ladder's vLLM-served entries (Voxtral, Gemma 3n) as params.yaml writes them: each reaches a fake
vLLM server on 127.0.0.1 under its own model id, carries the clip as WAV, asks for log-probabilities,
and reads back seeded candidates; its route says what the server cannot do (no beam search)."""

from __future__ import annotations

import math

import pytest
from fake_api import FAST_RETRY, assert_is_the_clip, chat_response, make_request

from ambiemo.core.config import load_params
from ambiemo.models import load_model
from ambiemo.models.base import GenerationConfig

pytestmark = pytest.mark.usefixtures("api_env")  # fake keys, nothing routed off 127.0.0.1
SERVED = ("voxtral-mini-3b", "voxtral-small-24b", "gemma-3n-e2b", "gemma-3n-e4b")


def reply(i, path, body, headers):
    seed = body["seed"]
    return 200, chat_response([(f"neutral {seed}-{k}", [("neutral", -0.25 * (k + 1))]) for k in range(body["n"])])


@pytest.mark.parametrize("key", SERVED)
def test_served_ladder_entry_reaches_its_server(key, fake_api, repo_root):
    params = load_params(repo_root / "params.yaml")
    spec = dict(params["models"][key])
    assert spec["adapter"] == "openai-compatible" and spec["family"] in key and spec["params_b"] > 0
    server = fake_api(reply)
    model = load_model(key, {**spec, "base_url": server.url + "/v1", "retry": FAST_RETRY})
    caps = model.capabilities
    assert caps.logprobs and caps.option_scoring and not caps.beam_search  # as the entry states
    assert model.identity["model_id"] == spec["model_id"] and model.identity["revision"] == spec["revision"]
    request = make_request("u1")
    out = model.generate([request], GenerationConfig(mode="sample", n=2, temperature=0.7, seed=4))
    [sent] = server.requests
    body = sent["body"]
    assert body["model"] == spec["model_id"] and body["n"] == 2 and body["logprobs"] is True
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    [audio] = [p for p in parts if "input_audio" in p]
    assert audio["input_audio"]["format"] == "wav"
    assert_is_the_clip(audio["input_audio"]["data"], request)
    assert [c.text for c in out[0]] == [f"neutral {body['seed']}-0", f"neutral {body['seed']}-1"]
    assert [c.logprob for c in out[0]] == pytest.approx([-0.25, -0.5])
    assert all(math.isfinite(c.logprob) for c in out[0])
