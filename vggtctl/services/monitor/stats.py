"""Small statistics with bounded memory: quantiles, a log-binned histogram, a trend fit, a thinned series."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default).

    Args:
        values: At least one value.
        q: In [0, 1].
    """
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class RateStats:
    """Seconds per step: median, 10th/90th percentile (the spread), mean, and how many updates."""

    median: float
    p10: float
    p90: float
    mean: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> RateStats | None:
        """Statistics of exact values (None when empty)."""
        if not values:
            return None
        return cls(
            quantile(values, 0.5),
            quantile(values, 0.1),
            quantile(values, 0.9),
            math.fsum(values) / len(values),
            len(values),
        )

    def to_dict(self) -> dict[str, object]:
        def inv(x: float) -> float | None:
            return 1.0 / x if x > 0 else None

        return {
            "s_per_it": {"median": self.median, "p10": self.p10, "p90": self.p90, "mean": self.mean},
            # A faster step is a higher rate: the 10th percentile of steps/s comes from the 90th of s/it.
            "steps_per_s": {"median": inv(self.median), "p10": inv(self.p90), "p90": inv(self.p10)},
            "count": self.count,
        }


class LogHistogram:
    """Values in bins 0.1 % wide on a log scale: quantiles within 0.1 % in bounded memory (a few thousand
    bins at most, whatever the number of values). A quantile is the mean of the values in its bin, so a
    run of identical step times gives that time exactly."""

    _STEP = math.log1p(1e-3)

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}
        self.zeros = 0
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value <= 0:
            self.zeros += 1
            return
        b = math.floor(math.log(value) / self._STEP)
        cell = self.bins.get(b)
        if cell is None:
            self.bins[b] = [1, value]
        else:
            cell[0] += 1
            cell[1] += value

    def clear(self) -> None:
        self.bins.clear()
        self.zeros = 0
        self.count = 0
        self.total = 0.0

    def quantile(self, q: float) -> float:
        """Approximate ``q`` quantile: the mean of the bin holding the ``q * (count - 1)``-th value."""
        rank = q * (self.count - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        cell = [1, 0.0]
        for b in sorted(self.bins):
            cell = self.bins[b]
            seen += cell[0]
            if rank < seen:
                break
        return cell[1] / cell[0]

    def stats(self) -> RateStats | None:
        if self.count == 0:
            return None
        return RateStats(
            self.quantile(0.5), self.quantile(0.1), self.quantile(0.9), self.total / self.count, self.count
        )


def linear_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = math.fsum(values) / n
    num = math.fsum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = math.fsum((i - mean_x) ** 2 for i in range(n))
    return num / den


class Thinned:
    """Keeps at most ``2 * cap`` points of an unbounded series by doubling its stride when full."""

    def __init__(self, cap: int = 2000) -> None:
        self.cap = cap
        self.points: list[tuple[float, float]] = []
        self._stride = 1
        self._seen = 0

    def add(self, x: float, y: float) -> None:
        if self._seen % self._stride == 0:
            self.points.append((x, y))
            if len(self.points) > 2 * self.cap:
                self.points = self.points[::2]
                self._stride *= 2
        self._seen += 1

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        for x, y in points:
            self.add(x, y)
