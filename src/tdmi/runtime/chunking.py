"""Splitting a batch of clips into what a backend accepts, shared by every backend.

A TensorRT engine runs batches between its profile's min and max; a static-batch ONNX file runs
exactly one batch size. Larger requests are split, and a chunk smaller than the minimum is padded
(by repeating its last clip) and the padding's outputs dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdmi.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    start: int
    stop: int
    run_size: int  # batch actually run: stop - start, or more when padded up to the minimum

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def padding(self) -> int:
        return self.run_size - self.size


def plan_chunks(n: int, max_batch: int | None = None, min_batch: int = 1) -> list[Chunk]:
    """Chunks covering ``range(n)``: each at most ``max_batch``, each run at least ``min_batch``."""
    if n < 0:
        raise ConfigError(f"batch size must be >= 0, got {n}")
    if min_batch < 1 or (max_batch is not None and max_batch < min_batch):
        raise ConfigError(f"invalid batch range min={min_batch} max={max_batch}")
    if n == 0:
        return []
    step = n if max_batch is None else max_batch
    chunks = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        chunks.append(Chunk(start, stop, max(stop - start, min_batch)))
    return chunks
