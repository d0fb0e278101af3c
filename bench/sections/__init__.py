"""The sections; each takes a Context and returns the dict stored under its name in latest.json."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.api import Api
from bench.config import Plan
from bench.panel import BenchPanel


@dataclass
class Context:
    panel: BenchPanel
    plan: Plan
    api: Api


def timed(run: Callable[[Context], dict]) -> Callable[[Context], dict]:
    """Wrap a section: record when it ran, how long it took and the load around it (noise)."""

    def wrapper(ctx: Context) -> dict:
        from bench.environment import code_fingerprint, infra_started_at

        started = time.time()
        load_before = [round(x, 2) for x in os.getloadavg()]
        infra_before, code_before = infra_started_at(), code_fingerprint()
        result = run(ctx)
        infra_after, code_after = infra_started_at(), code_fingerprint()
        result["meta"] = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "quick": ctx.plan.quick,
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
        result["meta"]["code"] = code_after
        if infra_after != infra_before and (result.get("restart") or {}).get("ran"):
            # The section restarted the engine itself (scale --restart): expected, not a disturbance.
            result["meta"]["infra_restarted"] = {"infra_before": infra_before, "infra_after": infra_after}
        elif infra_after != infra_before:
            # Someone restarted the engine or the lab meanwhile: the numbers include that.
            result["meta"]["disturbed"] = {"infra_before": infra_before, "infra_after": infra_after}
        if code_after != code_before:
            # Someone changed the product meanwhile: the workers may have run either version.
            result["meta"].setdefault("disturbed", {})["code_changed"] = [code_before, code_after]
        return result

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


def registry() -> dict[str, Callable[[Context], dict]]:
    from bench.sections import api_load, backups, density, fill, operations, provisioning, scale, serving

    return {
        "sequential": provisioning.sequential,
        "concurrent": provisioning.concurrent,
        "api": api_load.run,
        "fill": fill.run,
        "density": density.run,
        "backups": backups.run,
        "serving": serving.run,
        "operations": operations.run,
        "scale": scale.run,
    }
