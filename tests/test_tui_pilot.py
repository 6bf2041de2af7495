"""The TUI on a real netns lab, driven with Textual's Pilot: keys in, effects on the lab and the screen.

One 3-node lab with 9 pods for the module; every test attaches a fresh app to it.
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

pytestmark = [pytest.mark.lab, pytest.mark.asyncio]
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


@pytest.mark.timeout(60)
async def test_a_status_that_arrives_while_a_screen_is_torn_down_does_not_crash_the_app(lab):
    # Seen once in CI at the end of the tutorial walk: a queued StatusUpdated reached the Tunnels
    # screen after its widgets were gone, and query_one raised NoMatches out of the app.
    from tui.app import StatusUpdated

    app = new_app(lab)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status is not None, 15, "a first status")
        await pilot.press("2")
        await until(pilot, lambda: app.current_mode == "tunnels", 5, "tunnels screen")
        await app.screen.query_one(TunnelMatrix).remove()
        app.post_message(StatusUpdated(app.status, time.monotonic()))
        await pilot.pause(0.2)
        app._tick()
        assert app.is_running
        app.exit()
        app.post_message(StatusUpdated(app.status, time.monotonic()))
