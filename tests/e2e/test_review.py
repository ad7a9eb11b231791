"""The review page in a real browser: `python -m pipeline review` run as users run it, then
Debian's chromium, headless, loading the page from disk: its DOM after the page's script ran
(the cards, mask layers, placeholders and histogram bars it drew, matching the reader's
numbers; the category filter's state from the address), and a screenshot. Each chromium runs
in a session of its own and every process of that session is ended, by id, afterwards."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.owned_processes import session_members
from helpers.paths import ROOT
from helpers.review_data import FAILURES, page_data, write_job
from PIL import Image

pytestmark = pytest.mark.slow  # every test drives a real browser

NUM_ROWS, MAX_IMAGES, NEEDS_REVIEW = 120, 24, 6
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: the review page is tested in a real browser; run "
                    "`bash scripts/setup.sh --dev --browser` (it installs Debian's chromium), or `apt-get install chromium`")
    return found


def chromium(args: List[str], timeout: float = 120.0) -> str:
    """Run headless chromium with a fresh profile; its stdout. Every process of its session
    is ended afterwards, also when it fails or hangs."""
    profile = tempfile.mkdtemp(prefix="review_chromium_")
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                   stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
            stdout.seek(0)
            stderr.seek(0)
            assert code == 0, f"chromium exited with {code}:\n{stderr.read().decode(errors='replace')[-3000:]}"
            return stdout.read().decode()
        finally:
            _end_session(process)
            shutil.rmtree(profile, ignore_errors=True)


def _end_session(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(process.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while session_members(process.pid) and time.time() < deadline:
            time.sleep(0.1)
    process.poll()


class Elements(HTMLParser):
    """Every start tag of a document, with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def having(self, attribute: str, value: Optional[str] = None) -> List[Dict[str, Optional[str]]]:
        return [a for _, a in self.found if attribute in a and (value is None or a[attribute] == value)]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_e2e")
    job = write_job(str(root), NUM_ROWS)
    out = str(root / "page")
    first = _review(job["output"], out)
    # The first card's image corrupted in the input: the page shows it as a placeholder.
    chosen = page_data(os.path.join(out, "index.html"))["cards"][0]["id"]
    table = pq.read_table(job["images"])
    images = [b"not an image" if row_id == chosen else data
              for row_id, data in zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True)]
    broken = str(root / "broken.parquet")
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", pa.array(images)), broken)
    assert "unreadable" not in first
    proc = _review(job["output"], out, "--images", broken)
    assert f"{MAX_IMAGES} of {NUM_ROWS - len(FAILURES)} images, 1 of them unreadable" in proc
    return {"dir": out, "data": page_data(os.path.join(out, "index.html")), "broken": chosen}


def _review(output: str, out: str, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "review", "--input", output, "--out", out,
                           "--max-images", str(MAX_IMAGES), "--needs-review", str(NEEDS_REVIEW), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def url(page, fragment: str = "") -> str:
    return "file://" + os.path.join(page["dir"], "index.html") + fragment


def test_page_draws_what_the_reader_counted(page):
    dom = Elements(chromium(["--dump-dom", url(page)]))
    data = page["data"]
    assert dom.having("data-ready", "true"), "the page's script did not run to its end"
    assert len(dom.having("data-card", "review")) == NEEDS_REVIEW
    assert len(dom.having("data-card", "sample")) == MAX_IMAGES - NEEDS_REVIEW
    assert dom.having("id", "shown")[0]["data-count"] == str(MAX_IMAGES)
    assert not any("hidden" in card for card in dom.having("data-card"))
    # One placeholder (the corrupt image), one thumbnail and a mask layer per mask for the others.
    readable = [c for c in data["cards"] if c["id"] != page["broken"]]
    assert len(dom.having("data-placeholder")) == 1 and len(dom.having("data-thumbnail")) == len(readable)
    assert len(dom.having("data-layer")) == len(dom.having("data-box")) == sum(len(c["segments"]) for c in readable)
    assert len(dom.having("data-mask")) == sum(len(c["segments"]) for c in data["cards"])
    for name in ("iou", "stability"):
        assert len(dom.having("data-bin")) == 2 * len(data["histograms"][name]["bins"])
    bars = [int(a["data-count"]) for a in dom.having("data-bin")]
    assert sum(bars) == 2 * data["totals"]["num_masks"]
    totals = {a["data-total"] for a in dom.having("data-total")}
    assert {"rows", "masks", "failed rows", *(f"\u2003{k}" for k in data["totals"]["failed_rows"])} <= totals
    assert {a["data-category-count"] for a in dom.having("data-category-count")} == {"cat", "dog", "bird"}


def test_category_filter_from_the_address(page):
    dom = Elements(chromium(["--dump-dom", url(page, "#category=dog")]))
    cards = page["data"]["cards"]
    with_dog = sum(1 for c in cards if any(m["category"] == "dog" for m in c["segments"]))
    assert 0 < with_dog < len(cards)
    assert dom.having("data-category", "dog") and [a for t, a in dom.found if t == "body"][0]["data-category"] == "dog"
    visible = [card for card in dom.having("data-card") if "hidden" not in card]
    assert len(visible) == with_dog and dom.having("id", "shown")[0]["data-count"] == str(with_dog)
    for card in visible:
        assert "dog" in json.loads(card["data-categories"])
    assert [a["data-filter"] for a in dom.having("aria-pressed", "true")] == ["dog"]
    # Masks of the other categories are hidden: their rows, layers and boxes.
    others = [m for c in cards for m in c["segments"] if m["category"] != "dog"]
    drawn = [m for c in cards if c["id"] != page["broken"] for m in c["segments"] if m["category"] != "dog"]
    assert len([a for a in dom.having("data-mask") if "dim" in (a.get("class") or "")]) == len(others) > 0
    for part in ("data-layer", "data-box"):
        assert len([a for a in dom.having(part) if "display: none" in (a.get("style") or "")]) == len(drawn)


def test_screenshot(page, tmp_path):
    shot = str(tmp_path / "review.png")
    chromium([f"--screenshot={shot}", "--window-size=1280,900", url(page)])
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is nearly blank"
    assert max(n for n, _ in colours) < 0.9 * 1280 * 900
