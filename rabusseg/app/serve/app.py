"""The FastAPI application of ``rabusseg serve``: three pages and the JSON/PNG API behind them.

Pages (server-side templates, plain JavaScript and CSS shipped in ``rabusseg/app/serve/static``):
``/segment`` (upload, overlay, threshold, downloads), ``/runs`` (curves, gallery, comparison) and
``/annotate`` (ranking queue, brush/eraser, save).  Every API error is JSON ``{"error": ...}``
with the status of its kind: 400 bad input, 401 no token, 403 a name that leaves its folder,
404 unknown, 409 exists, 413 too large.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from rabusseg.app.serve import runs as run_files
from rabusseg.app.serve.annotate import Annotator, unlabeled_lists
from rabusseg.app.serve.models import ModelPool, figures
from rabusseg.app.serve.security import COOKIE, Forbidden, NotFound, token_ok
from rabusseg.app.serve.uploads import DEFAULT_MAX_BYTES, TooLarge, Upload, UploadStore, png_bytes
from rabusseg.errors import OutputExistsError, RabussegError

PACKAGE = Path(__file__).resolve().parent
STATUS = [(NotFound, 404), (Forbidden, 403), (TooLarge, 413), (OutputExistsError, 409), (RabussegError, 400)]


@dataclass
class ServeSettings:
    """What ``rabusseg serve`` was started with."""

    checkpoints: list[Path] = field(default_factory=list)
    runs: Path | None = None
    data: Path | None = None
    token: str | None = None
    """Required on every request when set (non-loopback hosts)."""
    device: str = "cpu"
    max_upload_bytes: int = DEFAULT_MAX_BYTES


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.35,
             gt: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The image with the mask filled (alpha) and outlined; the ground truth outlined in green when given."""
    import cv2

    out = image.copy()
    if mask.any():
        out[mask] = ((1 - alpha) * out[mask] + alpha * np.asarray(color)).astype(np.uint8)
    for m, c in ((gt, (34, 197, 94)), (mask, color)):
        if m is not None and m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, c, max(1, round(max(image.shape[:2]) / 300)))
    return out


def create_app(settings: ServeSettings) -> Any:
    """The ASGI application (``uvicorn.run(create_app(...))``); tests drive it with FastAPI's TestClient."""
    app = FastAPI(title="rabusseg workbench", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    templates = Jinja2Templates(directory=str(PACKAGE / "templates"))
    pool = ModelPool(settings.checkpoints, settings.device)
    uploads = UploadStore(settings.max_upload_bytes)
    annotator = Annotator(settings.data) if settings.data is not None else None
    app.state.settings, app.state.pool, app.state.uploads, app.state.annotator = settings, pool, uploads, annotator

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        offered = (request.headers.get("x-rabusseg-token") or request.query_params.get("token")
                   or request.cookies.get(COOKIE))  # fmt: skip
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        if not token_ok(settings.token, offered):
            return JSONResponse({"error": "this server needs its access token (printed when it started): "
                                          "open the address with ?token=..."}, status_code=401)  # fmt: skip
        response = await call_next(request)
        if settings.token and request.query_params.get("token"):
            response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    for kind, status in STATUS:
        def handler(request: Request, err: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"error": str(err)}, status_code=status)

        app.add_exception_handler(kind, handler)  # type: ignore[arg-type]

    app.mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static")

    def page(request: Request, name: str, title: str) -> HTMLResponse:
        return templates.TemplateResponse(request, f"{name}.html", {"title": title, "active": name,
                                          "has_runs": settings.runs is not None, "has_data": annotator is not None})  # fmt: skip

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/segment")

    @app.get("/segment", response_class=HTMLResponse)
    def segment_page(request: Request) -> HTMLResponse:
        return page(request, "segment", "Segment")

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        return page(request, "runs", "Runs")

    @app.get("/annotate", response_class=HTMLResponse)
    def annotate_page(request: Request) -> HTMLResponse:
        return page(request, "annotate", "Annotate")

    # ------------------------------------------------------------------ segment

    @app.get("/api/checkpoints")
    def checkpoints() -> list[dict[str, Any]]:
        return pool.describe()

    @app.post("/api/uploads")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        payload = await file.read(settings.max_upload_bytes + 1)
        return uploads.add(file.filename or "upload", payload).describe()

    @app.get("/api/uploads/{upload_id}")
    def upload_info(upload_id: str) -> dict[str, Any]:
        return uploads.get(upload_id).describe()

    @app.get("/api/uploads/{upload_id}/frames/{frame}/image.png")
    def frame_image(upload_id: str, frame: int) -> Response:
        return Response(png_bytes(uploads.get(upload_id).frame(frame)), media_type="image/png")

    def result_of(up: Upload, frame: int, checkpoint: str | None, tta: bool) -> Any:
        segmenter = pool.segmenter(checkpoint)
        key = (frame, str(segmenter.source), tta)
        if key not in up.predictions:
            up.predictions[key] = pool.predict(segmenter, up.frame(frame), tta=tta)
        return up.predictions[key]

    @app.post("/api/uploads/{upload_id}/frames/{frame}/predict")
    def predict(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False,
                threshold: float = 0.5) -> dict[str, Any]:  # fmt: skip
        up = uploads.get(upload_id)
        result = result_of(up, frame, checkpoint, tta)
        base = f"/api/uploads/{upload_id}/frames/{frame}"
        query = f"checkpoint={checkpoint or ''}&tta={str(tta).lower()}"
        return {"upload": up.describe(), "frame": frame, "checkpoint": checkpoint or pool.names()[0], "tta": tta,
                "figures": figures(result, threshold, up.spacing).as_dict(),
                "maps": {"probabilities": f"{base}/probabilities.png?{query}", "entropy": f"{base}/entropy.png?{query}",
                         "variance": f"{base}/variance.png?{query}" if tta else None},
                "downloads": {"mask": f"{base}/mask.png?{query}", "overlay": f"{base}/overlay.png?{query}",
                              "probabilities": f"{base}/probabilities.png?{query}", "figures": f"{base}/figures.csv?{query}"}}  # fmt: skip

    def map_png(upload_id: str, frame: int, checkpoint: str | None, tta: bool, which: str) -> Response:
        result = result_of(uploads.get(upload_id), frame, checkpoint, tta)
        values = {"probabilities": result.probabilities, "entropy": result.entropy,
                  "variance": None if result.variance is None else np.clip(result.variance * 4, 0, 1)}[which]  # fmt: skip
        if values is None:
            raise NotFound("the variance map exists only with TTA")
        return Response(png_bytes(np.round(values * 255).astype(np.uint8)), media_type="image/png")

    @app.get("/api/uploads/{upload_id}/frames/{frame}/probabilities.png")
    def probabilities(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False) -> Response:
        return map_png(upload_id, frame, checkpoint, tta, "probabilities")

    @app.get("/api/uploads/{upload_id}/frames/{frame}/entropy.png")
    def entropy(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False) -> Response:
        return map_png(upload_id, frame, checkpoint, tta, "entropy")

    @app.get("/api/uploads/{upload_id}/frames/{frame}/variance.png")
    def variance(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False) -> Response:
        return map_png(upload_id, frame, checkpoint, tta, "variance")

    def attachment(name: str) -> dict[str, str]:
        return {"Content-Disposition": f'attachment; filename="{name}"'}

    @app.get("/api/uploads/{upload_id}/frames/{frame}/mask.png")
    def mask_png(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False,
                 threshold: float = 0.5) -> Response:  # fmt: skip
        up = uploads.get(upload_id)
        mask = result_of(up, frame, checkpoint, tta).probabilities > threshold
        return Response(png_bytes((mask * 255).astype(np.uint8)), media_type="image/png",
                        headers=attachment(f"{Path(up.name).stem}_f{frame}_mask.png"))  # fmt: skip

    @app.get("/api/uploads/{upload_id}/frames/{frame}/overlay.png")
    def overlay_png(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False,
                    threshold: float = 0.5) -> Response:  # fmt: skip
        up = uploads.get(upload_id)
        mask = result_of(up, frame, checkpoint, tta).probabilities > threshold
        return Response(png_bytes(_overlay(up.frame(frame), mask, (239, 68, 68))), media_type="image/png",
                        headers=attachment(f"{Path(up.name).stem}_f{frame}_overlay.png"))  # fmt: skip

    @app.get("/api/uploads/{upload_id}/frames/{frame}/figures.csv")
    def figures_csv(upload_id: str, frame: int, checkpoint: str | None = None, tta: bool = False,
                    threshold: float = 0.5) -> Response:  # fmt: skip
        up = uploads.get(upload_id)
        fig = figures(result_of(up, frame, checkpoint, tta), threshold, up.spacing).as_dict()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ["name", "frame", "checkpoint", "tta", "threshold", *fig])
        writer.writeheader()
        writer.writerow({"name": up.name, "frame": frame, "checkpoint": checkpoint or pool.names()[0], "tta": tta,
                         "threshold": threshold, **fig})  # fmt: skip
        return Response(buffer.getvalue(), media_type="text/csv", headers=attachment(f"{Path(up.name).stem}_f{frame}.csv"))

    # ------------------------------------------------------------------ runs

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return run_files.list_runs(settings.runs)

    @app.get("/api/runs/{name:path}/details")
    def run_details(name: str) -> dict[str, Any]:
        return run_files.run_details(run_files.run_path(settings.runs, name))

    @app.get("/api/runs/{name:path}/gallery")
    def run_gallery(name: str, evaluation: str = "test_last") -> dict[str, Any]:
        run = run_files.run_path(settings.runs, name)
        data = run_files.evaluated_data(run, evaluation)
        images = annotator is not None and data is not None and data.resolve() == annotator.root.resolve()
        return {"rows": run_files.gallery(run, evaluation), "images": images,
                "note": None if images else "start the server with --data set to the evaluated dataset to see the images"}  # fmt: skip

    @app.get("/api/runs/{name:path}/images/{image_id}.png")
    def run_image(name: str, image_id: str, evaluation: str = "test_last") -> Response:
        """The image with the ground truth (green) and the run's prediction (red) outlined."""
        from rabusseg.data.io import load_image, load_mask

        run = run_files.run_path(settings.runs, name)
        data = run_files.evaluated_data(run, evaluation)
        if annotator is None or data is None or data.resolve() != annotator.root.resolve():
            raise Forbidden("this evaluation's images are outside the --data folder")
        if image_id not in {r["id"] for r in run_files.gallery(run, evaluation)}:
            raise NotFound(f"{image_id!r} is not in the run's {evaluation} evaluation")
        image = load_image(annotator.folder.image_path(image_id))
        mask_path = annotator.folder.mask_path(image_id)
        gt = load_mask(mask_path) if mask_path is not None else None
        segmenter = pool.segmenter_for(run_files.run_checkpoint(run))
        pred = pool.predict(segmenter, image).mask
        return Response(png_bytes(_overlay(image, pred, (239, 68, 68), alpha=0.0, gt=gt)), media_type="image/png")

    @app.get("/api/compare")
    def compare(a: str, b: str, evaluation: str = "test_last") -> dict[str, Any]:
        return run_files.compare(run_files.run_path(settings.runs, a), run_files.run_path(settings.runs, b), evaluation)

    # ------------------------------------------------------------------ annotate

    def need_data() -> Annotator:
        if annotator is None:
            raise NotFound("no dataset was given: start the server with --data DATASET")
        return annotator

    @app.get("/api/annotate/lists")
    def annotate_lists() -> dict[str, Any]:
        ann = need_data()
        return {"data": str(ann.root), "lists": unlabeled_lists(ann.folder)}

    @app.post("/api/annotate/rank")
    def rank(split: str, checkpoint: str | None = None, tta: bool = False) -> dict[str, Any]:
        name = checkpoint or (pool.names()[0] if pool.names() else "")
        return need_data().start_ranking(split, name, pool, tta).describe()

    @app.get("/api/annotate/rank")
    def rank_status(split: str, checkpoint: str | None = None) -> dict[str, Any]:
        return need_data().job(split, checkpoint or (pool.names()[0] if pool.names() else "")).describe()

    @app.get("/api/annotate/images/{image_id}.png")
    def annotate_image(image_id: str) -> Response:
        from rabusseg.data.io import load_image

        ann = need_data()
        return Response(png_bytes(load_image(ann.folder.image_path(ann.known_id(image_id)))), media_type="image/png")

    @app.get("/api/annotate/images/{image_id}/prediction.png")
    def annotate_prediction(image_id: str, checkpoint: str | None = None) -> Response:
        from rabusseg.data.io import load_image

        ann = need_data()
        image = load_image(ann.folder.image_path(ann.known_id(image_id)))
        mask = pool.predict(pool.segmenter(checkpoint), image).mask
        return Response(png_bytes((mask * 255).astype(np.uint8)), media_type="image/png")

    @app.get("/api/annotate/images/{image_id}/info")
    def annotate_info(image_id: str) -> dict[str, Any]:
        ann = need_data()
        ann.known_id(image_id)
        return {"id": image_id, "has_mask": ann.folder.mask_path(image_id) is not None,
                "in_test": image_id in ann.test_ids(), "class": ann.folder.class_of(image_id)}  # fmt: skip

    @app.post("/api/annotate/images/{image_id}/mask")
    async def save_mask(image_id: str, split: str = Form(...), target: str = Form(...), overwrite: bool = Form(False),
                        mask: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008  # fmt: skip
        payload = await mask.read(settings.max_upload_bytes + 1)
        if len(payload) > settings.max_upload_bytes:
            raise TooLarge("the mask is over the upload limit")
        return need_data().save(image_id, payload, split=split, target=target, overwrite=overwrite)

    return app
