"""Runs checks from the catalog against a lab, and the headless face: `ipsec-lab --run-checks`."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backends.base import Backend
from ..exitcodes import ExitCode, run_exit_code
from ..lab.errors import LabError, UsageError
from ..lab.events import Reporter
from ..lab.model import LabSpec, node_count
from .base import Check, CheckContext, CheckResult, Outcome, Verdict
from .catalog import BY_NAME, CATALOG, describe


def select(names: Sequence[str] | None) -> list[Check[Any]]:
    if not names:
        return list(CATALOG)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UsageError(f"unknown check {unknown[0]!r}; `ipsec-lab --list-checks` lists them")
    wanted = set(names)
    return [c for c in CATALOG if c.name in wanted]  # catalog order: faults after the healthy checks


def prepare(backend: Backend, reporter: Reporter) -> None:
    """The checks need the seed's workload: 3 bootcamp pods per node, exposed on a NodePort."""
    status = backend.status()
    want = 3 * len(status.nodes)
    if len([p for p in status.pods if p.ip]) != want:
        backend.deploy(want)
    if not backend.status().services:
        backend.expose()


def run_one(check: Check[Any], ctx: CheckContext) -> CheckResult:
    """Collect, then judge. A judge's verdict is PASSED or FAILED; when collect cannot observe
    (a LabError, a timeout, a missing tool, a check's own bug) the result is ERROR, never FAILED."""
    t0 = time.monotonic()
    observation = None
    try:
        observation = check.collect(ctx)
    except LabError as exc:
        verdict = Verdict.error(str(exc))
    except Exception as exc:  # a check's own bug must not stop the suite; say what broke
        verdict = Verdict.error(f"{type(exc).__name__}: {exc}")
    else:
        try:
            verdict = check.judge(observation)
        except Exception as exc:  # a judge that cannot read its observation is a bug, not a verdict
            verdict = Verdict.error(f"the judge crashed: {type(exc).__name__}: {exc}")
    return CheckResult(check.name, check.purpose, verdict.outcome, verdict.detail, time.monotonic() - t0,
                       verdict.measurements, observation)


def run_checks(
    backend: Backend,
    names: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    *,
    prepare_workload: bool = True,
) -> list[CheckResult]:
    """Run the selected checks in catalog order; blocking (the TUI calls it from a worker).

    With `prepare_workload`, the seed's workload (3 pods per node, a NodePort) is made first if
    missing; the tutorial turns it off, since deploying is one of its steps. A check that watches
    the faults (Check.watches_faults) has its watch started before the first other disruptive
    check, and stopped when the run ends, whatever happened.
    """
    checks = select(names)
    reporter = reporter or Reporter(source="checks")
    ctx = CheckContext(backend, backend.spec(), reporter)
    if prepare_workload:
        with reporter.step("prepare the workload (deploy, expose)"):
            prepare(backend, reporter)
    results = []
    watches = [c.watches_faults for c in checks if c.watches_faults is not None]
    watching = False
    try:
        for check in checks:
            is_fault = check.disruptive and check.watches_faults is None
            if is_fault and not watching:
                for watch in watches:
                    watch.start(ctx)
                watching = True
            with reporter.step(f"check {check.name}") as step:
                result = run_one(check, ctx)
                step.detail = f"{result.outcome.value}: {result.detail}"
                step.failed = result.outcome in (Outcome.FAILED, Outcome.ERROR)
            if is_fault:
                ctx.faults.append(check.name)
            reporter.line(f"{result.outcome.value.upper():7} {check.name}: {result.detail}", source="checks")
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        for watch in watches:  # a check failed before the watcher could end its watch
            try:
                watch.stop(ctx)
            except Exception as exc:
                reporter.line(f"could not stop a fault watch: {exc}", stream="stderr", source="checks")
    return results


# -- reports ----------------------------------------------------------------------------------
def counts(results: Sequence[CheckResult]) -> dict[str, int]:
    """How many checks ended each way, every outcome named (0 included), in Outcome's order."""
    return {o.value: sum(r.outcome is o for r in results) for o in Outcome}


def summary_line(results: Sequence[CheckResult]) -> str:
    c = counts(results)
    return f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped"


def junit_xml(results: list[CheckResult], lab: str, seconds: float) -> str:
    suite = ET.Element("testsuite", {
        "name": "ipsec-lab", "tests": str(len(results)),
        "failures": str(sum(r.outcome is Outcome.FAILED for r in results)),
        "errors": str(sum(r.outcome is Outcome.ERROR for r in results)),
        "skipped": str(sum(r.outcome is Outcome.SKIPPED for r in results)),
        "time": f"{seconds:.3f}", "hostname": lab,
    })
    for r in results:
        case = ET.SubElement(suite, "testcase", {"classname": "ipsec-lab.checks", "name": r.name, "time": f"{r.seconds:.3f}"})
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", {"name": "purpose", "value": r.purpose})
        for m in r.measurements:
            ET.SubElement(props, "property", {"name": f"{m.name} ({m.unit})", "value": str(m.value)})
        if r.outcome is Outcome.FAILED:
            ET.SubElement(case, "failure", {"message": r.detail, "type": "CheckFailed"}).text = r.detail
        elif r.outcome is Outcome.ERROR:  # the check could not observe: not a verdict on the lab
            ET.SubElement(case, "error", {"message": r.detail, "type": "CheckError"}).text = r.detail
        elif r.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped", {"message": r.detail})
        ET.SubElement(case, "system-out").text = r.detail
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def json_report(results: list[CheckResult], lab: str, backend: str, datapath: str, seconds: float) -> str:
    return json.dumps({
        "lab": lab, "backend": backend, "datapath": datapath, "seconds": round(seconds, 3),
        "passed": all(r.outcome in (Outcome.PASSED, Outcome.SKIPPED) for r in results),
        "counts": counts(results),
        "exit_code": int(run_exit_code(r.outcome.value for r in results)),
        "checks": [r.to_json() for r in results],
    }, indent=2)


# -- the headless face --------------------------------------------------------------------------
def main_checks(args: Any) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..backends.registry import get_backend
    from ..backends.registry import lab_backend_name
    from ..live.console import ConsoleSink

    out = Console(highlight=False, soft_wrap=True)
    if args.list_checks:
        table = Table(title="ipsec-lab checks")
        table.add_column("NAME", no_wrap=True)
        for col in ("PURPOSE", "RUNS", "FAULT"):
            table.add_column(col)
        for c in CATALOG:
            d = describe(c)
            table.add_row(d["name"], d["purpose"], d["runs"], "yes" if d["disruptive"] else "")
        out.print(table)
        return ExitCode.OK
    checks = select(args.only)  # bad names fail here, before anything is brought up
    for path in (args.junit, args.json_path):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: no such directory")
    reporter = Reporter(ConsoleSink(out, quiet=args.quiet), source="checks")
    backend = get_backend(lab_backend_name(args.lab, args.backend), args.lab, reporter,
                          node_mode=args.kubernetes)
    brought_up = False
    t0 = time.monotonic()
    if not backend.exists():
        try:
            backend.up(LabSpec.build(args.lab, node_count(args.nodes), auth=getattr(args, "auth", None) or "psk"))
        except UsageError:
            raise
        except LabError as exc:
            out.print(f"[red]lab {args.lab!r} could not be brought up:[/] {exc}")
            return ExitCode.LAB_UNAVAILABLE
        brought_up = True
    try:
        try:
            status = backend.status()
        except LabError as exc:
            out.print(f"[red]lab {args.lab!r} cannot be reached:[/] {exc}")
            return ExitCode.LAB_UNAVAILABLE
        results = run_checks(backend, [c.name for c in checks], reporter)
        seconds = time.monotonic() - t0
        table = Table(title=f"ipsec-lab checks on lab {args.lab} ({status.backend}, {status.datapath}) in {seconds:.1f} s")
        table.add_column("CHECK", no_wrap=True)
        for col in ("RESULT", "TIME", "DETAIL"):
            table.add_column(col)
        colour = {Outcome.PASSED: "green", Outcome.FAILED: "red", Outcome.ERROR: "magenta", Outcome.SKIPPED: "yellow"}
        for r in results:
            table.add_row(r.name, f"[{colour[r.outcome]}]{r.outcome.value}[/]", f"{r.seconds:.2f}s", r.detail)
        out.print(table)
        if args.junit:
            Path(args.junit).write_text(junit_xml(results, args.lab, seconds))
        if args.json_path:
            Path(args.json_path).write_text(json_report(results, args.lab, status.backend, status.datapath, seconds))
        out.print(summary_line(results))
        code = run_exit_code(r.outcome.value for r in results)
        if code is ExitCode.CHECK_ERROR:
            out.print("[magenta]no check failed, but some could not observe the lab (ERROR): fix what their detail names and run them again[/]")
        return code
    finally:
        if brought_up and not args.keep:
            backend.down()
        elif brought_up:
            out.print(f"lab {args.lab} kept up (--keep); `ipsec-lab --lab {args.lab} down` removes it")
