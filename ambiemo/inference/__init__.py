"""The inference stage: one model x one strategy over one manifest, and what that will cost.

Enters: a prepared manifest (``ambiemo.data``), a model (``ambiemo.models``), a strategy
(``ambiemo.strategies``) and the validated params.
Leaves: one predictions table per cell (``predictions``) and its candidates table (``candidates``);
the generation cache (``cache``) that makes a rerun free; the plan (``plan``) of what a profile will
request and cost before it runs. ``run.run_inference`` is the entry point.
"""
