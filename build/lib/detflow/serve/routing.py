"""A/B assignment: each request goes to one non-shadow model by its traffic share, sticky per
client id (the same id always lands on the same model while the shares stay the same);
shadow models get a mirrored copy."""

from __future__ import annotations

import bisect
import hashlib
import random

from detflow.serve.options import ModelSpec


class Router:
    """Cumulative shares over the non-shadow models; ``shadows``: the shadow models' names."""

    def __init__(self, specs: list[ModelSpec], *, seed: int | None = None):
        primary = [spec for spec in specs if not spec.shadow and spec.share > 0]
        total = sum(spec.share for spec in primary)
        self.names = [spec.name for spec in primary]
        self.shares = {spec.name: spec.share / total for spec in primary}
        self._bounds, running = [], 0.0
        for spec in primary:
            running += spec.share / total
            self._bounds.append(running)
        self._bounds[-1] = 1.0
        self.shadows = [spec.name for spec in specs if spec.shadow]
        self._random = random.Random(seed)

    def choose(self, client_id: str | None) -> str:
        """The model for this request: by a hash of ``client_id`` (sticky), random without."""
        if client_id:
            digest = hashlib.sha256(client_id.encode("utf-8", "replace")).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64
        else:
            point = self._random.random()
        return self.names[min(bisect.bisect_right(self._bounds, point), len(self.names) - 1)]
