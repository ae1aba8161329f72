"""Models behind HTTP: OpenAI-compatible servers (vLLM, OpenAI) and Gemini, with retries,
concurrency, endpoint pools, request encoding and pricing."""
