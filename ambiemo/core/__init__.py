"""The shared core every stage stands on: params, tables, paths, errors, provenance, registries.

Enters: ``params.yaml`` (``config.load_params`` checks it against ``params``, the schema).
Leaves: the validated params, the results layout (``layout.Layout``), the parquet writer and reader
with metadata (``tables``), the exceptions that decide whether a run goes on (``errors``), the
provenance every output records, and the name -> class registry the extension points share.
Nothing here imports a stage: data, models, inference, scoring, stats and report import the core.
"""
