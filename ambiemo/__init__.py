"""ambiemo: a benchmark for ambiguous speech emotion recognition with audio-language models.

The package is the helper library behind the notebooks in ``notebooks/``: datasets and
their vote distributions (``ambiemo.data``, ``ambiemo.data.labels``), model adapters
(``ambiemo.models``), prompts, parsing and test-time scaling strategies, and the metrics,
statistics and plots that answer the study's question.
"""

__version__ = "0.1.0"
