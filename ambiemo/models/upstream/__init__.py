"""Models whose authors ship their own inference code (Kimi-Audio, Audio Flamingo 2): adapters
that import it from an installed checkout."""
