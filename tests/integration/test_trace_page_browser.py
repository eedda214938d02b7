"""The trace page as a real browser renders it: headless Chromium, driven through its DevTools protocol.

A tiny FastAPI app with only the UI router is served by uvicorn on a free loopback port; the trace comes from a
scripted run (fakes) whose drafts get visibly different scores. Chromium is Debian's ``chromium`` package
(``.ci/run`` installs it); without it the test skips, except under CI=true where it fails. It is driven over
``--remote-debugging-pipe`` (the DevTools protocol as NUL-separated JSON on file descriptors 3 and 4: no driver
library). What is checked is what the browser laid out and painted, not the HTML the server sent:

* every score bar's rendered width is ordered like the run's scores (P(Yes) bars: proportional to P(Yes));
* the chosen draft's card, and only it, is marked: its own border colour and a visible "chosen" label;
* no element sticks out of the viewport, on a desktop and on a phone-sized window;
* the screenshot (``test-artifacts/trace-page.png``) shows it: at each bar's centre the pixel has the bar's
  colour, beyond its end the track's, and the chosen card's border is painted in its colour.
"""

from __future__ import annotations

import base64
import fcntl
import io
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image  # installed with matplotlib, a runtime dependency

from app.ask import run
from app.server.ui.routes import router
from app.trace.store import SQLiteTraceStore
from graphs.context import Context
from graphs.result import RunResult
from tests.conftest import REPO, unavailable
from tests.unit.test_graph import make

pytestmark = pytest.mark.integration

SCREENSHOT = REPO / "test-artifacts" / "trace-page.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
TIMEOUT_S = 120.0
DESKTOP = (1400, 1000)
PHONE = (400, 900)

# Scripted verifier evidence per drafted answer, so the bars differ visibly: (log ρ_sc, P(Yes)).
_EVIDENCE = {"France": (-1.5, 0.96), "Rome": (-6.0, 0.62), "Loire": (-4.0, 0.81), "Berlin": (-8.0, 0.35)}


def varied_judge(continuation: str) -> tuple[float, float]:
    """Scores by the answer in ``continuation`` (``Answer: <title> ...``)."""
    return next((v for k, v in _EVIDENCE.items() if f"Answer: {k}" in continuation), (-5.0, 0.5))


# ---------------------------------------------------------------- Chromium over the DevTools protocol


class DevTools:
    """Headless Chromium with a fresh profile, driven over ``--remote-debugging-pipe``; one page target."""

    def __init__(self, binary: str, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # The child ends are moved to descriptors >= 10, so that placing them at 3 and 4 cannot overwrite one
        # with the other; bash puts them there (dash cannot name descriptors above 9) and execs Chromium.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        script = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self.log = profile / "chromium.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", script, binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=profile,
            )
        os.close(child_in)
        os.close(child_out)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=self.session)

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_chrome, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._arrived:
                            self._replies[message["id"]] = message
                            self._arrived.notify_all()
                    else:
                        self._events.put(message)
        with self._arrived:
            self._arrived.notify_all()

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> Any:
        """Send one command and return its result (a protocol error fails the test)."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        with self._arrived:
            while number not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    pytest.fail(f"chromium did not answer {method}: {self.log.read_text()[-2000:]}")
                self._arrived.wait(left)
            reply = self._replies.pop(number)
        assert "error" not in reply, (method, reply["error"])
        return reply.get("result", {})

    def page(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A command to the page target."""
        return self.call(method, params, session=self.session)

    def wait_event(self, method: str) -> dict[str, Any]:
        """The next event ``method`` of the page target."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                event = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {method} event within {TIMEOUT_S} s")
            if event.get("method") == method and event.get("sessionId") == self.session:
                return event

    def open(self, url: str, width: int, height: int) -> None:
        """Load ``url`` in a ``width`` x ``height`` CSS-pixel viewport (device scale 1)."""
        self.viewport(width, height)
        self.page("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def viewport(self, width: int, height: int) -> None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.page("Emulation.setDeviceMetricsOverride", metrics)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"]["value"]

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.page("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            os.close(self._to_chrome)
            self._reader.join(timeout=10)


# What the browser laid out: per draft card its marks and bars (rectangles in CSS pixels), the viewport's width,
# and every element whose box sticks out of the viewport without an ancestor that clips it.
LAYOUT_JS = r"""
(() => {
  const box = e => { const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height}; };
  const style = e => getComputedStyle(e);
  const cards = [...document.querySelectorAll('article.draft')].map(card => {
    const label = card.querySelector('.winner-label');
    return {
      index: Number(card.dataset.draft), winner: card.classList.contains('winner'), box: box(card),
      answer: card.querySelector('.answer-text').innerText.trim(),
      border: style(card).borderLeftColor, borderWidth: parseFloat(style(card).borderLeftWidth),
      label: label && label.checkVisibility() ? {text: label.innerText.trim(), box: box(label)} : null,
      bars: [...card.querySelectorAll('.bar')].map(b => ({
        metric: b.dataset.metric, box: box(b), track: box(b.parentElement),
        color: style(b).backgroundColor, trackColor: style(b.parentElement).backgroundColor,
      })),
    };
  });
  const vw = document.documentElement.clientWidth;
  const clipped = e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (style(a).overflowX !== 'visible') return a.getBoundingClientRect().right <= vw + 0.5; } return false; };
  const overflowing = [...document.body.querySelectorAll('*')]
    .filter(e => e.getClientRects().length && (e.getBoundingClientRect().right > vw + 0.5 ||
                                               e.getBoundingClientRect().left < -0.5) && !clipped(e))
    .map(e => `${e.tagName.toLowerCase()}.${e.className} right=${e.getBoundingClientRect().right}`);
  return {cards, vw, scrollWidth: document.documentElement.scrollWidth,
          scrollHeight: document.documentElement.scrollHeight, overflowing};
})()
"""


def _rgb(css: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", css)
    assert m, css
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 6) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel[:3], colour, strict=True))


def _pixel(image: Image.Image, x: float, y: float) -> tuple[int, ...]:
    value = image.getpixel((int(x), int(y)))
    assert isinstance(value, tuple), value
    return value


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        unavailable("chromium is not installed (apt-get install chromium; .ci/run does it)")
    assert path is not None
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, RunResult]]:
    """(base URL, the run): a scripted run's trace served by uvicorn on a free loopback port."""
    store = SQLiteTraceStore(tmp_path / "traces.sqlite")
    backends, _, _ = make(varied_judge)
    result = run(
        "What is the capital of France?",
        Context(n_drafts=5, seed=3, fallback=False),
        traces=store,
        provider=lambda ctx: backends,
    )
    assert result.run_id is not None
    app = FastAPI()
    app.state.trace_store = store
    app.include_router(router)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", result
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[DevTools]:
    tools = DevTools(chromium, tmp_path / "profile")
    try:
        yield tools
    finally:
        tools.close()


# ---------------------------------------------------------------- the test


def _check_bars_follow_the_scores(cards: list[dict[str, Any]], result: RunResult) -> None:
    """Rendered bar widths, as fractions of their tracks (the chosen card's border makes its tracks narrower):
    ordered like the scores for ρ_draft, ρ_sc and total (equal scores, equal widths); P(Yes) of the 0-1 track."""
    ordered = 0
    for metric in ("draft", "self_consistency", "total", "p_yes"):
        shown = []
        for card in cards:
            scores = result.drafts[card["index"]].scores
            assert scores is not None
            value = getattr(scores, metric)
            assert value is not None
            [bar] = [b for b in card["bars"] if b["metric"] == metric]
            assert bar["box"]["width"] > 0 and bar["box"]["right"] <= bar["track"]["right"] + 0.5, bar
            shown.append((value, bar["box"]["width"] / bar["track"]["width"], 1 / bar["track"]["width"]))
        for (v1, f1, px1), (v2, f2, px2) in itertools.permutations(shown, 2):
            if v1 < v2 - 1e-9:
                assert f1 < f2 - max(px1, px2), (metric, shown)
                ordered += 1
            elif abs(v1 - v2) <= 1e-9:
                assert abs(f1 - f2) <= max(px1, px2), (metric, shown)
        if metric == "p_yes":
            for value, fraction, px in shown:
                assert abs(fraction - value) <= 1.5 * px, (value, fraction)
    assert ordered >= 10, "the scripted scores must differ for the widths to be compared"


def test_trace_page_renders_scores_marks_the_winner_and_fits(browser: DevTools, served: tuple[str, RunResult]) -> None:
    base, result = served
    assert result.chosen is not None
    url = f"{base}/ui/runs/{result.run_id}"

    browser.open(url, *DESKTOP)
    height = int(browser.evaluate("document.documentElement.scrollHeight"))
    browser.viewport(DESKTOP[0], height)  # the whole page in the viewport: the screenshot shows all of it
    layout = browser.evaluate(LAYOUT_JS)
    assert browser.evaluate("document.title") and browser.evaluate(
        f"document.body.innerText.includes({result.run_id!r})"
    )
    cards = layout["cards"]
    assert sorted(c["index"] for c in cards) == list(range(len(result.drafts))) and len(cards) == 5
    for card in cards:
        assert card["answer"] == result.drafts[card["index"]].answer
        assert sorted(b["metric"] for b in card["bars"]) == ["draft", "p_yes", "self_consistency", "total"]

    _check_bars_follow_the_scores(cards, result)

    # the chosen draft, and only it, is marked: a visible "chosen" label and a border of its own colour
    [winner] = [c for c in cards if c["winner"]]
    assert winner["index"] == result.chosen
    assert winner["label"] is not None and winner["label"]["text"] == "chosen" and winner["label"]["box"]["width"] > 0
    others = [c for c in cards if not c["winner"]]
    assert all(c["label"] is None for c in others)
    assert all(c["border"] != winner["border"] for c in others), (winner["border"], [c["border"] for c in others])
    assert winner["borderWidth"] > max(c["borderWidth"] for c in others)

    # nothing sticks out of the viewport, on a desktop and on a phone
    assert layout["scrollWidth"] <= layout["vw"] and layout["overflowing"] == [], layout["overflowing"]

    # the screenshot shows what was laid out
    png = browser.screenshot()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (DESKTOP[0], height)
    painted = 0
    for card in cards:
        for bar in card["bars"]:
            box, track = bar["box"], bar["track"]
            middle = box["top"] + box["height"] / 2
            if box["width"] >= 6:
                centre = _pixel(image, box["left"] + box["width"] / 2, middle)
                assert _near(centre, _rgb(bar["color"])), (bar, centre)
                painted += 1
            if track["right"] - box["right"] >= 6 and bar["metric"] != "p_yes":  # P(Yes) tracks hold a tick
                beyond = _pixel(image, (box["right"] + track["right"]) / 2, middle)
                assert _near(beyond, _rgb(bar["trackColor"])), (bar, beyond)
                painted += 1
    assert painted >= 25, painted
    edge = _pixel(image, winner["box"]["left"] + winner["borderWidth"] / 2, winner["box"]["top"] + 40)
    assert _near(edge, _rgb(winner["border"]), tol=12), (edge, winner["border"])
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, bars and cards, not a blank page

    browser.open(url, *PHONE)
    phone = browser.evaluate(LAYOUT_JS)
    assert phone["scrollWidth"] <= phone["vw"] and phone["overflowing"] == [], phone["overflowing"]
    _check_bars_follow_the_scores(phone["cards"], result)
