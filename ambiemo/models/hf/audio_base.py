"""``NativeAudioALM``: a transformers audio-language model whose audio encoder's frames replace a run
of placeholder tokens in a chat prompt; each native adapter (``qwen2_audio``, ``audio_flamingo3``,
``qwen3_omni``, ``phi4_multimodal``) is one subclass."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models.base import AudioRequest
from ambiemo.models.hf.engine import TransformersALM
from ambiemo.models.hf.parts import DEFAULT_BATCH_SIZE, Encoded, _resolve_cache_root
from ambiemo.models.identity import check_remote_code

log = logging.getLogger(__name__)


def processor_chat_template(source: str, rev: dict[str, Any]) -> str | None:
    """The ``chat_template`` of a processor's ``chat_template.json`` in ``source`` (None where absent),
    where multimodal checkpoints often keep it."""
    from transformers.utils import cached_file

    path = cached_file(source, "chat_template.json", _raise_exceptions_for_missing_entries=False, **rev)
    if path is None:
        return None
    return json.loads(Path(path).read_text(encoding="utf-8")).get("chat_template")


class NativeAudioALM(TransformersALM):
    """A transformers audio-language model: chat template with an audio placeholder, expanded to
    one placeholder token per audio frame the encoder emits, plus that clip's features.

    A new model is one subclass (README, "Extending it"): set ``model_class`` (its class in
    ``transformers``), ``audio_placeholder`` (the token the chat template writes once per clip) and
    ``capabilities`` (with ``max_audio_s``), and implement ``_audio_features``; without a processor
    (``use_processor = False``), name its ``feature_extractor_class``. Where the model differs further,
    override the hooks: ``_load_model`` (how the weights load), ``_load_parts``
    (tokenizer, feature extractor, template), ``hf_messages`` / ``prompt_text`` (the prompt).
    """

    model_class: str = ""
    audio_placeholder: str = ""
    use_processor: bool = True  # load tokenizer, feature extractor and template via AutoProcessor
    # Without the processor: the tokenizer, this feature extractor class of transformers, and the chat
    # template from the tokenizer or else from the processor's chat_template.json.
    feature_extractor_class: str = "WhisperFeatureExtractor"
    # The Omni models: a checkpoint whose config is of ``full_model_type`` holds thinker + talker;
    # it is built as ``full_model_class`` without audio output and only its thinker is kept.
    full_model_type: str = ""
    full_model_class: str = ""

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None = None,
        *,
        local_path: Path | None = None,
        trust_remote_code: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(key, model_id, revision, **kw)
        self.local_path = local_path  # a built tiny instance; None for hub checkpoints
        self.trust_remote_code = trust_remote_code
        self.feature_extractor: Any = None
        self.chat_template: str | None = None
        self._feature_settings: str | None = None  # settings_key of feature_settings(), once loaded

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> NativeAudioALM:
        from ambiemo.models.hf.tiny import TINY_VERSION, ensure_tiny, parse_tiny_checkpoint

        if "checkpoint" not in spec:
            raise KeyError(f"params.yaml models.{key} has no 'checkpoint' (a hub id or tiny:<arch>)")
        trust = check_remote_code(key, spec)  # refused here, before anything is downloaded
        checkpoint = str(spec["checkpoint"])
        revision = spec.get("revision")
        local_path = None
        arch = parse_tiny_checkpoint(checkpoint)
        if arch is not None:
            # Built on first use into the cache folder; its identity is the builder version.
            local_path = ensure_tiny(arch, _resolve_cache_root(spec, kwargs))
            revision = TINY_VERSION
        model = cls(
            key,
            checkpoint,
            None if revision is None else str(revision),
            local_path=local_path,
            trust_remote_code=trust,
            dtype=spec.get("dtype", "auto"),
            device_map=spec.get("device_map", "auto"),
            batch_size=int(spec.get("batch_size", DEFAULT_BATCH_SIZE)),
            needs=spec.get("needs", ""),
            settings=spec,
            route=spec.get("adapter"),
        )
        # Where fetched weights live (params paths.weights_dir): read before the hub, see ambiemo.models.weights.
        model.weights_dir = kwargs.get("weights_dir")
        return model

    def _source(self) -> tuple[str, dict[str, Any]]:
        """Where to load from and the ``from_pretrained`` kwargs that pin it (revision, remote code)."""
        if self.local_path is not None:
            return str(self.local_path), {}
        from ambiemo.models.weights import resolve

        # A fetched copy, the HF cache without network, or the hub if it answers; else a fast clear error.
        source, rev = resolve(
            self.key, {"checkpoint": self.model_id, "revision": self.revision}, getattr(self, "weights_dir", None)
        )
        if self.trust_remote_code:  # only ever with a pinned commit (check_remote_code)
            rev["trust_remote_code"] = True
        return source, rev

    def _load_parts(self, source: str, rev: dict[str, Any]) -> None:
        """Tokenizer, feature extractor and chat template."""
        if self.use_processor:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(source, **rev)
            self.tokenizer = processor.tokenizer
            self.feature_extractor = processor.feature_extractor
            self.chat_template = processor.chat_template
        else:
            import transformers

            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **rev)
            extractor = getattr(transformers, self.feature_extractor_class)
            self.feature_extractor = extractor.from_pretrained(source, **rev)
            self.chat_template = self.tokenizer.chat_template or processor_chat_template(source, rev)
        if not self.chat_template:
            raise ValueError(
                f"model {self.key!r}: {source} ships no chat template (neither in its tokenizer nor in "
                "chat_template.json); add one"
            )

    def _load_model(self, source: str, rev: dict[str, Any]):
        import transformers

        if self.full_model_type and transformers.AutoConfig.from_pretrained(source, **rev).model_type == (
            self.full_model_type
        ):
            full = getattr(transformers, self.full_model_class).from_pretrained(
                source, enable_audio_output=False, **rev, **self._load_kwargs()
            )
            return full.thinker
        return getattr(transformers, self.model_class).from_pretrained(source, **rev, **self._load_kwargs())

    def _load(self) -> None:
        source, rev = self._source()
        self._load_parts(source, rev)
        self.model = self._load_model(source, rev)
        if self.tokenizer.convert_tokens_to_ids(self.audio_placeholder) in (None, self.tokenizer.unk_token_id):
            raise ValueError(f"model {self.key!r}: tokenizer of {source} has no {self.audio_placeholder!r} token")

    # ----------------------------------------------------------------------------- prompt
    def hf_messages(self, request: AudioRequest) -> list[dict[str, Any]]:
        """The conversation in transformers' chat format, the clip attached to its user turn.

        The turn marked ``audio=True`` carries the clip; if none is marked, the first user turn
        does (the usual ALM prompt: audio, then the instruction).
        """
        audio_turn = request.audio_turn()
        out = []
        for i, m in enumerate(request.messages):
            if i == audio_turn:
                content: Any = [{"type": "audio", "audio": request.utt_id}, {"type": "text", "text": m.text}]
            else:
                content = m.text
            out.append({"role": m.role, "content": content})
        return out

    def prompt_text(self, request: AudioRequest) -> str:
        """The rendered prompt with one unexpanded audio placeholder (what the processor expands)."""
        text = self.tokenizer.apply_chat_template(
            self.hf_messages(request), chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        if text.count(self.audio_placeholder) != 1:
            raise ValueError(
                f"model {self.key!r}: the chat template wrote {text.count(self.audio_placeholder)} "
                f"{self.audio_placeholder!r} placeholders for utterance {request.utt_id!r}; expected exactly 1"
            )
        return text

    def _waveform(self, request: AudioRequest) -> np.ndarray:
        return request.waveform_at(self.sample_rate)

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        """Feature tensors for one clip and the number of placeholder tokens it becomes."""
        raise NotImplementedError

    def feature_settings(self) -> dict[str, Any]:
        """Everything ``_audio_features`` depends on besides the clip: the adapter (its code), its
        sample rate and the extractor's configuration. A subclass whose features depend on more
        (an instance setting) adds it here, or the feature memo would mix them up."""
        fe = self.feature_extractor
        return {
            "adapter": f"{type(self).__module__}.{type(self).__qualname__}",
            "sample_rate": self.sample_rate,
            "extractor": fe.to_dict() if hasattr(fe, "to_dict") else repr(fe),
        }

    def features_for(self, request: AudioRequest) -> tuple[dict[str, Any], int]:
        """The clip's feature tensors and audio-token count, from ``ambiemo.data.audio.FEATURE_MEMO`` when
        another strategy (or candidate, or verifier turn) of this process has already asked."""
        from ambiemo.data.audio import FEATURE_MEMO, settings_key

        if self._feature_settings is None:
            self._feature_settings = settings_key(self.feature_settings())
        return FEATURE_MEMO.get(
            request.audio_sha1(), self._feature_settings, lambda: self._audio_features(self._waveform(request))
        )

    def audio_run(self, n_audio: int) -> str:
        """What the clip's one placeholder becomes: ``n_audio`` placeholders (a model whose processor
        also writes markers around them, as Gemma 4's does, adds those here)."""
        return self.audio_placeholder * n_audio

    def _encode(self, request: AudioRequest) -> Encoded:
        features, n_audio = self.features_for(request)
        text = self.prompt_text(request).replace(self.audio_placeholder, self.audio_run(n_audio))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Encoded(ids, features)


def whisper_token_count(n_frames: int) -> int:
    """Audio tokens for ``n_frames`` mel frames: stride-2 conv, then stride-2 pooling."""
    return (((n_frames - 1) // 2 + 1) - 2) // 2 + 1


_whisper_token_count = whisper_token_count  # the name adapters written before it was public import
