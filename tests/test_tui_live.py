"""The TUI's plain-Python state: bounded logs, the reachability timeline, file tails, gap maths."""

from __future__ import annotations

from tui.lab.events import OutputLine, StepFinished, StepStarted
from tui.live.logs import CharonTails, LogStore, ProgressCounter
from tui.live.reach import Reachability, pair_of
from tui.live.text import age, fmt_gap

from .tui_fakes import recorded_status


def test_log_store_is_bounded_and_readers_get_only_new_lines():
    store = LogStore(cap=100)
    for i in range(250):
        store.add("charon", f"line {i}", node="kube-node1")
    assert len(store) == 100
    assert store.all()[0].text == "line 150"
    last = store.all()[-1].seq
    store.add("actions", "new")
    assert [r.text for r in store.after(last)] == ["new"]
    assert store.after(store.all()[-1].seq) == []
    assert store.sources == {"charon", "actions"} and store.nodes == {"kube-node1"}


def test_events_become_log_lines_and_progress():
    store, progress = LogStore(), ProgressCounter(3)
    for e in (StepStarted("boot kube-node1"), OutputLine("provisioning", "hello", node="kube-node1"),
              StepFinished("boot kube-node1", True, 0.2)):
        store.add_event(e)
        progress.feed(e)
    assert [r.text for r in store.all()] == ["▶ boot kube-node1", "hello", "✓ boot kube-node1 (0.20 s)"]
    assert progress.done == 1 and progress.current == "boot kube-node1" and not progress.failed


def test_reachability_records_outages_per_source_and_the_gap():
    now = [1000.0]
    reach = Reachability(clock=lambda: now[0])
    pair = pair_of("kube-node2", "kube-node1")
    assert pair == ("kube-node1", "kube-node2")
    reach.observe(pair, True)
    now[0] = 1001.2
    reach.observe(pair, False, why="kube-node1 mesh-left DOWN/DOWN")
    now[0] = 1001.25
    reach.observe(pair, True)
    tl = reach.pairs[pair]
    assert tl.last_outage.seconds == 0.05 or abs(tl.last_outage.seconds - 0.05) < 1e-9
    assert reach.cells(pair).endswith("█▄")  # up in second 1000, both in second 1001
    texts = [t for _, t in reach.recent_transitions()]
    assert texts[0].startswith("kube-node1 ↔ kube-node2 DOWN [state]")
    assert texts[1] == "kube-node1 ↔ kube-node2 UP again [state] after 50 ms"
    reach.observe(pair, False, source="ping")  # another source does not end the state outage
    assert tl.up == {"state": True, "ping": False} and tl.is_up is False


def test_reachability_from_a_recorded_status():
    reach = Reachability(clock=lambda: 5.0)
    reach.observe_status(recorded_status())
    assert len(reach.pairs) == 3 and all(tl.is_up for tl in reach.pairs.values())


def test_charon_tails_read_each_line_once_through_the_backend(tmp_path):
    from .tui_fakes import FakeBackend

    path = tmp_path / "charon.log"

    class LogBackend(FakeBackend):
        def charon_log(self, node):
            return path if node == "kube-node1" else None

    path.write_text("old 1\nold 2\nold 3\n")
    tails, store = CharonTails(LogBackend(recorded_status()), backlog=2), LogStore()
    assert tails.poll(["kube-node1", "kube-node2"]) == [("kube-node1", "old 2"), ("kube-node1", "old 3")]
    with path.open("a") as f:
        f.write("new 1\npart")
    assert tails.poll(["kube-node1"]) == [("kube-node1", "new 1")]  # a half-written line waits
    with path.open("a") as f:
        f.write("ial\n")
    assert tails.into(store, ["kube-node1"]) == 1
    path.write_text("after reboot\n")  # started anew, shorter: read from its start
    assert tails.into(store, ["kube-node1"]) == 1
    assert tails.poll(["kube-node1"]) == []
    assert [(r.source, r.node, r.text) for r in store.all()] == [
        ("charon", "kube-node1", "partial"), ("charon", "kube-node1", "after reboot")]


def test_formatting():
    assert fmt_gap(0.0031) == "3 ms" and fmt_gap(1.5) == "1.50 s" and fmt_gap(None) == "—"
    assert age(45) == "45s" and age(600) == "10m" and age(7200) == "2h" and age(None) == "—"
