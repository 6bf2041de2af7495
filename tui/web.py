"""`ipsec-lab web`: the TUI in a browser, one app process per tab, all attached to one lab.

textual-serve's AppService runs each session (the same `ipsec-lab` TUI, over Textual's web driver)
and its page script (xterm.js) draws it; the HTTP side is ours, because the app is a root console
(its Nodes screen opens a shell on a node) and must not be served the way textual-serve's Server
does (every request welcome, the page fetching Google's fonts):

- It binds 127.0.0.1 unless --host says otherwise; a non-loopback host prints one warning line.
- Every request needs the server's random token: `?token=` on the page's URL, then a cookie the
  page's own requests (static files, the websocket) carry. Anything else is 403 with no body, and
  no app process starts. A websocket from another origin is 403 too.
- `--read-only` starts each session with `--read-only`: no action, shell, fault or check offered.
- Glyphs: Roboto Mono (textual-serve's font) is served for text, and DejaVu Sans Mono (Debian's
  fonts-dejavu-core) as its fallback face for the arrows, ticks and triangles the TUI draws; the two
  it lacks as well are replaced in the session's output (tui/web_driver.py). Nothing is fetched
  from outside: a workshop may have no internet.
- Stopping the server (Ctrl+C, SIGTERM) asks each session to quit, then ends the process group it
  started each session in: nothing of the server is left, and the lab runs on.

Headless (no Textual imported here: the import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import secrets
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .lab import resources
from .lab.errors import UsageError

DEFAULT_PORT = 8765
COOKIE = "ipsec_lab_token"
FALLBACK_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")  # Debian's fonts-dejavu-core
FALLBACK_FONT_PACKAGE = "fonts-dejavu-core"
DRIVER = "tui.web_driver:GlyphSafeWebDriver"
QUIT_GRACE_S = 5.0  # a session asked to quit gets this long before its process group is ended
# What every answer carries: the token must not leak through a Referer, a cache or a frame.
HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_argv(lab: str, backend: str, *, tutorial: bool, read_only: bool) -> list[str]:
    """The command each browser tab runs: this same ipsec-lab's TUI, on the server's lab."""
    argv = [sys.executable, "-m", "tui", "--lab", lab, "--backend", backend, "--web-session"]
    if tutorial:
        argv.append("--tutorial")
    if read_only:
        argv.append("--read-only")
    return argv


@dataclass
class WebConfig:
    lab: str
    argv: list[str]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    read_only: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.token}"


def check_ready(host: str, port: int) -> None:
    """Bad input and a missing piece are one line before anything binds or starts."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: a TCP port is 1-65535")
    if not FALLBACK_FONT.is_file():
        raise UsageError(f"the browser's fallback font {FALLBACK_FONT} is missing: install the Debian package "
                         f"{FALLBACK_FONT_PACKAGE} (`ipsec-lab doctor --install`, or scripts/setup.sh)")
    try:
        import textual_serve  # noqa: F401, PLC0415
    except ImportError:
        raise UsageError("textual-serve is not installed in this Python: run scripts/setup.sh") from None


class Sessions:
    """The app processes this server started, by PID, so that each is ended and none is left."""

    def __init__(self) -> None:
        self.live: set[Any] = set()  # LabSession

    async def end(self, session: Any) -> None:
        """Ask the app to quit (it leaves the lab running); end its process group if it does not."""
        try:
            await asyncio.wait_for(session.stop(), QUIT_GRACE_S)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001  # whatever went wrong, the group ends below
            pass
        proc = session.process
        if proc is not None and proc.returncode is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)  # the group its own session began (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    await asyncio.wait_for(proc.wait(), 3)
                    break
                except asyncio.TimeoutError:
                    continue
        self.live.discard(session)

    async def end_all(self) -> None:
        await asyncio.gather(*(self.end(s) for s in list(self.live)))


def make_app(cfg: WebConfig, say: Callable[[str], None] = print) -> Any:
    """The aiohttp application: the guard, the page, the static files, the fonts, the websocket."""
    import jinja2  # noqa: PLC0415
    import textual_serve  # noqa: PLC0415
    from aiohttp import WSMsgType, web  # noqa: PLC0415
    from textual_serve.app_service import AppService  # noqa: PLC0415
    from textual_serve.download_manager import DownloadManager  # noqa: PLC0415

    statics = Path(textual_serve.__file__).parent / "static"
    page = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resources.assets_dir() / "web")),
                              autoescape=True, undefined=jinja2.StrictUndefined).get_template("index.html")
    sessions = Sessions()
    downloads = DownloadManager()

    class LabSession(AppService):
        """One tab's app: the exact argv (no shell), its own process group, our glyph-safe driver."""

        def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
            env: dict[str, str] = super()._build_environment(width=width, height=height)
            env["TEXTUAL_DRIVER"] = DRIVER
            return env

        async def _open_app_process(self, width: int = 80, height: int = 24) -> Any:
            self._process = await asyncio.create_subprocess_exec(
                *cfg.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._build_environment(width=width, height=height),
                start_new_session=True)
            self._stdin = self._process.stdin
            return self._process

        @property
        def process(self) -> Any:
            return self._process

    def size(request: web.Request, key: str, default: int) -> int:
        value = request.query.get(key, "")
        return min(int(value), 1000) if value.isdigit() else default

    def authorised(request: web.Request) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), cfg.token.encode())

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not authorised(request):
            return web.Response(status=403, headers=HEADERS)
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            return web.Response(status=403, headers=HEADERS)  # a page of another site driving the console
        response: web.StreamResponse = await handler(request)
        if not response.prepared:
            response.headers.update(HEADERS)
        return response

    async def index(request: web.Request) -> web.Response:
        scheme = "wss" if request.secure else "ws"
        html = page.render(title=f"ipsec-lab · lab {cfg.lab}" + (" · read-only" if cfg.read_only else ""),
                           websocket_url=f"{scheme}://{request.host}/ws", font_size=size(request, "fontsize", 16))
        response = web.Response(text=html, content_type="text/html")
        # The page's own requests (static files, the websocket) carry the token as a cookie, never
        # sent to another site and invisible to scripts.
        response.set_cookie(COOKIE, cfg.token, httponly=True, samesite="Strict", path="/")
        return response

    async def fallback_font(request: web.Request) -> web.FileResponse:
        return web.FileResponse(FALLBACK_FONT, headers={"Content-Type": "font/ttf"})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=15)
        await ws.prepare(request)

        async def close() -> None:
            await ws.close()

        session = LabSession(shlex.join(cfg.argv), write_bytes=ws.send_bytes, write_str=ws.send_str,
                             close=close, download_manager=downloads)
        sessions.live.add(session)
        await session.start(size(request, "width", 80), size(request, "height", 24))
        say(f"session {session.process.pid}: opened ({len(sessions.live)} open)")
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                kind, data = (message.json() + [None])[:2]
                if kind == "stdin":
                    await session.send_bytes(str(data).encode())
                elif kind == "resize":
                    await session.set_terminal_size(data["width"], data["height"])
                elif kind == "ping":
                    await ws.send_json(["pong", data])
                elif kind == "blur":
                    await session.blur()
                elif kind == "focus":
                    await session.focus()
        finally:
            pid = session.process.pid
            await sessions.end(session)
            say(f"session {pid}: closed ({len(sessions.live)} open)")
        return ws

    async def on_shutdown(app: web.Application) -> None:
        await sessions.end_all()

    app = web.Application(middlewares=[guard])
    app.add_routes([
        web.get("/", index),
        web.get("/ws", websocket),
        web.get("/fonts/fallback-mono.ttf", fallback_font),
        web.static("/static", statics),
    ])
    app.on_shutdown.append(on_shutdown)
    app["sessions"] = sessions
    return app


def serve(cfg: WebConfig, say: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM; then end every session (the lab keeps running)."""
    from aiohttp import web  # noqa: PLC0415
    from aiohttp.web_runner import GracefulExit  # noqa: PLC0415

    def stop(*_: object) -> None:
        raise GracefulExit()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGTERM, stop)
    web.run_app(make_app(cfg, say), host=cfg.host, port=cfg.port, handle_signals=False, loop=loop,
                print=lambda *_: None, access_log=None)
