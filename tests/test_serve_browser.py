"""The workbench in headless Chromium (Playwright): the overlay's pixels, the threshold, a brush stroke saved to disk."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the workbench needs pip install 'rabusseg[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (drives Debian's Chromium)")
from _serve_fixtures import Workbench, make_workbench  # noqa: E402

from rabusseg.app.serve.app import ServeSettings  # noqa: E402
from rabusseg.app.serve.testing import CHROMIUM, CHROMIUM_ARGS, running_server  # noqa: E402
from rabusseg.data.folder import DatasetFolder  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does)"),
]
CONTOUR = (250, 204, 21)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    return make_workbench(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def page_at(bench: Workbench, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    settings = ServeSettings(checkpoints=[bench.checkpoint], runs=bench.runs, data=bench.data)
    with running_server(settings) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.on("dialog", lambda dialog: dialog.accept())  # "replace the existing mask?" -> yes
        yield url, page
        browser.close()


def _canvas_rgb(page, selector: str) -> np.ndarray:  # noqa: ANN001
    data = page.evaluate(f"""() => {{ const c = document.querySelector('{selector}');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }}""")
    w, h, flat = data
    return np.asarray(flat, np.uint8).reshape(h, w, 4)[..., :3]


def _fetch_png(page, url: str) -> np.ndarray:  # noqa: ANN001
    body = page.request.get(url).body()
    return np.asarray(Image.open(io.BytesIO(body)))


def _scan(busi_or_none: Path | None, bench: Workbench) -> Path:
    """A real BUSI test image when the shared data is there, else a phantom."""
    if busi_or_none is not None:
        return next(iter(sorted((busi_or_none / "images").glob("benign_*.png"))))
    folder = DatasetFolder(bench.data)
    return folder.image_path(folder.split("test")[0])


@pytest.fixture(scope="module")
def scan(bench: Workbench) -> Path:
    from rabusseg.paths import datasets_dir

    base = datasets_dir()
    return _scan(base / "busi" if base is not None and (base / "busi" / "images").is_dir() else None, bench)


def test_segment_page_draws_the_contour_where_the_mask_is(page_at, scan: Path, tmp_path: Path) -> None:  # noqa: ANN001
    url, page = page_at
    page.goto(f"{url}/segment")
    page.wait_for_selector("body[data-ready='1']")
    assert [a.inner_text() for a in page.locator("nav a").all()] == ["Segment", "Runs", "Annotate"]
    page.set_input_files("[data-testid=upload]", str(scan))
    page.wait_for_selector("[data-testid=overlay][data-ready='1']", timeout=60000)
    canvas = _canvas_rgb(page, "[data-testid=overlay]")
    original = np.asarray(Image.open(scan).convert("RGB"))
    assert canvas.shape == original.shape
    probs_url = page.eval_on_selector("#dl-probs", "a => a.href")
    probs = _fetch_png(page, probs_url)
    mask = probs > 127.5  # the page's rule at threshold 0.50
    padded = np.pad(mask, 1)
    edge = mask & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    assert edge.sum() > 20, "the test needs a visible lesion"
    assert (canvas[edge] == CONTOUR).all()  # the contour sits exactly on the mask's border
    interior = mask & ~edge
    assert (canvas[interior] != CONTOUR).any(axis=1).all()  # and only there: inside is the translucent fill
    outside = ~mask
    assert (canvas[outside] == original[outside]).all()  # and nothing is drawn outside the lesion
    server_mask = _fetch_png(page, page.eval_on_selector("#dl-mask", "a => a.href")) > 0
    assert (server_mask == mask).mean() > 0.99  # the download is what the page shows

    area = int(page.get_attribute("[data-testid=lesion-area]", "data-value"))
    assert area == int(mask.sum())
    page.fill("[data-testid=threshold]", "0.3")
    page.wait_for_function("() => document.querySelector('[data-testid=overlay]').dataset.threshold === '0.30'")
    lower = int(page.get_attribute("[data-testid=lesion-area]", "data-value"))
    assert lower == int((probs > 0.3 * 255).sum()) and lower > area
    page.screenshot(path=str(tmp_path / "segment.png"), full_page=True)


def test_runs_page_shows_curves_gallery_and_comparison(page_at, tmp_path: Path) -> None:  # noqa: ANN001
    url, page = page_at
    page.goto(f"{url}/runs")
    page.wait_for_selector("body[data-ready='1']")
    page.click("[data-testid=run-list] tr[data-name='a']")
    page.wait_for_selector("[data-testid=gallery] figure img")
    assert page.locator("[data-testid=curves] svg").count() >= 2
    dice = [float(f.get_attribute("data-dice")) for f in page.locator("[data-testid=gallery] figure").all()]
    assert dice == sorted(dice)  # worst first
    page.select_option("[data-testid=compare-with]", "nested/b")
    page.wait_for_selector("[data-testid=scatter] circle")
    assert "better on" in page.inner_text("[data-testid=compare-summary]")
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)


def test_annotate_a_stroke_and_save_it_as_a_new_label(page_at, bench: Workbench, tmp_path: Path) -> None:  # noqa: ANN001
    url, page = page_at
    splits_before = {p: p.read_bytes() for p in (bench.data / "splits").rglob("*.txt")}
    page.goto(f"{url}/annotate")
    page.wait_for_selector("body[data-ready='1']")
    page.click("[data-testid=rank]")
    page.wait_for_selector("[data-testid=queue-item]", timeout=60000)
    item = page.locator("[data-testid=queue-item]").first
    image_id = item.get_attribute("data-id")
    item.click()
    page.wait_for_selector("[data-testid=annotate-canvas][data-ready='1']")
    page.click("[data-testid=eraser]")
    box = page.locator("[data-testid=annotate-canvas]").bounding_box()
    # Erase everything with a few wide strokes, then paint one known stroke.
    page.fill("[data-testid=brush-size]", "60")
    for y in range(0, 5):
        page.mouse.move(box["x"] + 1, box["y"] + box["height"] * y / 4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] * y / 4, steps=8)
        page.mouse.up()
    assert page.get_attribute("[data-testid=annotate-canvas]", "data-lesion-px") == "0"
    page.click("[data-testid=brush]")
    page.fill("[data-testid=brush-size]", "4")
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    painted = int(page.get_attribute("[data-testid=annotate-canvas]", "data-lesion-px"))
    assert painted > 50
    page.click("[data-testid=undo]")
    assert page.get_attribute("[data-testid=annotate-canvas]", "data-lesion-px") == "0"
    page.click("[data-testid=redo]")
    page.click("[data-testid=save-mask]")  # the phantom has a mask: the dialog is accepted
    page.wait_for_selector("[data-testid=train-command]:not([hidden])")
    assert "data.labeled=1_2_annotated/labeled" in page.inner_text("[data-testid=train-command]")
    written = np.asarray(Image.open(bench.data / "masks" / f"{image_id}.png")) > 0
    assert int(written.sum()) == painted
    rows = np.nonzero(written.any(axis=1))[0]
    assert abs(rows.mean() - written.shape[0] / 2) < 6  # the stroke is where it was drawn
    folder = DatasetFolder(bench.data)
    assert image_id in folder.split("1_2_annotated/labeled") and image_id not in folder.split("1_2_annotated/unlabeled")
    assert {p: p.read_bytes() for p in splits_before} == splits_before
    page.screenshot(path=str(tmp_path / "annotate.png"), full_page=True)
    shutil.rmtree(bench.data / "splits" / "1_2_annotated")
