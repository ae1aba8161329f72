"""Audio-language model adapters, registered by route name.

``params.yaml`` maps a short model key (``qwen2-audio-7b``) to a spec whose ``adapter`` names
a registered route (``hf-qwen2-audio``); ``load_model`` builds it. Adapter modules import
their heavy dependencies lazily, so listing models is cheap.
"""

from __future__ import annotations

from typing import Any

from ambiemo.core.registry import Registry
from ambiemo.models.base import AudioLanguageModel

MODELS: Registry[type[AudioLanguageModel]] = Registry("model adapter")


def register_model(route: str):
    """Register an adapter class under ``route`` (the ``adapter`` of a params entry).

    The class must implement ``_generate`` and ``from_spec``; the first route a class is
    registered under becomes its ``default_route`` (the ``route`` of its identity)."""

    def own(cls: type, name: str) -> bool:
        return next(k for k in cls.__mro__ if name in k.__dict__) is not AudioLanguageModel

    def decorator(cls: type[AudioLanguageModel]) -> type[AudioLanguageModel]:
        # An adapter that still overrides ``generate`` itself (counting its own usage) is accepted
        # until it moves to ``_generate``; none of the local adapters does.
        if not own(cls, "from_spec") or not (own(cls, "_generate") or own(cls, "generate")):
            raise TypeError(f"model adapter {cls.__name__} ({route!r}) must implement from_spec and _generate")
        if "default_route" not in cls.__dict__:
            cls.default_route = route
        return MODELS.register(route)(cls)

    return decorator


def _import_adapters(until: str | None = None) -> None:
    """Import every adapter module so that each registers itself; with ``until``, stop once that
    route is registered. A served route's command then skips the native adapters' modules (the
    transformers-side ``hf`` and ``upstream`` packages, 0.15-0.3 s of its start-up), which it never
    uses; an unknown route still imports them all, so that the error lists every route."""
    import importlib
    import pkgutil

    import ambiemo.models as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix="ambiemo.models."):
        if until is not None and until in MODELS:
            return
        if info.name != "ambiemo.models.base":
            importlib.import_module(info.name)


def load_model(key: str, spec: dict[str, Any], **kwargs: Any) -> AudioLanguageModel:
    """Build the model ``key`` from its ``params.yaml`` spec (``models.<key>``)."""
    if "adapter" not in spec:
        _import_adapters()
        raise KeyError(f"params.yaml models.{key} has no 'adapter'; known adapters: {', '.join(MODELS.names())}")
    _import_adapters(until=spec["adapter"])
    cls = MODELS.get(spec["adapter"])
    from ambiemo.models.lifecycle import refuse_retired

    refuse_retired(key, spec)  # a retired model is refused before anything is loaded or paid for
    return cls.from_spec(key, spec, **kwargs)
