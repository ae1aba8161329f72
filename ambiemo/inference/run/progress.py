"""Progress of a run: a tqdm bar where stderr is a terminal, and a log line every so often in any case."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


class Progress:
    """A tqdm bar (where shown) and a periodic log line: utterances done, rate, ETA, cache hits,
    model failures, parse failures and API spend of this run."""

    def __init__(self, name: str, total: int, usages: list[Any], show: bool | None, log_every_s: float) -> None:
        from tqdm import tqdm

        if show is None:
            show = sys.stderr.isatty() and not os.environ.get("CI")
        self.name, self.total, self.usages = name, total, usages
        self.before = [u.as_dict() for u in usages]
        self.start = self.last_log = time.monotonic()
        self.done = 0
        self.log_every_s = log_every_s
        self.bar = tqdm(total=total, desc=name, unit="utt", disable=not show, file=sys.stderr, dynamic_ncols=True)

    def counts(self, model_failures: int, parse_failures: int) -> dict[str, Any]:
        now = [u.as_dict() for u in self.usages]
        spent = sum(a["cost_usd"] - b.get("cost_usd", 0) for a, b in zip(now, self.before, strict=True))
        hits = sum(a["cache_hits"] - b.get("cache_hits", 0) for a, b in zip(now, self.before, strict=True))
        return {"cache_hits": hits, "model_failures": model_failures, "parse_failures": parse_failures, "usd": spent}

    def update(self, n: int, model_failures: int, parse_failures: int) -> None:
        self.done += n
        c = self.counts(model_failures, parse_failures)
        self.bar.set_postfix(
            hits=c["cache_hits"],
            failed=c["model_failures"],
            unparsed=c["parse_failures"],
            usd=f"{c['usd']:.4f}",
            refresh=False,
        )
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last_log >= self.log_every_s or self.done >= self.total:
            self.last_log = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d of %d utterances (%.0f%%), %.2f utt/s, ETA %.0f s; cache hits %d, model failures %d, "
                "parse failures %d, API spend $%.4f",
                self.name,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                rate,
                eta,
                c["cache_hits"],
                c["model_failures"],
                c["parse_failures"],
                c["usd"],
            )

    def close(self) -> None:
        self.bar.close()
