"""A random source that draws a chosen value, for decisions Envoy makes as `random() % n < percent`."""
from __future__ import annotations

import random


class FixedDraws(random.Random):
    """randrange(n) answers `value` (at most n - 1) and records n, so a test can put the draw just below or at a
    percentage, and see which draws (and their ranges) a decision made."""

    def __init__(self, value: int):
        super().__init__(0)
        self.value = value
        self.ranges: list[int] = []

    def randrange(self, n, *args):  # type: ignore[override]
        self.ranges.append(n)
        return min(self.value, n - 1)


class ScriptedDraws(random.Random):
    """randrange(n) answers the next of `values` (modulo n): a decision that draws several times, step by step."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def randrange(self, n, *args):  # type: ignore[override]
        return self.values.pop(0) % n
