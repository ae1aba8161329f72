"""Ultravox (fixie-ai/ultravox-v0_3, -v0_4) through transformers with the checkpoint's own code.

Ultravox is not in transformers: its checkpoints carry their modelling and processing code
(``ultravox_model.py``, ``ultravox_processing.py``), which ``trust_remote_code`` executes. Running
someone else's code is opt-in: the spec must say ``trust_remote_code: true`` and pin ``revision``
to a commit hash, so that the code that runs is the code that was reviewed. Anything else is an
error before anything is downloaded.

The prompt is the LLM's chat template with the ``<|audio|>`` placeholder in the audio turn; the
Ultravox processor replaces it with the projected Whisper frames. Each request is one
``generate`` call (the processor's audio bookkeeping is per prompt), still with all ``n``
candidates from one prefill; log-probabilities and option scoring are the shared transformers
path.

The other route: ``vllm serve fixie-ai/ultravox-v0_4 --trust-remote-code`` exposes an
OpenAI-compatible server, which the OpenAI-compatible adapter reaches with a base URL (it returns
log-probabilities too). That is the fast path on a GPU machine.
"""

from __future__ import annotations

from typing import Any

from ambiemo.models import register_model
from ambiemo.models.base import AudioRequest, Capabilities
from ambiemo.models.hf.engine import TransformersALM
from ambiemo.models.hf.parts import Encoded
from ambiemo.models.identity import check_remote_code

AUDIO_PLACEHOLDER = "<|audio|>"


@register_model("hf-ultravox")
class UltravoxALM(TransformersALM):
    """Ultravox via ``AutoModel`` with ``trust_remote_code`` (opt-in, pinned revision)."""

    # Its Whisper encoder hears 30 s (the revisions pinned here do not chunk longer audio).
    capabilities = Capabilities(max_audio_s=30.0)

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> UltravoxALM:
        if "checkpoint" not in spec:
            raise KeyError(f"params.yaml models.{key} has no 'checkpoint' (e.g. fixie-ai/ultravox-v0_4)")
        check_remote_code(key, spec, needed=True)  # opt-in and a pinned commit, before anything is downloaded
        # One prompt per generate call (batch_size is ignored): the processor's audio offsets are per prompt.
        return cls(
            key,
            str(spec["checkpoint"]),
            str(spec["revision"]),
            dtype=spec.get("dtype", "auto"),
            device_map=spec.get("device_map", "auto"),
            batch_size=1,
            needs=spec.get("needs", ""),
            settings=spec,
        )

    def _load(self) -> None:
        import transformers

        rev = {"revision": self.revision, "trust_remote_code": True}
        try:
            processor = transformers.AutoProcessor.from_pretrained(self.model_id, **rev)
        except (OSError, ValueError, KeyError):
            # Older revisions ship no processor config; build it as their own pipeline does.
            config = transformers.AutoConfig.from_pretrained(self.model_id, **rev)
            cls = transformers.dynamic_module_utils.get_class_from_dynamic_module(
                "ultravox_processing.UltravoxProcessor", self.model_id, revision=self.revision
            )
            processor = cls(
                audio_processor=transformers.AutoProcessor.from_pretrained(config.audio_model_id),
                tokenizer=transformers.AutoTokenizer.from_pretrained(self.model_id, revision=self.revision),
                stack_factor=config.stack_factor,
            )
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model = transformers.AutoModel.from_pretrained(self.model_id, **rev, **self._load_kwargs())

    def _eos_ids(self) -> list[int]:
        ids = super()._eos_ids()
        eot = self.tokenizer.convert_tokens_to_ids("<|eot_id|>")  # Llama 3's end of turn
        return ids + [eot] if isinstance(eot, int) and eot not in ids and eot != self.tokenizer.unk_token_id else ids

    def chat_messages(self, request: AudioRequest) -> list[dict[str, str]]:
        """The conversation with ``<|audio|>`` after the text of the audio turn (first user turn if unmarked)."""
        audio_turn = request.audio_turn()
        return [
            {"role": m.role, "content": f"{m.text}\n{AUDIO_PLACEHOLDER}" if i == audio_turn else m.text}
            for i, m in enumerate(request.messages)
        ]

    def _encode(self, request: AudioRequest) -> Encoded:
        text = self.tokenizer.apply_chat_template(
            self.chat_messages(request), tokenize=False, add_generation_prompt=True
        )
        wav = request.waveform_at(self.sample_rate)  # Whisper's feature extractor takes 16 kHz only
        out = self.processor(text=text, audio=wav, sampling_rate=self.sample_rate, return_tensors="pt")
        features = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        return Encoded(out["input_ids"][0].tolist(), features)
