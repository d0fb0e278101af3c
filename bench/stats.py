"""Percentiles, distributions and the provisioning critical path."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no data."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


def dist(values: Iterable[float | None], digits: int = 3) -> dict:
    """n, min, mean, p50, p95, p99, max of the values (None-safe)."""
    data = [v for v in values if v is not None]
    if not data:
        return {"n": 0}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "n": len(data),
        "min": r(min(data)),
        "mean": r(sum(data) / len(data)),
        "p50": r(percentile(data, 50)),
        "p95": r(percentile(data, 95)),
        "p99": r(percentile(data, 99)),
        "max": r(max(data)),
    }


def step_needs() -> dict[str, set[str]]:
    """Each provisioning step's prerequisites, read the way the provisioner reads them."""
    from sites.provisioning.steps import PROVISION_STEPS

    needs: dict[str, set[str]] = {}
    for index, step in enumerate(PROVISION_STEPS):
        declared = getattr(step, "needs", None)
        needs[step.name] = {s.name for s in PROVISION_STEPS[:index]} if declared is None else set(declared)
    return needs


def critical_path(spans: Mapping[str, tuple[float, float]], needs: Mapping[str, set[str]]) -> list[str]:
    """The chain of steps that decided when the last step ended.

    Walks back from the step that finished last: each step could start only
    once all it needs were done, so the need that finished last gated it.
    """
    if not spans:
        return []
    current = max(spans, key=lambda name: spans[name][1])
    path = [current]
    while True:
        before = [name for name in needs.get(current, ()) if name in spans]
        if not before:
            break
        current = max(before, key=lambda name: spans[name][1])
        path.append(current)
    return path[::-1]
