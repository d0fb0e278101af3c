"""`python -m bench`: run the sections, clean up whatever happens, write and print the results."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from bench import config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark wpfleet against the lab; results in bench/results/ (latest.json, latest.md, PNGs).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("QUICK", "") not in ("", "0"),
        help="a small run (under two minutes, plus about a minute and a half for backups and two and a half for serving); also QUICK=1 in the environment",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SECTION",
        help=f"run only these sections ({', '.join(config.SECTIONS)}); repeat or comma-separate. "
        f"The other sections of the previous latest.json are kept. Without it: {', '.join(config.DEFAULT_SECTIONS)}",
    )
    parser.add_argument(
        "--fill",
        type=int,
        metavar="N",
        help="section scale: build N real sites, measured at 0, N/4, N/2 and N existing "
        f"(default {config.FULL_PLAN.scale_fill}, QUICK {config.QUICK_PLAN.scale_fill}); "
        "without --only, runs the scale section alone (make bench FILL=N)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="section scale: after the last level, SIGKILL dockerd, start it again with lab/up.sh and time "
        "until every site answers 200 again (disturbs every other user of the engine; make bench RESTART=1)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: redraw the plots and latest.md from OUT/latest.json and print the summary",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results directory (default {config.DEFAULT_OUT}; {config.SCALE_OUT} when only scale runs)",
    )
    args = parser.parse_args(argv)
    if args.fill is not None and args.fill < 0:
        parser.error("--fill takes a number of sites, 0 or more")
    if args.only is None and (args.fill is not None or args.restart):
        args.only = ["scale"]
    if args.only:
        only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
        unknown = [name for name in only if name not in config.SECTIONS]
        if unknown:
            parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(config.SECTIONS)}")
        # Keep the canonical order whatever order they were given in.
        args.only = [name for name in config.SECTIONS if name in only]
    if (args.fill is not None or args.restart) and "scale" not in (args.only or []):
        parser.error("--fill and --restart are the scale section's: add scale to --only")
    if args.out is None:
        args.out = config.SCALE_OUT if args.only == ["scale"] else config.DEFAULT_OUT
    return args


@contextlib.contextmanager
def single_run() -> Iterator[None]:
    """One bench at a time on this machine: the start-up sweep would destroy another run's sites."""
    config.LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(config.LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"bench: another bench run holds {config.LOCK_FILE}; wait for it to finish") from None
        yield


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class CleanupShield:
    """During cleanup the first Ctrl-C only warns: stopping half-way would leak sites."""

    def __init__(self) -> None:
        self.presses = 0

    def __call__(self, signum, frame) -> None:
        self.presses += 1
        if self.presses >= 2:
            raise KeyboardInterrupt("cleanup abandoned; the next bench run removes the leftovers")
        print("\nbench: cleaning up, please wait (Ctrl-C again to abandon; the next run would clean up)", flush=True)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_sections(names: list[str], ctx, results: dict) -> None:
    """Each section in turn, into ``results`` (kept if interrupted); a failing one is recorded
    and its sites removed before the next starts."""
    from bench import cleanup
    from bench.sections import registry

    sections = registry()
    for name in names:
        log(f"{name} ...")
        try:
            results[name] = sections[name](ctx)
            log(f"{name} done in {results[name]['meta']['seconds']} s")
        except Exception as exc:
            log(f"{name} FAILED: {exc.__class__.__name__}: {exc}")
            results[name] = {"error": f"{exc.__class__.__name__}: {exc}", "traceback": traceback.format_exc()}
            if cleanup.REGISTRY:
                results[name]["cleanup"] = cleanup.force_remove(set(cleanup.REGISTRY))


def clean_up(panel) -> dict:
    """Stop the workers, remove everything of the bench's, stop the web server; never raises."""
    from bench import cleanup

    shield = CleanupShield()
    signal.signal(signal.SIGINT, shield)
    signal.signal(signal.SIGTERM, shield)
    log("cleaning up")
    report: dict = {}
    try:
        # Workers first: nothing may be half-way through a site while it is removed.
        panel.stop_cluster()
        report = cleanup.sweep("end of run")
    except Exception as exc:
        report["errors"] = {"cleanup": f"{exc.__class__.__name__}: {exc}"}
        log(
            f"cleanup FAILED ({exc}); the next bench run sweeps the leftovers (`python -m bench --quick --only api` is the shortest)"
        )
    finally:
        panel.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    return report


def write_outputs(out: Path, meta: dict, sections: dict, only: list[str] | None) -> dict:
    from bench import plots, report

    out.mkdir(parents=True, exist_ok=True)
    previous = report.load(out / "latest.json") if only else None
    results = report.merge(previous, meta, sections, only)
    files, errors = plots.draw_all(results, out)
    results["meta"]["plots"] = files
    if errors:
        results["meta"]["plot_errors"] = errors
    report.write_json(out / "latest.json", results)
    (out / "latest.md").write_text(report.markdown(results, files) + "\n")
    return results


def report_only(out: Path) -> int:
    """Redraw plots and latest.md from latest.json (after changing the report code)."""
    from bench import plots, report

    results = report.load(out / "latest.json")
    if results is None:
        print(f"bench: no results in {out / 'latest.json'}", file=sys.stderr)
        return 2
    results["targets"] = report.evaluate(results["sections"])
    files, _ = plots.draw_all(results, out)
    (out / "latest.md").write_text(report.markdown(results, files) + "\n")
    print(report.console_summary(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only(args.out)
    plan = config.QUICK_PLAN if args.quick else config.FULL_PLAN
    if args.fill is not None:
        plan = dataclasses.replace(plan, scale_fill=args.fill)
    if args.restart:
        plan = dataclasses.replace(plan, scale_restart=True)
    names = args.only or list(config.DEFAULT_SECTIONS)
    with single_run():
        from bench.environment import git_info, machine_info, settings_info, setup_django

        setup_django()
        from bench import cleanup, report
        from bench.api import Api
        from bench.panel import BenchPanel
        from bench.sections import Context

        # Ctrl-C and TERM both end the run through the cleanup below (SIGINT
        # explicitly: a shell starts background jobs with it ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        started = time.time()
        meta: dict = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "quick": plan.quick,
            "only": args.only,
            "argv": sys.argv[1:],
            "git": git_info(),
            "machine": machine_info(),
            "settings": settings_info(plan),
        }
        log(f"{'QUICK ' if plan.quick else ''}run of {', '.join(names)}; load {meta['machine']['loadavg_at_start']}")
        panel = BenchPanel()
        if "scale" in names:
            from bench.sections.scale import make_room

            meta["scale_max_sites"] = make_room(plan, panel.env)
        sections: dict = {}
        interrupted = False
        try:
            panel.fresh_database()
            meta["backup_repository"] = panel.fresh_repository()
            meta["cleanup_at_start"] = cleanup.sweep("leftovers of an earlier run")
            panel.start_web()
            ctx = Context(panel, plan, Api(panel.tokens(1)[0]))
            run_sections(names, ctx, sections)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted")
        finally:
            meta["cleanup_at_end"] = clean_up(panel)
        meta.update(
            {
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.time() - started, 1),
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                "cluster_starts": panel.cluster_starts,
            }
        )
        if interrupted:
            args.out.mkdir(parents=True, exist_ok=True)
            partial = report.merge(None, meta, sections, None)
            report.write_json(args.out / "interrupted.json", partial)
            log(f"interrupted: partial results in {args.out / 'interrupted.json'}; latest.* untouched")
            return 130
        results = write_outputs(args.out, meta, sections, args.only)
        print()
        print(report.console_summary(results))
        print(f"\nresults: {args.out / 'latest.json'}, {args.out / 'latest.md'}, {', '.join(results['meta']['plots'])}")
        leaked = meta["cleanup_at_end"].get("errors") or meta["cleanup_at_end"].get("sites")
        if leaked:
            log(
                f"cleanup at end found {meta['cleanup_at_end'].get('sites')} site(s) to remove: "
                f"{meta['cleanup_at_end']}"
            )
        failed = [name for name, body in sections.items() if body.get("error")]
        return 1 if failed or meta["cleanup_at_end"].get("errors") else 0
