"""Every judge on observations recorded from real labs (tests/recordings/, made by
tests/record_observations.py): no root, no lab. Each recording's verdict is replayed exactly (the
outcome and the whole detail line, counts included); every check has a passing twin; and a line
trace proves that every failure branch of every judge is taken by some recording.

The runner's three outcomes are kept apart here too: a collect that raises is ERROR (never FAILED),
in the result, the JUnit report, the JSON report and the exit code.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tui.checks import catalog, runner
from tui.checks.base import Check, CheckContext, CheckResult, FaultWatch, Outcome, Verdict
from tui.exitcodes import OUTCOME_EXIT, ExitCode, run_exit_code
from tui.lab.events import Reporter

RECORDINGS = Path(__file__).resolve().parent / "recordings"
FILES = sorted(RECORDINGS.glob("*/*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_judge_gives_the_recorded_verdict(path):
    rec = load(path)
    assert {"check", "scenario", "broken", "how", "recorded", "outcome", "detail", "observation"} <= set(rec)
    verdict = catalog.BY_NAME[rec["check"]].judge(rec["observation"])
    assert (verdict.outcome.value, verdict.detail) == (rec["outcome"], rec["detail"])
    assert "\n" not in verdict.detail
    # Only the healthy run passes; every breakage is a verdict against the lab, never an error.
    assert verdict.outcome is (Outcome.PASSED if rec["scenario"] == "healthy" else Outcome.FAILED), rec["broken"]


def test_every_check_has_a_passing_twin_and_a_failing_recording():
    seen: dict[str, set[str]] = {}
    for p in FILES:
        rec = load(p)
        seen.setdefault(rec["check"], set()).add(rec["outcome"])
    missing = [c for c in catalog.catalog_names() if seen.get(c) != {"passed", "failed"}]
    assert not missing, f"checks without both a passing and a failing recording: {missing}"


# -- every failure branch is taken ------------------------------------------------------------
JUDGE_FILES = sorted({inspect.getsourcefile(c.judge) or "" for c in catalog.CATALOG})  # catalog.py, impairment.py


def _failure_lines() -> dict[tuple[str, int], str]:
    """(file, line) in the judges' files (JUDGE_FILES) where a judge decides FAILED: each `Verdict.failed(` and each
    `bad.append(` inside a judge function (or a helper a judge calls), with the function's name."""
    judges = {"_judge_recovery", "_not_healed"} | {f.__name__ for f in (c.judge for c in catalog.CATALOG)}
    lines: dict[tuple[str, int], str] = {}
    for path in JUDGE_FILES:
        for fn in ast.parse(Path(path).read_text()).body:
            if isinstance(fn, ast.FunctionDef) and fn.name in judges:
                for node in ast.walk(fn):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                            (node.func.attr == "failed" and getattr(node.func.value, "id", "") == "Verdict")
                            or (node.func.attr == "append" and getattr(node.func.value, "id", "") == "bad")):
                        lines[(path, node.lineno)] = fn.name
    return lines


def test_every_failure_branch_of_every_judge_is_taken_by_a_recording():
    wanted = _failure_lines()
    assert len(wanted) > 30  # the parse found the judges' branches
    hit: set[tuple[str, int]] = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename in JUDGE_FILES:
            if event == "line":
                hit.add((frame.f_code.co_filename, frame.f_lineno))
            return tracer
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        for p in FILES:
            rec = load(p)
            catalog.BY_NAME[rec["check"]].judge(rec["observation"])
    finally:
        sys.settrace(old)
    untaken = sorted(f"{Path(f).name}:{n} in {wanted[(f, n)]}" for f, n in wanted if (f, n) not in hit)
    assert not untaken, "failure branches no recording takes: " + ", ".join(untaken)


# -- three outcomes, kept apart -----------------------------------------------------------------
class _Backend:
    """The little of a Backend the runner itself touches when a check is handed to it."""

    name = "fake"

    def spec(self):
        from tui.lab.model import LabSpec

        return LabSpec.build("fake", 3)


def _ctx() -> CheckContext:
    return CheckContext(_Backend(), _Backend().spec(), Reporter())  # type: ignore[arg-type]


def _raises(ctx):
    raise TimeoutError("ping on kube-node1 timed out after 30 s")


def test_a_collect_that_cannot_observe_is_an_error_not_a_failure():
    from tui.lab.errors import LabError

    def lab_error(ctx):
        raise LabError("tcpdump on the underlay did not start: tcpdump: command not found")

    for collect, detail in ((_raises, "TimeoutError: ping on kube-node1 timed out after 30 s"),
                            (lab_error, "tcpdump on the underlay did not start: tcpdump: command not found")):
        r = runner.run_one(Check("c", "p", "r", collect, lambda o: Verdict.passed("no")), _ctx())
        assert (r.outcome, r.detail, r.observation) == (Outcome.ERROR, detail, None)
    crash = runner.run_one(Check("c", "p", "r", lambda ctx: {"nodes": []}, lambda o: Verdict.passed(o["x"])), _ctx())
    assert (crash.outcome, crash.detail) == (Outcome.ERROR, "the judge crashed: KeyError: 'x'")
    ok = runner.run_one(Check("c", "p", "r", lambda ctx: {"n": 1}, lambda o: Verdict.failed(f"{o['n']}/3 down")), _ctx())
    assert (ok.outcome, ok.detail, ok.observation) == (Outcome.FAILED, "1/3 down", {"n": 1})


def _results() -> list[CheckResult]:
    return [CheckResult("a", "pa", Outcome.PASSED, "fine", 0.1), CheckResult("b", "pb", Outcome.FAILED, "2/9 lost", 0.2),
            CheckResult("c", "pc", Outcome.ERROR, "TimeoutError: x", 0.3), CheckResult("d", "pd", Outcome.SKIPPED, "n/a", 0)]


def test_junit_json_and_exit_code_keep_the_outcomes_apart():
    suite = ET.fromstring(runner.junit_xml(_results(), "lab", 1.0)).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    kinds = {c.get("name"): [e.tag for e in c if e.tag in ("failure", "error", "skipped")] for c in suite.findall("testcase")}
    assert kinds == {"a": [], "b": ["failure"], "c": ["error"], "d": ["skipped"]}
    assert suite.find("testcase[@name='c']/error").get("message") == "TimeoutError: x"
    report = json.loads(runner.json_report(_results(), "lab", "netns", "kernel-libipsec", 1.0))
    assert report["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    assert [c["outcome"] for c in report["checks"]] == ["passed", "failed", "error", "skipped"]
    assert report["passed"] is False and report["exit_code"] == 1
    errors_only = [r for r in _results() if r.outcome is not Outcome.FAILED]
    assert json.loads(runner.json_report(errors_only, "lab", "n", "d", 1.0))["passed"] is False
    assert runner.summary_line(_results()) == "1 passed, 1 failed, 1 errors, 1 skipped"


@pytest.mark.parametrize("outcomes, code", [
    ((), ExitCode.OK), (("passed", "skipped"), ExitCode.OK), (("passed", "failed"), ExitCode.CHECK_FAILED),
    (("passed", "error"), ExitCode.CHECK_ERROR), (("error", "failed", "passed"), ExitCode.CHECK_FAILED),
])
def test_exit_code_of_a_run(outcomes, code):
    assert run_exit_code(outcomes) is code
    assert set(OUTCOME_EXIT) == {o.value for o in Outcome}
    assert int(ExitCode.CHECK_ERROR) == 4


# -- the runner has no special case by name ------------------------------------------------------
def test_a_fault_watch_is_declared_and_runs_across_the_faults(monkeypatch):
    log: list[str] = []
    watch = FaultWatch(start=lambda ctx: log.append(f"start {list(ctx.faults)}"),
                       stop=lambda ctx: log.append(f"stop {list(ctx.faults)}"))

    def step(name):
        return lambda ctx: log.append(name) or {}

    checks = [Check("read", "", "", step("read"), lambda o: Verdict.passed("")),
              Check("fault1", "", "", step("fault1"), lambda o: Verdict.passed(""), disruptive=True),
              Check("fault2", "", "", _raises, lambda o: Verdict.passed(""), disruptive=True),
              Check("watcher", "", "", lambda ctx: log.append(f"watcher sees {ctx.faults}") or {},
                    lambda o: Verdict.passed(""), disruptive=True, watches_faults=watch)]
    monkeypatch.setattr(runner, "CATALOG", checks)
    monkeypatch.setattr(runner, "BY_NAME", {c.name: c for c in checks})
    results = runner.run_checks(_Backend(), prepare_workload=False)  # type: ignore[arg-type]
    assert [r.outcome for r in results] == [Outcome.PASSED, Outcome.PASSED, Outcome.ERROR, Outcome.PASSED]
    assert log == ["read", "start []", "fault1", "watcher sees ['fault1', 'fault2']",
                   "stop ['fault1', 'fault2']"]
    assert inspect.getsource(runner).count("no-leak") == 0
    assert catalog.BY_NAME["no-leak-during-faults"].watches_faults is not None


def test_a_check_that_fails_or_errors_ends_its_step_as_failed(monkeypatch):
    """The progress line's mark follows the outcome (ci run on VMs printed "✓ check ... error")."""
    from tui.lab.events import StepFinished
    checks = [Check("good", "", "", lambda ctx: {}, lambda o: Verdict.passed("fine")),
              Check("bad", "", "", lambda ctx: {}, lambda o: Verdict.failed("broken")),
              Check("blind", "", "", _raises, lambda o: Verdict.passed(""))]
    monkeypatch.setattr(runner, "CATALOG", checks)
    monkeypatch.setattr(runner, "BY_NAME", {c.name: c for c in checks})
    seen: list[StepFinished] = []
    reporter = Reporter(lambda e: seen.append(e) if isinstance(e, StepFinished) else None, source="checks")
    runner.run_checks(_Backend(), reporter=reporter, prepare_workload=False)  # type: ignore[arg-type]
    assert [(e.step, e.ok) for e in seen] == [("check good", True), ("check bad", False), ("check blind", False)]


def test_the_heal_wait_reads_its_bound_when_called(monkeypatch):
    """tests/test_checks.py shortens HEAL_TIMEOUT_S with monkeypatch: that must take effect."""
    import time
    from types import SimpleNamespace

    down = SimpleNamespace(all_tunnels_up=False, tunnels=[SimpleNamespace(node="kube-node1", name="mesh-left", up=False)])
    ctx = SimpleNamespace(status=lambda: down)
    monkeypatch.setattr(catalog, "HEAL_TIMEOUT_S", 0.2)
    t0 = time.monotonic()
    assert catalog._wait_healthy(ctx) == (None, ["kube-node1/mesh-left"])
    assert time.monotonic() - t0 < 2.0


# -- per-backend bounds -----------------------------------------------------------------------
def test_a_vm_reboot_is_judged_by_the_vm_bound_which_the_result_prints():
    """A real VM reboot under emulation takes tens of seconds: the catalog's VM bound applies to
    observations made on VMs, and the detail says so; the same gap on namespaces fails."""
    obs = load(RECORDINGS / "recover-node-reboot" / "healthy.json")["observation"]
    gap = catalog.VM_REBOOT_MEASURED_S
    vm = dict(obs, nodes="vm", gap=gap)
    verdict = catalog.judge_recover_node_reboot(vm)
    assert verdict.outcome is Outcome.PASSED
    assert f"(bound {catalog.BOUNDS['vm']['node-reboot']} s on VMs)" in verdict.detail
    ns = dict(obs, nodes="namespace", gap=gap)
    assert catalog.judge_recover_node_reboot(ns).outcome is Outcome.FAILED
    assert "nodes" not in obs  # recordings made before the field: judged as namespaces
    over = dict(vm, gap=catalog.BOUNDS["vm"]["node-reboot"] + 1)
    assert catalog.judge_recover_node_reboot(over).outcome is Outcome.FAILED
