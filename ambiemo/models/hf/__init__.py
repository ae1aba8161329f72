"""Models that run in this process through transformers: the native ALM engine, its adapters,
the demo cascade, and the tiny randomly initialised instances the tests build offline."""
