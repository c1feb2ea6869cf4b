"""Regenerate the README's workbench screenshots (docs/img/{segment,runs,annotate}.png).

    python docs/screenshots.py --checkpoint RUN/checkpoints/last.pt --runs RUNS_DIR --data DATASET --image SCAN.png

Starts the workbench on a free local port, drives Debian's Chromium with Playwright through one
use of each page, and saves a screenshot of each.  Segment and Runs read ``--data`` as it is (the
gallery shows the images of the run's evaluated dataset); the annotate page works on a copy of
``--data``'s split lists and masks in a temporary folder, so nothing of the dataset changes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rabusseg.app.serve.app import ServeSettings
from rabusseg.app.serve.testing import CHROMIUM, CHROMIUM_ARGS, running_server

OUT = Path(__file__).resolve().parent / "img"


def scratch_copy(data: Path, where: Path) -> Path:
    """Links to the images and metadata, copies of masks and splits: annotating changes only the copy."""
    copy = where / data.name
    copy.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name in ("masks", "splits"):
            shutil.copytree(entry, copy / entry.name)
        else:
            (copy / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return copy


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True, help="the scan shown on the Segment page")
    parser.add_argument("--run", default=None, help="the run opened on the Runs page (default: the first)")
    parser.add_argument("--compare", default=None, help="the run compared with it")
    parser.add_argument("--split", default="1_8/unlabeled")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Segment and Runs only read: the real --data, so the gallery shows the evaluated images.
        with running_server(ServeSettings(checkpoints=[args.checkpoint], runs=args.runs, data=args.data)) as url:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(f"{url}/segment")
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("[data-testid=upload]", str(args.image))
            page.wait_for_selector("[data-testid=overlay][data-ready='1']", timeout=120000)
            page.screenshot(path=str(OUT / "segment.png"))

            page.goto(f"{url}/runs")
            page.wait_for_selector("body[data-ready='1']")
            selector = f"[data-testid=run-list] tr[data-name='{args.run}']" if args.run else "[data-testid=run-list] tbody tr"
            page.locator(selector).first.click()
            page.wait_for_selector("[data-testid=gallery] figure img", timeout=120000)
            page.wait_for_timeout(3000)  # let the first thumbnails arrive
            if args.compare:
                page.select_option("[data-testid=compare-with]", args.compare)
                page.wait_for_selector("[data-testid=scatter] circle")
            page.screenshot(path=str(OUT / "runs.png"), full_page=True)
            page.close()
        # Annotate writes a mask and a split list: on a scratch copy of --data.
        with tempfile.TemporaryDirectory(prefix="rabusseg-shots-") as tmp:
            data = scratch_copy(args.data, Path(tmp))
            with running_server(ServeSettings(checkpoints=[args.checkpoint], runs=args.runs, data=data)) as url:
                page = browser.new_page(viewport={"width": 1500, "height": 900})
                page.on("dialog", lambda dialog: dialog.accept())
                page.goto(f"{url}/annotate")
                page.wait_for_selector("body[data-ready='1']")
                page.select_option("[data-testid=split]", args.split)
                page.click("[data-testid=rank]")
                page.wait_for_selector("[data-testid=queue-item]", timeout=600000)
                page.locator("[data-testid=queue-item]").first.click()
                page.wait_for_selector("[data-testid=annotate-canvas][data-ready='1']")
                box = page.locator("[data-testid=annotate-canvas]").bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.45)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5, steps=12)
                page.mouse.up()
                page.click("[data-testid=save-mask]")
                page.wait_for_selector("[data-testid=train-command]:not([hidden])")
                page.screenshot(path=str(OUT / "annotate.png"))
        browser.close()
    print(f"wrote {', '.join(str(OUT / n) for n in ('segment.png', 'runs.png', 'annotate.png'))}")


if __name__ == "__main__":
    main()
