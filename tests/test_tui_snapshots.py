"""Snapshots of every screen of the TUI, from a fake backend that replays a recorded real status
(tests/fixtures/status_3nodes.json and status_20nodes.json, from `ipsec-lab --lab X status --json` on
real netns labs).

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations


import pytest

from .tui_fakes import RECORDED_20, make_app, recorded_status

SIZE = (150, 44)


@pytest.fixture(autouse=True)
def _utc(utc):
    """Every snapshot here in UTC (tests/conftest.py's utc)."""


@pytest.mark.timeout(60)
def test_nodes_screen(snap_compare):
    assert snap_compare(make_app("nodes"), terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_tunnels_screen(snap_compare):
    assert snap_compare(make_app("tunnels"), terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_tunnels_screen_selected_right_and_down(snap_compare):
    assert snap_compare(make_app("tunnels"), press=["right", "down"], terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_tunnels_screen_20_nodes(snap_compare):
    assert snap_compare(make_app("tunnels", status=recorded_status(RECORDED_20)), terminal_size=(150, 50))


@pytest.mark.timeout(60)
def test_pods_screen(snap_compare):
    assert snap_compare(make_app("pods"), terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_logs_screen(snap_compare):
    assert snap_compare(make_app("logs"), press=["_"], terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_checks_screen(snap_compare):
    assert snap_compare(make_app("checks"), press=["down"], terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_help_dialog(snap_compare):
    assert snap_compare(make_app("tunnels"), press=["question_mark"], terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_take_down_confirmation_shows_the_command(snap_compare):
    assert snap_compare(make_app("tunnels"), press=["d"], terminal_size=SIZE)


@pytest.mark.timeout(60)
def test_quit_dialog(snap_compare):
    assert snap_compare(make_app("nodes"), press=["q"], terminal_size=SIZE)
