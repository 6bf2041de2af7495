"""The TUI driven with Textual's Pilot: keys in, effects on the lab and the screen.

Without root: the app on a FakeBackend that replays a recorded real status (tests/tui_fakes.py);
each key's test asserts the backend calls it made. With root (marked lab): one real 3-node lab
with 9 pods for those tests, each attaching a fresh app to it.
"""

from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable, Static

from tui.app import IpsecLabApp
from tui.backends.netns import NetnsBackend
from tui.screens.dialogs import ConfirmScreen, ErrorScreen, PromptScreen
from tui.widgets.matrix import TunnelMatrix

from .conftest import started_lab
from .tui_fakes import FAKE_RESULTS, make_app

pytestmark = [pytest.mark.asyncio]
SIZE = (150, 48)


@pytest.fixture(scope="module")
def lab():
    with started_lab("tui") as backend:
        yield backend.lab


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def until(pilot, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def new_app(lab: str) -> IpsecLabApp:
    return IpsecLabApp(NetnsBackend(lab), poll_interval=0.3)


@pytest.mark.lab
@pytest.mark.timeout(90)
async def test_take_mesh_left_down_on_node1_and_watch_it_come_back(lab):
    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None and app.status.all_tunnels_up, 15, "all tunnels up")
        await pilot.press("2")
        await until(pilot, lambda: app.current_mode == "tunnels", 5, "tunnels screen")
        matrix = app.screen.query_one(TunnelMatrix)
        await until(pilot, lambda: matrix.selected is not None, 5, "a selected tunnel")
        assert (matrix.selected.node, matrix.selected.name) == ("kube-node1", "mesh-left")
        detail = text_of(app, "#tunnel-detail")
        assert "swanctl --terminate --ike mesh-left" in detail and "ipsec down mesh-left" in detail
        old_spi = app.status.tunnel("kube-node1", "mesh-left").detail["ike_spi_local"]

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
        confirm_text = str(app.screen.query_one("#confirm-command", Static).render())
        assert "swanctl --terminate --ike mesh-left" in confirm_text and "ipsec down mesh-left" in confirm_text
        await pilot.press("y")

        await until(pilot, lambda: "came back ESTABLISHED" in text_of(app, "#tunnel-events"), 30,
                    "the events panel showing the tunnel come back")
        events = text_of(app, "#tunnel-events")
        assert "left ESTABLISHED" in events, events
        assert "kube-node1 mesh-left: swanctl --terminate --ike mesh-left" in events
        assert "data plane" in events
        await until(pilot, lambda: app.busy is None, 10, "the action to finish")
        await until(pilot, lambda: app.status.tunnel("kube-node1", "mesh-left").up, 10, "mesh-left up")
        assert app.status.tunnel("kube-node1", "mesh-left").detail["ike_spi_local"] != old_spi
        timeline = str(app.screen.query_one("#timeline", Static).render())
        assert "last gap" in timeline and "n1↔n2" in timeline
        matrix_text = str(matrix.render())
        assert "↻" in matrix_text  # the cell says it bounced


@pytest.mark.lab
@pytest.mark.timeout(120)
async def test_reboot_a_node_from_the_nodes_screen(lab):
    before = NetnsBackend(lab).status()
    uptime_before = next(n.ipsec_uptime for n in before.nodes if n.name == "kube-node2")
    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None, 15, "a status")
        table = app.screen.query_one("#nodes-table", DataTable)
        await until(pilot, lambda: table.row_count == 3, 5, "three node rows")
        await pilot.press("down")
        assert app.screen.selected_node == "kube-node2"
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.busy is None and "reboot kube-node2" in app.last_fault, 60, "the reboot")
        assert "came back ESTABLISHED" in app.last_fault, app.last_fault
        await until(pilot, lambda: app.status.all_tunnels_up, 30, "the mesh back")
        node2 = next(n for n in app.status.nodes if n.name == "kube-node2")
        assert node2.state == "ready" and node2.ipsec_uptime < uptime_before
        row = table.get_row("kube-node2")
        assert str(row[3]) == "ready" and str(row[4]) == "running"
        await until(pilot, lambda: len([p for p in app.status.pods if p.node == "kube-node2" and p.ip]) == 3, 20,
                    "kube-node2's pods back")


@pytest.mark.lab
@pytest.mark.timeout(120)
async def test_scale_the_deployment_from_the_pods_screen(lab):
    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None, 15, "a status")
        await pilot.press("3")
        await until(pilot, lambda: app.current_mode == "pods", 5, "pods screen")
        notice = text_of(app, "#pods-notice")
        assert "pods are network namespaces served by a small HTTP server, not a kubelet" in notice
        table = app.screen.query_one("#pods-table", DataTable)
        await until(pilot, lambda: table.row_count == 9, 10, "nine pod rows")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the replica prompt")
        await pilot.press("ctrl+a", "ctrl+k", "6", "enter")  # clear the field, type 6
        await until(pilot, lambda: app.current_mode == "pods" and not isinstance(app.screen, PromptScreen), 5, "prompt closed")
        await until(pilot, lambda: app.screen.query_one("#pods-table", DataTable).row_count == 6, 30, "six pod rows")
        assert len(NetnsBackend(lab).status().pods) == 6
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the replica prompt")
        await pilot.press("ctrl+a", "ctrl+k", "9", "enter")
        await until(pilot, lambda: app.screen.query_one("#pods-table", DataTable).row_count == 9, 30, "nine pod rows")


@pytest.mark.lab
@pytest.mark.timeout(60)
async def test_curl_a_pod_from_another_node(lab):
    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None and len(app.status.pods) == 9, 15, "nine pods")
        await pilot.press("3")
        table = await until(pilot, lambda: app.current_mode == "pods" and app.screen.query_one("#pods-table", DataTable),
                            5, "pods table")
        await until(pilot, lambda: table.row_count == 9, 10, "nine rows")
        pod = app.screen.selected_pod
        await pilot.press("c")
        await pilot.pause(0.2)
        await pilot.press("down", "enter")  # the second node
        await until(pilot, lambda: "Hello Kubernetes bootcamp!" in text_of(app, "#pods-reply"), 20, "the reply")
        assert f"Running on: {pod}" in text_of(app, "#pods-reply")


@pytest.mark.lab
@pytest.mark.timeout(60)
async def test_a_failing_action_shows_an_error_and_the_app_keeps_running(lab):
    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None, 15, "a status")
        app.action_tunnel_up("kube-node1", "no-such-conn")
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen), 10, "the error dialog")
        assert "no-such-conn" in str(app.screen.query_one("#error-message", Static).render())
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ErrorScreen), 5, "the dialog closed")
        seen = app.status_at
        await until(pilot, lambda: app.status_at > seen, 5, "a fresh status after the error")
        assert app.busy is None


# ---------------------------------------------------------------------------------- without root
def fake_app(mode: str = "nodes", **kw):
    app = make_app(mode, **kw)
    app.backend.calls.clear()
    return app


async def confirm(pilot, app, *keys: str) -> str:
    """Press `keys`, expect the confirmation, answer y; the confirmation's command line."""
    await pilot.press(*keys)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
    command = app.screen.command or ""
    await pilot.press("y")
    return command


def calls_of(app, kind: str) -> list[tuple]:
    return [c for c in app.backend.calls if c[0] == kind]


@pytest.mark.timeout(30)
async def test_fake_d_on_tunnels_takes_the_selected_tunnel_down_and_reports_the_watch():
    app = fake_app("tunnels")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("right", "down")  # kube-node2 -> kube-node3
        command = await confirm(pilot, app, "d")
        assert command.startswith("kube-node2# swanctl --terminate --ike mesh-right"), command
        await until(pilot, lambda: app.busy is None and calls_of(app, "tunnel_down"), 15, "the action")
        assert calls_of(app, "tunnel_down") == [("tunnel_down", "kube-node2", "mesh-right")]
        # the ping across the pair runs from the peer to kube-node2's cni0 (10.128.2.1)
        pings = [c for c in calls_of(app, "stream") if c[2][0] == "ping"]
        assert [(c[1], c[2][-1]) for c in pings] == [("kube-node3", "10.128.2.1")], pings
        await until(pilot, lambda: "no watched SA changed" in text_of(app, "#tunnel-events"), 10, "the summary")
        assert app.last_fault.startswith("kube-node2 mesh-right: swanctl --terminate --ike mesh-right")


@pytest.mark.timeout(30)
async def test_fake_u_on_tunnels_initiates_the_selected_tunnel():
    app = fake_app("tunnels")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        await until(pilot, lambda: app.busy is None and calls_of(app, "tunnel_up"), 10, "the action")
        assert calls_of(app, "tunnel_up") == [("tunnel_up", "kube-node1", "mesh-left")]
        assert calls_of(app, "tunnel_down") == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key, call", [("r", ("reboot", "kube-node2")), ("i", ("restart_ipsec", "kube-node2"))])
async def test_fake_r_and_i_on_nodes_act_on_the_selected_node(key, call):
    app = fake_app("nodes")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")
        await confirm(pilot, app, key)
        await until(pilot, lambda: app.busy is None and calls_of(app, call[0]), 15, "the action")
        assert calls_of(app, call[0]) == [call]
        assert app.last_fault.startswith(("reboot kube-node2: kube-node2 rebooted",
                                          "restart IPsec on kube-node2: charon restarted")), app.last_fault
        # every tunnel end to or from kube-node2 was watched; the ping runs from kube-node1
        pings = [c for c in calls_of(app, "stream") if c[2][0] == "ping"]
        assert [(c[1], c[2][-1]) for c in pings] == [("kube-node1", "10.128.2.1")], pings


@pytest.mark.timeout(30)
async def test_fake_pods_keys_deploy_delete_expose_and_curl():
    app = fake_app("pods")
    async with app.run_test(size=SIZE) as pilot:
        first = sorted(p.name for p in app.status.pods)[0]
        assert app.screen.selected_pod == first
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the replica prompt")
        await pilot.press("ctrl+a", "ctrl+k", "6", "enter")
        await until(pilot, lambda: app.busy is None and calls_of(app, "deploy"), 10, "deploy")
        await confirm(pilot, app, "x")
        await until(pilot, lambda: app.busy is None and calls_of(app, "delete_pod"), 10, "delete")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the port prompt")
        await pilot.press("3", "1", "9", "9", "0", "enter")
        await until(pilot, lambda: app.busy is None and calls_of(app, "expose"), 10, "expose")
        await pilot.press("c")
        await pilot.pause(0.2)
        await pilot.press("down", "enter")  # from kube-node2
        await until(pilot, lambda: app.busy is None and calls_of(app, "exec"), 10, "curl")
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen), 5, "the fake's curl failing")
        assert calls_of(app, "deploy") == [("deploy", 6)]
        assert calls_of(app, "delete_pod") == [("delete_pod", first)]
        assert calls_of(app, "expose") == [("expose", 31990)]
        pod_ip = next(p.ip for p in app.status.pods if p.name == first)
        [(_, node, argv)] = calls_of(app, "exec")
        assert node == "kube-node2" and argv[0] == "curl" and f"http://{pod_ip}:8080" in argv, argv


@pytest.mark.timeout(30)
async def test_fake_checks_keys_run_all_then_one():
    runs = []

    def runner(backend, names, reporter=None, on_result=None):
        runs.append((backend.lab, names))
        for r in FAKE_RESULTS:
            if names is None or r.name in names:
                on_result(r)
        return []

    app = fake_app("checks", check_runner=runner)
    app.set_reactive(type(app).check_results, {})
    async with app.run_test(size=SIZE) as pilot:
        await confirm(pilot, app, "a")  # the catalog has a disruptive check: it asks first
        await until(pilot, lambda: not app.checks_running and app.busy is None and runs, 10, "the run")
        assert runs == [(app.backend.lab, None)]
        assert set(app.check_results) == {r.name for r in FAKE_RESULTS}
        table = app.screen.query_one("#checks-table", DataTable)
        assert [str(table.get_row(r.name)[2]) for r in FAKE_RESULTS] == [r.outcome.value.upper() for r in FAKE_RESULTS]
        await pilot.press("down", "enter")  # the second check, read-only: no question
        await until(pilot, lambda: len(runs) == 2 and app.busy is None, 10, "the second run")
        assert runs[1] == (app.backend.lab, ["tunnels-established"])
        assert app.backend.calls == []  # the runner, not the app, talks to the lab


@pytest.mark.timeout(30)
async def test_fake_checks_screen_shows_an_unknown_outcome():
    from dataclasses import replace

    class Odd:
        value = "error"

    app = fake_app("checks")
    r = replace(FAKE_RESULTS[0], outcome=Odd())
    app.set_reactive(type(app).check_results, {r.name: r})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert str(app.screen.query_one("#checks-table", DataTable).get_row(r.name)[2]) == "ERROR"
        assert "1 error" in text_of(app, "#checks-summary")


@pytest.mark.timeout(30)
async def test_fake_statuses_arriving_while_modes_switch_and_the_app_exits_do_not_crash_it():
    # Seen once in CI at the end of the tutorial walk: a queued status reached a screen whose
    # widgets were gone. Screens now watch the app's status; a screen being torn down stops watching.
    from tui.messages import StatusUpdated

    app = fake_app("tunnels")
    async with app.run_test(size=SIZE) as pilot:
        for key in "12345" * 2:
            await pilot.press(key)
            app.post_message(StatusUpdated(app.status, app.clock()))
        await pilot.press("question_mark")
        app.post_message(StatusUpdated(app.status, app.clock()))
        await pilot.pause(0.1)
        assert app.is_running and app.current_mode == "checks"
        app.exit()
        app.post_message(StatusUpdated(app.status, app.clock()))
    assert app.return_code in (None, 0)


@pytest.mark.lab
@pytest.mark.timeout(120)
async def test_the_logs_show_each_charon_line_once_also_across_a_reboot(lab):
    # Seen in the TUI: after a node reboot some charon lines were shown twice, same timestamps.
    backend = NetnsBackend(lab)
    log = backend.charon_log("kube-node2")
    app = IpsecLabApp(NetnsBackend(lab), poll_interval=0.3, live_probes=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None and app.status.all_tunnels_up, 15, "all tunnels up")

        def shown() -> list[str]:
            return [r.text for r in app.logs.all() if r.source == "charon" and r.node == "kube-node2"]
        await until(pilot, shown, 5, "kube-node2's charon backlog")
        before = len(shown())
        await pilot.press("1", "down")
        await confirm(pilot, app, "r")
        await until(pilot, lambda: app.busy is None and "reboot kube-node2" in app.last_fault, 60, "the reboot")
        await until(pilot, lambda: app.status.all_tunnels_up, 30, "the mesh back")
        await pilot.pause(1.0)  # two more tail polls
        lines = shown()
        in_file = log.read_text(errors="replace").splitlines()
        twice = sorted({t for t in lines if lines.count(t) > in_file.count(t)})
        assert not twice, f"{len(twice)} charon lines shown more often than the log has them: {twice[:3]}"
        started = [t for t in lines[before:] if "charon" in t.lower() and "starting" in t.lower()]
        assert started, f"no line of the rebooted charon starting was shown: {lines[before:][:5]}"
        # charon may have written more since the last tail poll: the shown lines are the log's lines
        # in order, up to some point at its end.
        ends = [n for n in range(len(in_file), len(lines) - 1, -1) if in_file[n - len(lines):n] == lines]
        assert ends and len(in_file) - ends[0] <= 20, "the shown lines are not the log's last lines in order"


@pytest.mark.timeout(30)
async def test_fake_palette_entries_each_name_an_action_and_one_runs_from_the_palette():
    from tui.live.palette import palette_entries

    app = fake_app("nodes")
    entries = palette_entries(app.lab_name, app.status, app.load_catalog()[0])
    assert len(entries) == 6 + 3 * 4 + 6 * 2 + 9 * (1 + 3) + 3 + 3 + 5 + 4
    missing = [e.action for e in entries if e.action not in ("switch_mode", "quit")
               and not callable(getattr(app, f"action_{e.action}", None))]
    assert not missing, missing
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        for ch in "Take down mesh-right on kube-node3":
            await pilot.press("space" if ch == " " else ch)
        await pilot.pause(0.3)
        command = await confirm(pilot, app, "enter")
        assert command.startswith("kube-node3# swanctl --terminate --ike mesh-right"), command
        await until(pilot, lambda: app.busy is None and calls_of(app, "tunnel_down"), 15, "the action")
        assert calls_of(app, "tunnel_down") == [("tunnel_down", "kube-node3", "mesh-right")]


# -- link impairment (tui/screens/link.py) ------------------------------------------------------
@pytest.mark.timeout(30)
async def test_fake_l_on_nodes_opens_the_link_dialog_and_applies_what_it_says():
    from tui.lab import linkshape
    from tui.lab.linkshape import Impairment

    app = fake_app("nodes")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "l")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the link dialog")
        assert "Impair kube-node2's underlay link" in str(app.screen.title_text)
        await pilot.press(*"lose 20", "enter")  # a word the command does not know: one line, nothing runs
        await until(pilot, lambda: not isinstance(app.screen, PromptScreen), 5, "the dialog closed")
        await pilot.pause(0.2)
        assert calls_of(app, "exec") == []
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the link dialog again")
        await pilot.press(*"loss 20 rate 10", "enter")
        await until(pilot, lambda: calls_of(app, "exec") and app.busy is None, 15, "the action")
        argv = linkshape.apply_argv(Impairment(loss_pct=20, rate_mbit=10), "192.168.56.12")
        assert calls_of(app, "exec")[0] == ("exec", "kube-node2", tuple(argv))  # the node's own commands


@pytest.mark.lab
@pytest.mark.timeout(90)
async def test_link_loss_from_the_nodes_screen_shows_in_its_column_and_on_the_timeline(lab):
    from tui.live import link

    app = new_app(lab)
    backend = NetnsBackend(lab)
    try:
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#nodes-table", DataTable)
            await until(pilot, lambda: table.row_count == 3 and app.links.get("kube-node2") == "", 15,
                        "the LINK column read from the nodes")
            await pilot.press("down", "l")
            await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the link dialog")
            await pilot.press(*"loss 50", "enter")
            await until(pilot, lambda: app.links.get("kube-node2") == "loss 50% (iptables)"
                        or app.links.get("kube-node2") == "loss 50%", 15, "the LINK column")
            assert str(table.get_row("kube-node2")[8]).startswith("loss 50%")
            # The pinger's one ping a second across each pair misses about half the seconds of the
            # pairs with kube-node2: the reachability timeline shows them down, "▁", or "▄" where the
            # status poller saw the tunnels up in the same second (ci13 failed on "▁" alone).
            await until(pilot, lambda: set("▁▄") & set(app.reach.cells(("kube-node1", "kube-node2"))), 20,
                        "a lost second on the n1↔n2 timeline")
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "the link dialog")
            await pilot.press(*"clear", "enter")
            await until(pilot, lambda: app.links.get("kube-node2") == "", 15, "the link cleared")
    finally:
        link.clear(backend, "kube-node2")  # the module's lab is shared: never leave it impaired
