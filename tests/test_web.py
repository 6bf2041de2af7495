"""`ipsec-lab web`: the TUI in a browser (tui/web.py), safe by default.

Without root: the guard (no token, a wrong token, a wrong cookie, another site's websocket: 403 and
no app process), the read-only app on the recorded status (no key, palette entry or direct call
acts), and the glyphs: every character the screens draw is in a font the page serves.
With root (marked lab): a real netns lab served by the real command, opened in Debian's Chromium
through Playwright (no browser download). The page draws on a canvas, so the test reads what the
page received: a script records the websocket's bytes, and pyte (a VT emulator) turns them into the
screen's text. A screenshot of each is kept as an artifact (test-artifacts/web/).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tui import web
from tui.lab import resources

from .conftest import ROOT, started_lab
from .tui_fakes import make_app

ARTIFACTS = Path(os.environ.get("IPSEC_LAB_ARTIFACTS", ROOT / "test-artifacts")) / "web"
CHROMIUM = "/usr/bin/chromium"


# ------------------------------------------------------------------ the guard, in process, no root
def _cfg(**kw) -> web.WebConfig:
    # A session command that would show up if the guard ever let one start.
    return web.WebConfig(lab="guard", argv=[sys.executable, "-c", "import time; time.sleep(60)"], **kw)


async def _client(cfg: web.WebConfig):
    from aiohttp.test_utils import TestClient, TestServer

    app = web.make_app(cfg, say=lambda line: None)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client, app


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                out.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.timeout(30)
def test_without_the_token_every_request_is_403_with_nothing_else_and_no_session_starts():
    async def run():
        cfg = _cfg()
        client, app = await _client(cfg)
        before = _children()
        try:
            for path in ("/", "/?token=", "/?token=" + cfg.token[:-1] + "x", "/static/js/textual.js",
                         "/fonts/fallback-mono.ttf", "/ws", "/ws?token=nope"):
                r = await client.get(path)
                assert (r.status, await r.read()) == (403, b""), path
                assert "Set-Cookie" not in r.headers, path
            r = await client.get("/ws", cookies={web.COOKIE: "wrong"}, headers={"Upgrade": "websocket",
                                 "Connection": "Upgrade", "Sec-WebSocket-Key": "x3JJHMbDL1EzLkh9GBhXDw==",
                                 "Sec-WebSocket-Version": "13"})
            assert r.status == 403
            # The right token, and a page of another site opening the websocket with it: 403.
            r = await client.get("/?token=" + cfg.token, headers={"Origin": "http://evil.example"})
            assert r.status == 403
            assert app["sessions"].live == set() and _children() == before
            # The right token: the page, a cookie only this site's own requests carry, then the rest.
            r = await client.get("/?token=" + cfg.token)
            assert r.status == 200 and "textual-terminal" in await r.text()
            cookie = r.cookies[web.COOKIE]
            assert cookie.value == cfg.token and cookie["httponly"] and cookie["samesite"] == "Strict"
            assert r.headers["Referrer-Policy"] == "no-referrer" and r.headers["X-Frame-Options"] == "DENY"
            page = await r.text()
            assert "googleapis" not in page and "http" not in re.sub(r'data-session-websocket-url="[^"]*"', "", page)
            r = await client.get("/static/js/textual.js", cookies={web.COOKIE: cfg.token})
            assert r.status == 200
            r = await client.get("/fonts/fallback-mono.ttf", cookies={web.COOKIE: cfg.token})
            assert r.status == 200 and (await r.read())[:4] == b"\x00\x01\x00\x00"  # a TrueType font
        finally:
            await client.close()

    asyncio.run(run())


def test_the_url_and_the_loopback_rule():
    cfg = web.WebConfig(lab="x", argv=["true"], port=8765)
    assert re.fullmatch(r"http://127\.0\.0\.1:8765/\?token=[A-Za-z0-9_-]{32}", cfg.url())
    assert web.WebConfig(lab="x", argv=["true"]).token != cfg.token  # a new token per server
    assert [web.is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0", "192.168.56.1")] \
        == [True, True, True, True, False, False]
    with pytest.raises(Exception, match="1-65535"):
        web.check_ready("127.0.0.1", 70000)


def test_tutorial_and_read_only_together_are_one_line_and_change_nothing():
    cp = subprocess.run([sys.executable, "-m", "tui", "--lab", "webnope", "web", "--tutorial", "--read-only"],
                        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode == 3 and cp.stdout == ""
    assert cp.stderr.strip().splitlines() == [
        "ipsec-lab: --tutorial and --read-only: the tutorial acts on the lab, so it has no read-only view"]


# ------------------------------------------------------------------ glyphs: each one a served font draws
def _charset(font: Path) -> set[int]:
    # A variable font lists one charset per named instance, all the same: the first.
    out = subprocess.run(["fc-query", "-f", "%{charset}\\n", str(font)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[0]
    cps: set[int] = set()
    for part in out.split():
        lo, _, hi = part.partition("-")
        cps.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return cps


def test_every_glyph_the_screens_draw_is_in_a_font_the_page_serves():
    import textual_serve

    from tui.web_driver import REPLACEMENTS

    assert shutil.which("fc-query"), "fontconfig is missing: scripts/setup.sh --test installs it"
    roboto = Path(textual_serve.__file__).parent / "static/fonts/RobotoMono-VariableFont_wght.ttf"
    served = _charset(roboto) | _charset(web.FALLBACK_FONT)
    served |= set(range(0x2500, 0x25A0))  # box drawing and blocks: xterm.js draws these itself (customGlyphs)
    # What the screens draw: every snapshot (real screens, Textual's own glyphs included) and every
    # string in the app's code and styles.
    texts = [p.read_text(errors="replace") for p in (ROOT / "tests/__snapshots__").rglob("*.svg")]
    texts += [p.read_text() for p in (ROOT / "tui").rglob("*.py") if p.name not in ("web_driver.py",)]
    texts += [p.read_text() for p in resources.assets_dir().glob("*.tcss")]
    drawn = {ch for t in texts for ch in t if ord(ch) > 0x7E}
    drawn -= {"\u00a0"}  # a no-break space in the SVGs' markup
    table = str.maketrans(REPLACEMENTS)
    lacking = sorted(f"{ch} U+{ord(ch):04X}" for ch in drawn if ord(ch.translate(table)[0]) not in served)
    assert lacking == [], lacking
    assert {ord(v) for v in REPLACEMENTS.values()} <= served
    assert not {ord(k) for k in REPLACEMENTS} <= served  # each replaced glyph really was missing


# ------------------------------------------------------------------ the read-only app, no root
def _fake_app(mode: str, **kw):
    app = make_app(mode, read_only=True, **kw)
    app.backend.calls.clear()
    return app


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_read_only_keys_act_on_nothing_and_are_not_offered():
    app = _fake_app("tunnels")
    async with app.run_test(size=(150, 48)) as pilot:
        await pilot.pause(0.2)
        footer = {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
        assert {"d", "u"}.isdisjoint(footer) and {"1", "2", "q"} <= footer, footer
        await pilot.press("d", "y", "u", "1", "r", "y", "i", "y", "s", "3", "d", "x", "y", "e", "c", "5", "a", "y",
                          "enter", "y")
        await pilot.pause(0.5)
        assert app.backend.calls == [] and app.busy is None and not app.checks_running
        assert "read-only" in app.sub_title
        # A direct call (a row selected, a button) is refused too.
        app.action_tunnel_down("kube-node1", "mesh-left")
        app.action_run_checks()
        app.action_stop_lab()
        await pilot.pause(0.3)
        assert app.backend.calls == [] and app.busy is None
        # The palette offers only what changes nothing; q leaves at once (a watcher never stops the lab).
        from tui.live.palette import palette_entries
        from tui.screens.actions import CHANGES_THE_LAB

        every = palette_entries(app.lab_name, app.status, app.load_catalog()[0])
        safe = [e.title for e in every if e.action not in CHANGES_THE_LAB]
        assert [title for title, _, _ in app.palette_commands()] == safe and 0 < len(safe) < len(every)
        assert not any(w in " ".join(safe).lower() for w in ("take down", "reboot", "shell", "delete", "run check"))
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_value == "leave"
    assert app.backend.calls == []


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_the_same_keys_act_without_read_only():  # the test above would pass on a dead app too
    from tui.app import IpsecLabApp

    from .test_tui_pilot import confirm, until

    app = make_app("tunnels")
    assert isinstance(app, IpsecLabApp) and not app.read_only
    app.backend.calls.clear()
    async with app.run_test(size=(150, 48)) as pilot:
        await confirm(pilot, app, "d")
        await until(pilot, lambda: app.busy is None and app.backend.calls, 15, "the action")
    assert [c for c in app.backend.calls if c[0] == "tunnel_down"] == [("tunnel_down", "kube-node1", "mesh-left")]


# ------------------------------------------------------------------ the real command in Chromium (root)
RECORD_WEBSOCKET = """
(() => {
  window.__rx = [];
  const Native = window.WebSocket;
  function Recording(...args) {
    const ws = new Native(...args);
    ws.addEventListener('message', (e) => { if (typeof e.data !== 'string') window.__rx.push(new Uint8Array(e.data)); });
    return ws;
  }
  Recording.prototype = Native.prototype;
  Object.assign(Recording, Native);
  window.WebSocket = Recording;
})();
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(lab: str, *extra: str, netns: str | None = None, host: str = "127.0.0.1"):
    """`ipsec-lab --lab LAB web ...` as a person starts it; on exit SIGTERM, and every session it
    started must be gone."""
    port = _free_port()
    argv = [sys.executable, "-m", "tui", "--lab", lab, "web", "--host", host, "--port", str(port), *extra]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + 60
    assert p.stdout is not None
    while url is None and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"open (http://\S+)", line)
        url = m.group(1) if m else None
    assert url, "".join(lines) + (p.stderr.read() if p.poll() is not None and p.stderr else "")
    server = {"url": url, "port": port, "proc": p, "lines": lines}
    try:
        _wait_listening(port, netns)
        yield server
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            out, errs = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, errs = p.communicate()
        server["stdout"], server["stderr"] = "".join(lines) + out, errs
        server["code"] = p.returncode


def _wait_listening(port: int, netns: str | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = ["ss", "-Hltn", f"sport = :{port}"]
        if netns:
            probe = ["ip", "netns", "exec", netns, *probe]
        if subprocess.run(probe, capture_output=True, text=True).stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def _sessions_of(stdout: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"session (\d+): opened", stdout)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Page:
    """A Chromium tab on the served app; its screen read from the bytes the page received."""

    def __init__(self, page, cols: int = 240, rows: int = 80) -> None:
        import pyte

        self.page = page
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.seen = 0

    def text(self) -> str:
        n = self.page.evaluate("window.__rx.length")
        if n > self.seen:
            chunks = self.page.evaluate(f"window.__rx.slice({self.seen}).map(a => Array.from(a))")
            self.seen += len(chunks)
            for c in chunks:
                self.stream.feed(bytes(c))
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{what} not on the page within {timeout} s:\n{self.text()}")

    def press(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)
            time.sleep(0.3)


@contextmanager
def _browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Chromium is missing: scripts/setup.sh --test installs Debian's chromium"
    with sync_playwright() as pw:
        # Debian's Chromium, not a download; as root it runs without its sandbox.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _open(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.add_init_script(RECORD_WEBSOCKET)
    page.goto(url)
    page.wait_for_selector("body.-first-byte", timeout=30000)
    page.click("#terminal")  # the keyboard goes to the terminal
    return Page(page)


def _snap(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def web_lab():
    if os.geteuid() != 0:
        pytest.skip("a real lab needs root")
    with started_lab("web") as backend:
        yield backend


def _ike_ids(backend) -> dict[tuple[str, str], str]:
    return {(t.node, t.name): t.detail.get("ike_spi_local", "") for t in backend.status().tunnels}


@pytest.mark.lab
@pytest.mark.timeout(240)
def test_in_chromium_the_mesh_shows_and_d_y_takes_a_tunnel_down(web_lab, request):
    from .test_fresh_machine import emit

    lab = web_lab.lab
    with _server(lab) as srv, _browser() as browser:
        page = _open(browser, srv["url"])
        page.wait_for(r"tunnel ends 6/6 ESTABLISHED", 30, "the mesh ESTABLISHED")
        second = _open(browser, srv["url"])  # a second tab: its own session on the same lab
        second.wait_for(r"tunnel ends 6/6 ESTABLISHED", 30, "the mesh in a second tab")
        page.press("2")
        # Generous waits: the machine may be loaded; these say "it shows", not how fast.
        page.wait_for(r"Take down", 30, "the Tunnels screen's keys")
        before = _ike_ids(web_lab)
        page.press("d")
        page.wait_for(r"swanctl --terminate --ike mesh-left", 30, "the take-down question")
        page.press("y")
        text = page.wait_for(r"came back ESTABLISHED/INSTALLED", 90, "the take-down summary")
        shot = _snap(page, "take-down")
        assert _ike_ids(web_lab)[("kube-node1", "mesh-left")] != before[("kube-node1", "mesh-left")]
        summary = next(line.strip() for line in text.splitlines() if "mesh-left: swanctl --terminate" in line)
        page.press("4")  # the logs stream live, as in a terminal: charon's lines of that take-down
        page.wait_for(r"\d\d\[(IKE|CFG|NET|ENC|KNL|CHD)\] ", 30, "charon's log lines")
    sessions = _sessions_of(srv["stdout"])
    assert srv["code"] == 0, srv["stdout"] + srv["stderr"]
    assert len(sessions) == 2 and not [pid for pid in sessions if _alive(pid)], srv["stdout"]
    assert f"lab {lab} is still running" in srv["stdout"]
    assert web_lab.status().all_tunnels_up  # the server's end left the lab as it was
    emit(request, f"web: take-down seen in Chromium ({summary[:160]}); screenshot {shot}")


@pytest.mark.lab
@pytest.mark.timeout(240)
def test_in_chromium_the_read_only_view_offers_nothing_and_a_bad_token_gets_403(web_lab, request):
    lab = web_lab.lab
    with _server(lab, "--read-only") as srv:
        base = srv["url"].split("?")[0]
        for url in (base, base + "?token=wrong"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url, timeout=10)
            assert e.value.code == 403 and e.value.read() == b""
        assert _sessions_of("".join(srv["lines"])) == []
        with _browser() as browser:
            page = _open(browser, srv["url"])
            text = page.wait_for(r"tunnel ends 6/6 ESTABLISHED", 30, "the mesh ESTABLISHED")
            assert "read-only" in text
            before = _ike_ids(web_lab)
            page.press("2")
            page.wait_for(r"from strongSwan over vici at", 30, "the Tunnels screen's SA detail")
            page.press("d", "y", "u", "1", "r", "y", "i", "y", "s", "5", "a", "y")
            time.sleep(3)
            text = page.text()
            _snap(page, "read-only")
            assert "Take down" not in text and "Reboot" not in text and "Shell" not in text, text
            assert "swanctl --terminate" not in text and "under way" not in text, text
            assert _ike_ids(web_lab) == before  # nothing was touched
            page.press("q")
            page.page.wait_for_selector("body.-closed", timeout=15000)  # q ends the session, no question
    assert srv["code"] == 0 and web_lab.status().all_tunnels_up
    assert not [pid for pid in _sessions_of(srv["stdout"]) if _alive(pid)]


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_in_chromium_the_tutorial_is_served_too(web_lab):
    with _server(web_lab.lab, "--tutorial") as srv, _browser() as browser:
        page = _open(browser, srv["url"])
        text = page.wait_for(r"Tutorial 1/\d+ · ", 30, "the tutorial's first step")
        assert "F5" in text or "Do it" in text, text
        page.press("F8")  # Next, before its checks passed: refused, says why, stays on step 1
        page.wait_for(r"Tutorial 1/", 10, "step 1 still")
    assert srv["code"] == 0 and not [pid for pid in _sessions_of(srv["stdout"]) if _alive(pid)]


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_non_loopback_host_warns_in_one_line_and_serves(web_lab):
    # Inside the lab's own underlay namespace, on its bridge's address: never the host's network.
    lab = web_lab.lab
    ns = f"ilab-{lab}-underlay"
    with _server(lab, netns=ns, host="192.168.56.1") as srv:
        cp = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             srv["url"]], capture_output=True, text=True, timeout=30)
        assert cp.stdout == "200"
        cp = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             srv["url"].split("?")[0]], capture_output=True, text=True, timeout=30)
        assert cp.stdout == "403"
    warning = [line for line in srv["stderr"].splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "192.168.56.1" in warning[0] and "root console" in warning[0], srv["stderr"]
