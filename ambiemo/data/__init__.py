"""Corpora -> manifests.

Each corpus has a loader module registered by name in ``DATASETS`` (``iemocap``,
``msp-podcast``, ``crema-d``, ``demo``). A loader reads the corpus in the layout its owners
distribute and returns a ``Corpus``: one ``Utterance`` per clip with its raters' categories
as lowercase English words, plus what the loader itself left out and why. It knows nothing
about label sets. ``prepare_dataset`` does the rest, the same way for every corpus:

    loader(root, spec) -> Corpus (one ``Rating`` per rater: id, categories as given, secondaries)
      -> ratings without a category, repeated raters        -> dropped, counted
      -> label set and vote rules (params)                  -> ratings table (``ambiemo.data.ratings``)
      -> votes = sums of the table's weights                -> exclusions counted
      -> audio checked (missing / unreadable)               -> durations, paths relative to the root
      -> manifest and ratings.parquet written (``ambiemo.data.manifest``)

To add a corpus: write ``ambiemo/data/<name>.py`` with a function decorated
``@register_dataset("<name>")`` taking ``(root: Path, spec: dict)`` (``spec`` is the
dataset's params entry) and returning a ``Corpus``; add the module to ``_LOADER_MODULES``;
add an entry under ``datasets:`` in params.yaml. A loader that builds its corpus (the demo)
sets ``creates_root = True`` on the function, so that a missing root is not an error.
"""

from ambiemo.data.corpus import (
    DATASETS,
    Corpus,
    DataError,
    Loader,
    Rating,
    Utterance,
    get_loader,
    register_dataset,
)
from ambiemo.data.prepare import (
    DUPLICATE_RATERS,
    VoteRules,
    clean_ratings,
    dataset_spec,
    default_ratings_path,
    prepare_dataset,
    ratings_table,
)

__all__ = [
    "DATASETS",
    "DUPLICATE_RATERS",
    "Corpus",
    "DataError",
    "Loader",
    "Rating",
    "Utterance",
    "VoteRules",
    "clean_ratings",
    "dataset_spec",
    "default_ratings_path",
    "get_loader",
    "prepare_dataset",
    "ratings_table",
    "register_dataset",
]
