"""Per-stage wall-clock timings shared by the pipeline and the inpainters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timings(dict):
    """Stage name -> seconds spent working (not waiting on queues); safe to add to from several threads.

    ``with timings("decode"): ...`` adds the block's seconds to ``timings["decode"]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self[stage] = self.get(stage, 0.0) + time.perf_counter() - start
