"""Debian's chromium, headless, for the review page's tests: run once on a page (`--dump-dom`,
`--screenshot`), or driven through the Chrome DevTools Protocol over a pipe (no extra package,
no port) to click, type and download as a reviewer does. Each chromium runs in a session of its
own (`OwnedProcess`) and every process of that session is ended, by id, afterwards, also when
a test fails or the browser hangs."""

import fcntl
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

from helpers.owned_processes import OwnedProcess

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: the review page is tested in a real browser; run "
                    "`bash scripts/setup.sh --dev --browser` (it installs Debian's chromium), or `apt-get install chromium`")
    return found


def run_chromium(args: List[str], timeout: float = 120.0) -> str:
    """Run headless chromium once with a fresh profile; its stdout."""
    profile = tempfile.mkdtemp(prefix="review_chromium_")
    with tempfile.TemporaryFile() as stdout:
        browser = OwnedProcess([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args], stdout=stdout)
        try:
            code = browser.process.wait(timeout=timeout)
            assert code == 0, f"chromium exited with {code}:\n{browser.output_tail()}"
            stdout.seek(0)
            return stdout.read().decode()
        finally:
            browser.stop()
            shutil.rmtree(profile, ignore_errors=True)


def _above(fd: int, lowest: int) -> int:
    """`fd` moved to the lowest free descriptor >= `lowest`."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class DevTools:
    """A headless chromium driven over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
    messages ended by NUL), with one page: `open(url)` it, then `evaluate`, `click`, `press`,
    `reload`; downloads go to `downloads`."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="review_chromium_")
        self.downloads = tempfile.mkdtemp(prefix="review_downloads_")
        self._next_id = 0
        self._replies: Dict[int, "queue.Queue[Dict[str, Any]]"] = {}
        self._lock = threading.Lock()
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        to_browser, self._send_fd = os.pipe()
        self._receive_fd, from_browser = os.pipe()
        # Above 4, so that redirecting them onto 3 and 4 cannot close one another.
        to_browser, from_browser = (_above(fd, 10) for fd in (to_browser, from_browser))
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        script = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
        self.browser = OwnedProcess(["bash", "-c", script, chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}",
                                     "--remote-debugging-pipe", "about:blank"], pass_fds=(to_browser, from_browser))
        os.close(to_browser)
        os.close(from_browser)
        threading.Thread(target=self._read, daemon=True).start()
        self.session: Optional[str] = None

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._receive_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            while b"\0" in pending:
                message, pending = pending.split(b"\0", 1)
                data = json.loads(message)
                if "id" in data and data["id"] in self._replies:
                    self._replies[data["id"]].put(data)
                else:
                    self.events.put(data)

    def call(self, method: str, params: Optional[Dict[str, Any]] = None, browser_level: bool = False) -> Dict[str, Any]:
        """Send one command (to the page's session unless `browser_level`); its result."""
        with self._lock:
            self._next_id += 1
            number = self._next_id
            self._replies[number] = queue.Queue()
        message: Dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if self.session is not None and not browser_level:
            message["sessionId"] = self.session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        try:
            reply = self._replies[number].get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"chromium did not answer {method} in {self.timeout}s:\n"
                               f"{self.browser.output_tail()}") from None
        finally:
            del self._replies[number]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        """Open `url` in a new page and wait for the review page's script to finish."""
        self.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads,
                                                  "eventsEnabled": True}, browser_level=True)
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser_level=True)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser_level=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.body && document.body.dataset.ready === 'true'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {self.timeout}s: {expression}")

    def click(self, selector: str) -> None:
        """A mouse click (pressed and released) at the middle of the element `selector` matches,
        scrolled into view first: whatever lies on top there gets it, as it would a user's."""
        box = self.evaluate(f"(() => {{ const n = document.querySelector({json.dumps(selector)});"
                            " if (!n) return null; n.scrollIntoView({block: 'center'});"
                            " const r = n.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if box is None:
            raise AssertionError(f"no element matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def press(self, key: str, code: int) -> None:
        """A key (e.g. "Escape", 27) pressed and released on the focused element."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key,
                                                 "windowsVirtualKeyCode": code})

    def reload(self) -> None:
        """Reload the page and wait for its script to finish in the new document."""
        self.evaluate("window.beforeReload = true")
        self.call("Page.reload")
        self.wait_for("!window.beforeReload && document.body && document.body.dataset.ready === 'true'")

    def downloaded(self, name: str) -> str:
        """The content of the download `name`, once complete."""
        path = os.path.join(self.downloads, name)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if os.path.isfile(path) and not os.path.exists(path + ".crdownload"):
                with open(path, encoding="utf-8") as f:
                    return f.read()
            time.sleep(0.1)
        raise TimeoutError(f"no download {name} in {self.downloads} after {self.timeout}s: "
                           f"{os.listdir(self.downloads)}")

    def close(self) -> None:
        try:
            self.browser.stop()
        finally:
            os.close(self._send_fd)
            os.close(self._receive_fd)
            shutil.rmtree(self.profile, ignore_errors=True)
            shutil.rmtree(self.downloads, ignore_errors=True)

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
