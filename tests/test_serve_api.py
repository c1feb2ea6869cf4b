"""``rabusseg serve``'s API through FastAPI's TestClient: every endpoint and every refusal."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the workbench needs pip install 'rabusseg[serve]'")
from _dicom_factory import write_dicom  # noqa: E402
from _serve_fixtures import Workbench, make_workbench  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from rabusseg.app.serve.app import ServeSettings, create_app  # noqa: E402
from rabusseg.data.folder import DatasetFolder  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    return make_workbench(tmp_path_factory.mktemp("serve"))


@pytest.fixture()
def client(bench: Workbench) -> TestClient:
    return TestClient(create_app(ServeSettings(checkpoints=[bench.checkpoint], runs=bench.runs, data=bench.data)))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_pages_have_the_navigation_and_the_test_hooks(client: TestClient) -> None:
    hooks = {"segment": ["upload", "overlay", "threshold", "checkpoint"], "runs": ["run-list", "gallery"],
             "annotate": ["annotate-canvas", "brush-size", "save-mask", "queue"]}  # fmt: skip
    for name, ids in hooks.items():
        page = client.get(f"/{name}")
        assert page.status_code == 200
        for link in ("Segment", "Runs", "Annotate"):
            assert f">{link}</a>" in page.text
        for testid in ids:
            assert f'data-testid="{testid}"' in page.text, (name, testid)
    assert client.get("/", follow_redirects=False).headers["location"] == "/segment"
    assert client.get("/static/segment.js").status_code == 200


def test_upload_predict_and_every_download(client: TestClient) -> None:
    assert [c["name"] for c in client.get("/api/checkpoints").json()] == ["model"]
    image = (np.random.default_rng(0).random((70, 90)) * 255).astype(np.uint8)
    up = client.post("/api/uploads", files={"file": ("scan.png", png(image), "image/png")}).json()
    assert (up["frames"], up["height"], up["width"], up["kind"]) == (1, 70, 90, "image")
    pred = client.post(f"/api/uploads/{up['id']}/frames/0/predict").json()
    probs = decode(client.get(pred["maps"]["probabilities"]).content)
    assert probs.shape == (70, 90) and probs.dtype == np.uint8
    assert decode(client.get(pred["maps"]["entropy"]).content).shape == (70, 90)
    for threshold in (0.3, 0.7):
        mask = decode(client.get(pred["downloads"]["mask"] + f"&threshold={threshold}").content)
        assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 255}
        near = np.abs(probs.astype(float) - 255 * threshold) <= 1  # the 8-bit map rounds these
        assert ((mask > 0) == (probs > 255 * threshold))[~near].all()  # the page's rule, the server's mask
    overlay = decode(client.get(pred["downloads"]["overlay"]).content)
    assert overlay.shape == (70, 90, 3)
    csv = client.get(pred["downloads"]["figures"] + "&threshold=0.5").text.splitlines()
    assert csv[0].startswith("name,frame,checkpoint,tta,threshold,lesion_area_px") and csv[1].startswith("scan.png,0,model")
    area = int(csv[1].split(",")[5])
    assert area == pred["figures"]["lesion_area_px"]
    tta = client.post(f"/api/uploads/{up['id']}/frames/0/predict?tta=true").json()
    assert tta["maps"]["variance"] and decode(client.get(tta["maps"]["variance"]).content).shape == (70, 90)


def test_uploads_are_judged_by_content(client: TestClient, tmp_path: Path) -> None:
    deep = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    assert client.post("/api/uploads", files={"file": ("deep.png", buffer.getvalue())}).status_code == 200
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(jpeg, format="JPEG")
    named_wrong = client.post("/api/uploads", files={"file": ("scan.bmp", jpeg.getvalue())})  # a JPEG called .bmp
    assert named_wrong.status_code == 200 and named_wrong.json()["width"] == 50
    fake = client.post("/api/uploads", files={"file": ("fake.png", b"this is not an image at all")})
    assert fake.status_code == 400 and "fake.png" in fake.json()["error"]
    assert client.post("/api/uploads", files={"file": ("empty.png", b"")}).status_code == 400
    cine = write_dicom(tmp_path / "cine.dcm", (np.random.default_rng(1).random((3, 48, 56)) * 255).astype(np.uint8),
                       pixel_spacing=(0.1, 0.2))  # fmt: skip
    up = client.post("/api/uploads", files={"file": ("cine", cine.read_bytes())}).json()  # no suffix: sniffed
    assert (up["kind"], up["frames"], up["spacing_mm"]) == ("dicom", 3, [0.1, 0.2])
    pred = client.post(f"/api/uploads/{up['id']}/frames/2/predict").json()
    assert pred["figures"]["lesion_area_mm2"] == pytest.approx(pred["figures"]["lesion_area_px"] * 0.02)
    bad_frame = client.post(f"/api/uploads/{up['id']}/frames/3/predict")
    assert bad_frame.status_code == 400 and "3 frame(s)" in bad_frame.json()["error"]
    assert client.get("/api/uploads/nope/frames/0/image.png").status_code == 404


def test_upload_size_limit(bench: Workbench) -> None:
    small = TestClient(create_app(ServeSettings(checkpoints=[bench.checkpoint], max_upload_bytes=1000)))
    big = png((np.random.default_rng(0).random((80, 80)) * 255).astype(np.uint8))
    response = small.post("/api/uploads", files={"file": ("big.png", big)})
    assert response.status_code == 413 and "upload limit" in response.json()["error"]


def test_a_token_is_required_when_set(bench: Workbench) -> None:
    client = TestClient(create_app(ServeSettings(checkpoints=[bench.checkpoint], token="s3cret")))
    assert client.get("/api/checkpoints").status_code == 401
    assert client.get("/segment").status_code == 401
    assert client.get("/api/checkpoints", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/checkpoints", headers={"X-Rabusseg-Token": "wrong"}).status_code == 401
    first = client.get("/segment?token=s3cret")
    assert first.status_code == 200 and "rabusseg_token" in first.headers.get("set-cookie", "")
    assert client.get("/api/checkpoints").status_code == 200  # the cookie now carries it


def test_runs_curves_gallery_images_and_comparison(client: TestClient, bench: Workbench) -> None:
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert set(runs) == {"a", "nested/b"} and runs["a"]["method"] == "supervised" and runs["a"]["evals"] == ["test_last"]
    details = client.get("/api/runs/nested/b/details").json()
    assert "method:" in details["config"] and [r["step"] for r in details["curves"]["train"]] == [1, 2]
    assert details["evaluations"]["test_last"]["metrics"]["dice"]["mean"] is not None
    gallery = client.get("/api/runs/a/gallery").json()
    test_ids = DatasetFolder(bench.data).split("test")
    assert gallery["images"] is True and sorted(r["id"] for r in gallery["rows"]) == sorted(test_ids)
    picture = decode(client.get(f"/api/runs/a/images/{test_ids[0]}.png").content)
    assert picture.shape == (64, 80, 3)
    assert (picture == [34, 197, 94]).all(axis=2).any()  # the ground-truth outline is drawn
    cmp = client.get("/api/compare?a=a&b=nested/b").json()
    assert cmp["n"] == len(test_ids) and cmp["wins_a"] + cmp["wins_b"] + cmp["ties"] == cmp["n"] and cmp["same_split"]
    assert len(cmp["most_different"]) == min(12, cmp["n"])


def test_names_that_leave_their_folders_are_refused(client: TestClient, bench: Workbench, tmp_path: Path) -> None:
    for name in ("../data", "..", "%2e%2e", "/etc", "a/../../x", ".hidden"):
        assert client.get(f"/api/runs/{name}/details").status_code == 404, name
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "summary.json").write_text("{}")
    (bench.runs / "escape").symlink_to(outside, target_is_directory=True)
    try:
        assert client.get("/api/runs/escape/details").status_code == 403
        assert "escape" not in {r["name"] for r in client.get("/api/runs").json()}
    finally:
        (bench.runs / "escape").unlink()
    assert client.get("/api/annotate/images/..%2Fsecret.png").status_code == 404
    assert client.get("/api/runs/a/images/not_in_eval.png").status_code == 404


def test_rank_then_save_a_mask_into_a_new_list(client: TestClient, bench: Workbench) -> None:
    lists = client.get("/api/annotate/lists").json()["lists"]
    assert "1_2/unlabeled" in lists
    job = client.post("/api/annotate/rank?split=1_2/unlabeled").json()
    for _ in range(200):
        if job["state"] != "running":
            break
        threading.Event().wait(0.05)
        job = client.get("/api/annotate/rank?split=1_2/unlabeled").json()
    assert job["state"] == "done" and job["done"] == job["total"] == len(job["rows"]) > 0
    assert [r["rank"] for r in job["rows"]] == list(range(1, len(job["rows"]) + 1))
    scores = [r["score"] for r in job["rows"]]
    assert scores == sorted(scores, reverse=True)
    image_id = job["rows"][0]["id"]
    prediction = decode(client.get(f"/api/annotate/images/{image_id}/prediction.png").content)
    assert prediction.shape == (64, 80)

    splits = bench.data / "splits"
    before = {p: p.read_bytes() for p in splits.rglob("*.txt")}
    mask = np.zeros((64, 80), np.uint8)
    mask[10:30, 20:50] = 255
    form = {"split": "1_2/unlabeled", "target": "1_2_mine"}
    first = client.post(f"/api/annotate/images/{image_id}/mask", data=form, files={"mask": ("m.png", png(mask))})
    assert first.status_code == 409 and "already exists" in first.json()["error"]  # phantoms have masks
    saved = client.post(f"/api/annotate/images/{image_id}/mask", data={**form, "overwrite": "true"},
                        files={"mask": ("m.png", png(mask))})  # fmt: skip
    assert saved.status_code == 200, saved.text
    out = saved.json()
    assert out["lesion_px"] == 20 * 30 and "--set data.labeled=1_2_mine/labeled" in out["command"]
    written = np.asarray(Image.open(bench.data / "masks" / f"{image_id}.png"))
    assert ((written > 0) == (mask > 0)).all()
    new = DatasetFolder(bench.data)
    assert image_id in new.split("1_2_mine/labeled") and image_id not in new.split("1_2_mine/unlabeled")
    assert len(new.split("1_2_mine/labeled")) == len(new.split("1_2/labeled")) + 1
    assert {p: p.read_bytes() for p in before} == before  # the original lists and the test list are untouched


def test_annotation_refusals_write_nothing(client: TestClient, bench: Workbench) -> None:
    folder = DatasetFolder(bench.data)
    test_id, unl_id = folder.split("test")[0], folder.split("1_2/unlabeled")[-1]
    snapshot = {p: p.read_bytes() for p in (bench.data / "masks").iterdir()}
    ok_mask = png(np.zeros((64, 80), np.uint8))
    form = {"split": "1_2/unlabeled", "target": "1_2_other", "overwrite": "true"}
    refused = client.post(f"/api/annotate/images/{test_id}/mask", data=form, files={"mask": ("m.png", ok_mask)})
    assert refused.status_code == 400 and "test list" in refused.json()["error"]
    wrong_size = client.post(f"/api/annotate/images/{unl_id}/mask", data=form, files={"mask": ("m.png", png(np.zeros((10, 10), np.uint8)))})
    assert wrong_size.status_code == 400 and "10x10" in wrong_size.json()["error"]
    junk = client.post(f"/api/annotate/images/{unl_id}/mask", data=form, files={"mask": ("m.png", b"junk")})
    assert junk.status_code == 400
    for target in ("1_2", "test", "../escape", "a/b/c"):
        bad = client.post(f"/api/annotate/images/{unl_id}/mask", data={**form, "target": target}, files={"mask": ("m.png", ok_mask)})
        assert bad.status_code == 403, target
    assert client.post("/api/annotate/images/nope/mask", data=form, files={"mask": ("m.png", ok_mask)}).status_code == 404
    assert {p: p.read_bytes() for p in (bench.data / "masks").iterdir()} == snapshot
    assert not (bench.data / "splits" / "1_2_other").exists()


def test_concurrent_requests_and_survival_after_errors(client: TestClient) -> None:
    image = png((np.random.default_rng(2).random((64, 64)) * 255).astype(np.uint8))
    up = client.post("/api/uploads", files={"file": ("x.png", image)}).json()
    results: list[int] = []

    def hit(k: int) -> None:
        results.append(client.post(f"/api/uploads/{up['id']}/frames/0/predict?tta={'true' if k % 2 else 'false'}").status_code)

    threads = [threading.Thread(target=hit, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    assert client.post("/api/uploads", files={"file": ("bad.png", b"\x89PNG\r\n\x1a\n broken")}).status_code == 400
    assert client.post(f"/api/uploads/{up['id']}/frames/0/predict?checkpoint=nope").status_code == 404
    assert client.get("/api/checkpoints").status_code == 200  # still serving
