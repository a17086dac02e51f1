"""Latency summaries and the open-loop schedule: the load generator's arithmetic, without I/O.

Percentiles use the nearest-rank definition (the smallest sample with at least q% of samples at or below
it), the same one wrk reports, so the two tools' p50/p99 mean the same thing. The samples are kept whole
(a run is bounded in count), so there is no histogram bucketing error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0 < q <= 100) of an ascending sequence; 0.0 for no samples."""
    if not 0.0 < q <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not sorted_samples:
        return 0.0
    rank = math.ceil(q / 100.0 * len(sorted_samples))
    return sorted_samples[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of `count` requests, in microseconds."""

    count: int
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def of_seconds(cls, samples: Sequence[float]) -> "LatencySummary":
        """Summarize latencies given in seconds."""
        ordered = sorted(samples)
        if not ordered:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p90, p99, p999 = (percentile(ordered, q) * 1e6 for q in PERCENTILES)
        return cls(
            count=len(ordered),
            mean_us=sum(ordered) / len(ordered) * 1e6,
            p50_us=p50,
            p90_us=p90,
            p99_us=p99,
            p999_us=p999,
            max_us=ordered[-1] * 1e6,
        )

    def as_dict(self) -> dict:
        return asdict(self)


def open_loop_schedule(*, start: float, rate: float, count: int) -> list[float]:
    """The send times of `count` requests at a constant `rate` per second, the first at `start`.

    Latency is measured from these times, not from when a request actually left: a request that waits
    because the server (or the generator) fell behind is charged for the wait (no coordinated omission).
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    interval = 1.0 / rate
    return [start + i * interval for i in range(count)]
