"""Label scoring on the API routes: each option's log-probability read off the top alternatives of the
first answer token (``option_logprobs_from_top``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_STRIP = " \t\n\"'`*_.,:;{}[]()<>"


def option_logprobs_from_top(top: Sequence[tuple[str, float]], options: Sequence[str]) -> np.ndarray:
    """``log p(option)`` from the top alternatives of the first answer token.

    A top token counts for an option when, stripped of spaces, quotes and brackets, it is the
    option itself or a start of it at least three characters long that starts no other option
    ("disg" for "disgust"); its spellings with and without a leading space (" happy", "happy")
    are summed. Matching is case-sensitive, as for the local models, whose ``score_options``
    scores each option string exactly: pass "happy" and "Happy" to count both. This reads the
    answer off its first token, which is exact when the options' first tokens differ, as label
    words do. Options that no top token matches get ``-inf``: their probability is below the
    last listed alternative's, and the API does not say by how much.
    """
    stripped = [o.strip(_STRIP) for o in options]
    if len(set(stripped)) != len(stripped) or any(not o for o in stripped):
        raise ValueError(f"options must be distinct non-empty words, got {list(options)}")
    out = np.full(len(options), -np.inf)
    seen: set[str] = set()
    for token, lp in top:
        if token in seen:  # the same token listed twice would be counted twice
            continue
        seen.add(token)
        t = token.strip(_STRIP)
        if not t:
            continue
        matches = [i for i, o in enumerate(stripped) if o == t]
        if not matches and len(t) >= 3:
            matches = [i for i, o in enumerate(stripped) if o.startswith(t)]
        if len(matches) == 1:
            i = matches[0]
            out[i] = np.logaddexp(out[i], lp) if math.isfinite(out[i]) else lp
    return out
