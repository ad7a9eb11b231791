"""The review page in a real browser: `python -m pipeline review` run as users run it, then
Debian's chromium, headless, loading the page from disk: its DOM after the page's script ran
(the cards, mask layers, placeholders and histogram bars it drew, matching the reader's
numbers; the category filter's state from the address), a screenshot, and a reviewer's session
driven over the DevTools protocol (enlarging, marking masks good and bad, reloading, downloading
the marks) whose downloads `export --exclude` / `--only` then take; on an output with
segment-everything's masks, their points and the found-by filter, clicked."""

import csv
import io
import json
import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from typing import Dict, List, Optional, Set, Tuple

import pytest
from helpers.browser import DevTools, run_chromium
from helpers.paths import ROOT
from helpers.review_data import FAILURES, page_data, write_job
from PIL import Image

pytestmark = pytest.mark.slow  # every test drives a real browser

NUM_ROWS, MAX_IMAGES, NEEDS_REVIEW = 120, 24, 6


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
    job = write_job(str(root), NUM_ROWS, image_files=True)
    out = str(root / "page")
    first = _review(job["output"], out)
    # The first card's image file corrupted: the page shows it as a placeholder.
    chosen = page_data(os.path.join(out, "index.html"))["cards"][0]["id"]
    with open(job["paths"][chosen], "wb") as f:
        f.write(b"not an image")
    assert "unreadable" not in first
    proc = _review(job["output"], out)
    assert f"{MAX_IMAGES} of {NUM_ROWS - len(FAILURES)} images, 1 of them unreadable" in proc
    return {"dir": out, "data": page_data(os.path.join(out, "index.html")), "broken": chosen, "job": job}


def _review(output: str, out: str, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "review", "--input", output, "--out", out,
                           "--max-images", str(MAX_IMAGES), "--needs-review", str(NEEDS_REVIEW), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def url(page, fragment: str = "") -> str:
    return "file://" + os.path.join(page["dir"], "index.html") + fragment


def test_page_draws_what_the_reader_counted(page):
    dom = Elements(run_chromium(["--dump-dom", url(page)]))
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
    # Results without found_by (as written before it existed): every mask's prompt kind is unknown.
    assert [a["data-found-by-count"] for a in dom.having("data-found-by-count")] == ["unknown"]
    assert {a["data-kinds"] for a in dom.having("data-mask")} == {"unknown"} and not dom.having("data-point")


def test_category_filter_from_the_address(page):
    dom = Elements(run_chromium(["--dump-dom", url(page, "#category=dog")]))
    cards = page["data"]["cards"]
    with_dog = sum(1 for c in cards if any(m["category"] == "dog" for m in c["segments"]))
    assert 0 < with_dog < len(cards)
    assert dom.having("data-category", "dog") and [a for t, a in dom.found if t == "body"][0]["data-category"] == "dog"
    visible = [card for card in dom.having("data-card") if "hidden" not in card]
    assert len(visible) == with_dog and dom.having("id", "shown")[0]["data-count"] == str(with_dog)
    for card in visible:
        assert "dog" in json.loads(card["data-categories"])
    assert [(a["data-filter-key"], a["data-filter"]) for a in dom.having("data-filter")
            if a["aria-pressed"] == "true"] == [("category", "dog"), ("found_by", "")]
    # Masks of the other categories are hidden: their rows, layers and boxes.
    others = [m for c in cards for m in c["segments"] if m["category"] != "dog"]
    drawn = [m for c in cards if c["id"] != page["broken"] for m in c["segments"] if m["category"] != "dog"]
    assert len([a for a in dom.having("data-mask") if "dim" in (a.get("class") or "")]) == len(others) > 0
    for part in ("data-layer", "data-box"):
        assert len([a for a in dom.having(part) if "display: none" in (a.get("style") or "")]) == len(drawn)


def test_screenshot(page, tmp_path):
    shot = str(tmp_path / "review.png")
    run_chromium([f"--screenshot={shot}", "--window-size=1280,900", url(page)])
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is nearly blank"
    assert max(n for n, _ in colours) < 0.9 * 1280 * 900


def _mark_button(row_id, box: int, mark: str, view: str = "[data-card]") -> str:
    key = json.dumps([row_id, box], separators=(",", ":"))
    return f"{view} [data-mark-key='{key}'][data-mark-button=\"{mark}\"]"


def test_cards_name_their_image_and_label_their_score(page):
    cards = page["data"]["cards"]
    with DevTools() as browser:
        browser.open(url(page))
        shown = browser.evaluate("[...document.querySelectorAll('[data-card]')].map((n) => ["
                                 "n.querySelector('.name').textContent, n.querySelector('.name').title,"
                                 "JSON.parse(n.querySelector('[data-id]').dataset.id), n.querySelector('.score').textContent])")
    assert len(shown) == len(cards) == MAX_IMAGES
    for (name, title, row_id, score), card in zip(shown, cards, strict=True):
        path = page["job"]["paths"][card["id"]]
        # The file's name on the card, its full path on hover, the row's id beside it.
        assert (name, title, row_id) == (os.path.basename(path), path, card["id"])
        assert score == f"lowest score {card['score']:.3f}" if card["score"] is not None else "lowest score n/a"


def test_counts_say_how_many_images_there_are(page, tmp_path):
    """More images asked for under "needs review" than have a scored mask: the note says how
    many there are, and that they are all."""
    out = str(tmp_path / "all")
    _review(page["job"]["output"], out, "--max-images", str(NUM_ROWS), "--needs-review", "100")
    data = page_data(os.path.join(out, "index.html"))
    review = sum(1 for c in data["cards"] if c["section"] == "review")
    sample = sum(1 for c in data["cards"] if c["section"] == "sample")
    assert 0 < review < 100 and sample > 0
    with DevTools() as browser:
        browser.open("file://" + os.path.join(out, "index.html"))
        review_note, sample_note = browser.evaluate("['review-note', 'sample-note'].map((id) => "
                                                    "document.getElementById(id).textContent)")
    assert review_note.startswith(f"(the {review} images with the lowest") and "fewer than the 100 asked for" in review_note
    assert sample_note.startswith(f"({sample} of the other {sample} images")


def test_enlarge_step_and_mark_from_the_enlarged_view(page):
    cards = page["data"]["cards"]
    pictured = [n for n, c in enumerate(cards) if c["thumbnail"] and c["segments"]]
    first, after = pictured[0], next(n for n, c in enumerate(cards) if n > pictured[0] and c["thumbnail"])
    dialog = "document.getElementById('enlarged')"
    with DevTools() as browser:
        browser.open(url(page))
        browser.click(f"[data-number=\"{first}\"] .picture")  # a mouse click, as on the page
        width = "querySelector('[data-thumbnail]').getBoundingClientRect().width"
        opened = browser.evaluate(f"[{dialog}.open, Number({dialog}.dataset.shows), {dialog}.{width}, "
                                  f"document.querySelector('[data-number=\"{first}\"]').{width}, "
                                  f"{dialog}.querySelector('.name').textContent]")
        assert opened[:2] == [True, first] and opened[2] >= 2 * opened[3]
        assert opened[4] == cards[first]["name"]
        # A mark made in the enlarged view is the card's mark too.
        mask = cards[first]["segments"][0]["box"]
        browser.click(_mark_button(cards[first]["id"], mask, "bad", "#enlarged"))
        assert browser.evaluate(f"document.querySelector({json.dumps(_mark_button(cards[first]['id'], mask, 'bad'))})"
                                ".getAttribute('aria-pressed')") == "true"
        browser.press("ArrowRight", 39)
        assert browser.evaluate(f"Number({dialog}.dataset.shows)") == after
        browser.press("Escape", 27)
        assert browser.evaluate(f"{dialog}.open") is False
        # The placeholder of the unreadable image does not open.
        broken = next(n for n, c in enumerate(cards) if c["id"] == page["broken"])
        browser.click(f"[data-number=\"{broken}\"] [data-placeholder]")
        assert browser.evaluate(f"{dialog}.open") is False


def _coco_masks(path: str, ids_by_file: Dict[str, str]) -> Set[Tuple[str, int]]:
    """(row id, box index) of every annotation of a COCO file of the test job (whose box k's
    mask has its bbox at x = 3 + 5k)."""
    with open(path) as f:
        coco = json.load(f)
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    return {(ids_by_file[files[a["image_id"]]], round((a["bbox"][0] - 3) / 5)) for a in coco["annotations"]}


def _export(page, out: str, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--format", "coco-rle", "--input",
                           page["job"]["output"], "--output", out, *extra], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_marks_kept_downloaded_and_taken_by_export(page, tmp_path):
    """A reviewer marks masks good and bad (changing one mark, taking one back), reloads the
    page, downloads the marks as JSON and CSV; `export --exclude` leaves out exactly the bad
    masks, `export --only` keeps exactly the good ones."""
    with_masks = [c for c in page["data"]["cards"] if c["segments"]]
    bad = {(c["id"], c["segments"][0]["box"]) for c in with_masks[:3]}
    good = {(c["id"], m["box"]) for c in with_masks[3:6] for m in c["segments"]}
    changed, taken_back = next(iter(sorted(good))), (with_masks[6]["id"], with_masks[6]["segments"][0]["box"])
    pressed = ("[...document.querySelectorAll('[data-card] [data-mark-button][aria-pressed=\"true\"]')]"
               ".map((b) => [...JSON.parse(b.dataset.markKey), b.dataset.markButton])")
    with DevTools() as browser:
        browser.open(url(page))
        for (row_id, box), mark in [*((key, "bad") for key in sorted(bad)), *((key, "good") for key in sorted(good)),
                                    (changed, "bad"), (taken_back, "good"), (taken_back, "good")]:
            browser.click(_mark_button(row_id, box, mark))
        good.discard(changed)
        bad.add(changed)
        expected = {(*key, "good") for key in good} | {(*key, "bad") for key in bad}
        assert {tuple(p) for p in browser.evaluate(pressed)} == expected
        assert browser.evaluate("[document.getElementById('marks-count').dataset.good, "
                                "document.getElementById('marks-count').dataset.bad]") == [str(len(good)), str(len(bad))]
        # Chromium hands localStorage writes to its storage service asynchronously; a reviewer's
        # reload comes later than a script's (once in ~25 runs an immediate reload read it empty).
        time.sleep(1.0)
        browser.reload()
        assert {tuple(p) for p in browser.evaluate(pressed)} == expected, (
            "the marks did not survive a reload", browser.evaluate("[Object.keys(localStorage), "
                                                                   "document.getElementById('marks-note').textContent]"))
        browser.click("[data-download=\"json\"]")
        browser.click("[data-download=\"csv\"]")
        as_json = browser.downloaded("review-marks.json")
        as_csv = browser.downloaded("review-marks.csv")
    marks = json.loads(as_json)
    assert marks["results"] == page["job"]["output"]
    assert {(m["id"], m["box"], m["mark"]) for m in marks["marks"]} == expected
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert {(r["id"], int(r["box"]), r["mark"]) for r in rows} == expected
    assert all(r["file"] == page["job"]["paths"][r["id"]] for r in rows)

    (tmp_path / "marks.json").write_text(as_json)
    (tmp_path / "marks.csv").write_text(as_csv)
    ids_by_file = {path: row_id for row_id, path in page["job"]["paths"].items()}
    _export(page, str(tmp_path / "all.json"))
    everything = _coco_masks(str(tmp_path / "all.json"), ids_by_file)
    assert bad | good <= everything
    excluded = _export(page, str(tmp_path / "exclude.json"), "--exclude", str(tmp_path / "marks.json"))
    assert _coco_masks(str(tmp_path / "exclude.json"), ids_by_file) == everything - bad
    assert f"{len(bad)} masks marked bad left out" in excluded.stdout and "warning" not in excluded.stderr
    only = _export(page, str(tmp_path / "only.json"), "--only", str(tmp_path / "marks.csv"))
    assert _coco_masks(str(tmp_path / "only.json"), ids_by_file) == good
    assert f"only the {len(good)} masks marked good" in only.stdout


@pytest.fixture(scope="module")
def everything_page(tmp_path_factory):
    """The review page of an output whose rows hold box masks ("box", or "box+points") and
    segment-everything's masks, every image on it."""
    root = tmp_path_factory.mktemp("review_everything")
    job = write_job(str(root), EVERYTHING_ROWS, image_files=True, everything=True)
    out = str(root / "page")
    _review(job["output"], out, "--max-images", str(EVERYTHING_ROWS))
    return {"dir": out, "data": page_data(os.path.join(out, "index.html")), "job": job}


EVERYTHING_ROWS = 30
# (card number, mask) of every mask row not dimmed, on the cards shown
_SHOWN_MASKS = ("[...document.querySelectorAll('[data-card]')].filter((n) => !n.hidden).flatMap((n) => "
                "[...n.querySelectorAll('tr[data-mask]')].filter((r) => !r.classList.contains('dim'))"
                ".map((r) => [Number(n.dataset.number), Number(r.dataset.mask)]))")
# (card number, mask) of every mask layer and prompt mark (box or point) drawn on the cards shown
_DRAWN = ("[...document.querySelectorAll('[data-card]')].filter((n) => !n.hidden).flatMap((n) => "
          "[...n.querySelectorAll('[data-layer], [data-box]')].filter((p) => p.style.display !== 'none')"
          ".map((p) => [Number(n.dataset.number), Number(p.dataset.layer ?? p.dataset.box), p.tagName]))")


def test_found_by_filter_and_everything_points(everything_page):
    """Each segment-everything mask is drawn with its point (an SVG circle where a prompt mask's
    box is); clicking a found-by button shows exactly the masks it names (a box+points mask under
    both), together with the category filter, and "all" shows every mask again."""
    cards = everything_page["data"]["cards"]
    assert len(cards) == sum(1 for row in everything_page["job"]["rows"] if row["error"] is None)
    masks = {(n, k): m for n, c in enumerate(cards) for k, m in enumerate(c["segments"])}
    assert {m["found_by"] for m in masks.values()} == {"box", "box+points", "everything"}
    with DevTools() as browser:
        browser.open(url(everything_page))
        points = browser.evaluate("[...document.querySelectorAll('[data-card] circle[data-point]')].map((p) => "
                                  "[Number(p.closest('[data-card]').dataset.number), Number(p.dataset.point), "
                                  "Number(p.getAttribute('cx')), Number(p.getAttribute('cy'))])")
        assert sorted(map(tuple, points)) == sorted((n, k, *m["point"]) for (n, k), m in masks.items()
                                                    if m["found_by"] == "everything")
        assert browser.evaluate("document.querySelectorAll('[data-card] rect[data-box]').length") == sum(
            1 for m in masks.values() if m["found_by"] != "everything")
        for category, kind in ((None, "everything"), (None, "points"), (None, "box"), ("cat", "box"),
                               ("object", "box"), ("object", None), (None, None)):
            for key, value in (("category", category), ("found_by", kind)):
                browser.click(f"[data-filter-key='{key}'][data-filter='{value or ''}']")
            browser.wait_for(f"document.body.dataset.category === {json.dumps(category or '')} && "
                             f"document.body.dataset.foundBy === {json.dumps(kind or '')}")
            wanted = {key for key, m in masks.items()
                      if (category is None or m["category"] == category) and (kind is None or kind in m["kinds"])}
            assert {tuple(p) for p in browser.evaluate(_SHOWN_MASKS)} == wanted, (category, kind)
            drawn = browser.evaluate(_DRAWN)
            assert {(n, k) for n, k, _ in drawn} == wanted and len(drawn) == 2 * len(wanted), (category, kind)
            assert all((tag == "circle") == (masks[n, k]["found_by"] == "everything") for n, k, tag in drawn if tag != "IMG")
            shown = browser.evaluate("Number(document.getElementById('shown').dataset.count)")
            assert shown == (len(cards) if category is None and kind is None else len({n for n, _ in wanted})), (category, kind)
            address = "&".join(f"{k}={v}" for k, v in (("category", category), ("found_by", kind)) if v is not None)
            assert browser.evaluate("location.hash.replace(/^#/, '')") == address
