"""Synthetic B-mode breast-ultrasound phantoms with exact lesion masks (the embedded default data).

Why: the project must train, evaluate and test end to end on a fresh machine without a licensed
dataset.  Each image is rendered in *probe space* (rows = depth along the beam, columns = lateral
position) and scan-converted to a linear or convex (fan) field of view:

1. tissue reflectivity: skin, subcutaneous fat with hypoechoic lobules and bright septa,
   heterogeneous fibroglandular tissue with Cooper's ligaments, pectoral muscle, chest wall;
2. a hypoechoic lesion: a smooth wider-than-tall ellipse (benign: cyst or fibroadenoma) or an
   irregular, microlobulated, possibly spiculated shape with an echogenic halo (malignant);
3. attenuation integrated along the beam (``cumsum`` over depth), so strongly attenuating
   lesions cast posterior acoustic shadows and cysts give posterior enhancement; time-gain
   compensation undoes most of the average depth loss;
4. fully developed speckle: complex Gaussian scatterers weighted by the reflectivity, blurred by
   an anisotropic point-spread function, envelope-detected and log-compressed.

Every image draws from its own ``numpy`` generator seeded by ``(seed, index)``; all work is
vectorised per image, so the output files are bit-identical for a seed.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rabusseg.data.io import write_split
from rabusseg.errors import DataError, OutputExistsError

CLASSES = ("benign", "malignant")
_OWNED_ENTRIES = ("images", "masks", "splits", "metadata.csv")


@dataclass(frozen=True)
class PhantomInfo:
    """What was drawn for one phantom (written as a row of ``metadata.csv``)."""

    cls: str
    probe: str
    lesion_type: str
    lesion_depth: float
    equivalent_radius_px: float
    posterior_effect: float
    """> 0: posterior shadow, the fraction of amplitude lost behind the lesion; < 0: posterior
    enhancement, the amplitude behind the lesion grows by a factor ``1 + |value|``."""
    n_spicules: int
    lesion_area_fraction: float
    lesion_contrast: float
    """Mean lesion intensity over the mean of a ring of tissue around it (display image)."""


# ----------------------------------------------------------------------------------- fields
def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-std random field with correlation lengths ``scale`` (rows, cols) in pixels."""
    h, w = shape
    scale = (max(scale[0], 1.0), max(scale[1], 1.0))
    gh, gw = max(2, int(np.ceil(h / scale[0])) + 3), max(2, int(np.ceil(w / scale[1])) + 3)
    noise = rng.standard_normal((gh, gw)).astype(np.float32)
    coarse = cv2.GaussianBlur(noise, (0, 0), 0.7)  # blur on the coarse grid (cheap), then upsample
    field = cv2.resize(coarse, (int(gw * scale[1]), int(gh * scale[0])), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(rng.integers(0, field.shape[0] - h + 1)), int(rng.integers(0, field.shape[1] - w + 1))
    field = field[oy : oy + h, ox : ox + w]
    return (field - field.mean()) / (field.std() + 1e-6)


def _smooth_curve(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """A smooth zero-mean unit-std 1-D random curve of length ``n`` (layer boundaries)."""
    return _smooth_field(rng, (1, n), (1.0, scale))[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# ----------------------------------------------------------------------------------- tissue
def _tissue(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Layered breast reflectivity in probe space; returns it and the depth where glands start."""
    v = (np.arange(h, dtype=np.float32) / h)[:, None]
    u = np.arange(w, dtype=np.float32)[None, :]
    skin = rng.uniform(0.025, 0.05) + 0.006 * _smooth_curve(rng, w, w / 3)
    fat = skin + rng.uniform(0.1, 0.28) + 0.04 * _smooth_curve(rng, w, w / 2.5)
    gland = fat + rng.uniform(0.28, 0.45) + 0.06 * _smooth_curve(rng, w, w / 2)
    muscle = gland + rng.uniform(0.08, 0.16) + 0.02 * _smooth_curve(rng, w, w / 2)
    soft, px = 0.012, min(h, w) / 256  # px: one pixel of the 256-pixel reference size

    # Fat: hypoechoic lobules separated by thin echogenic septa (level lines of a smooth field).
    lob = _smooth_field(rng, (h, w), (h * 0.07, w * 0.15))
    grain = _smooth_field(rng, (h, w), (4 * px, 10 * px))
    r_fat = 0.15 * np.exp(0.4 * grain) + 1.2 * np.exp(-((lob / 0.06) ** 2))
    # Glands: heterogeneous, laterally elongated texture, fat islands and Cooper's ligaments.
    tex = _smooth_field(rng, (h, w), (h * 0.03, w * 0.1))
    isles = _sigmoid((_smooth_field(rng, (h, w), (h * 0.05, w * 0.12)) - 1.1) * 6)
    lig = _smooth_field(rng, (h, w), (h * 0.04, w * 0.3))  # level lines run mostly sideways
    r_gland = np.exp(1.0 * tex) * (1 - 0.8 * isles) + 5.0 * np.exp(-((lig / 0.05) ** 2))
    # Muscle: striations running obliquely.
    tilt = rng.uniform(-0.15, 0.15)
    wobble = 2.0 * _smooth_field(rng, (h, w), (8 * px, 30 * px))
    stripes = np.sin(2 * np.pi * (v * h + tilt * u) / (rng.uniform(4, 8) * px) + wobble)
    r_muscle = 0.25 + 1.2 * np.clip(stripes, 0, None) ** 4
    r_wall = 0.08 * np.exp(0.5 * _smooth_field(rng, (h, w), (6 * px, 20 * px)))

    edges = [_sigmoid((v - b[None, :]) / soft) for b in (skin, fat, gland, muscle)]
    weights = [1 - edges[0], edges[0] - edges[1], edges[1] - edges[2], edges[2] - edges[3], edges[3]]
    layers = [np.full((h, w), 3.0, np.float32), r_fat, r_gland, r_muscle, r_wall]
    refl = sum(wt * layer for wt, layer in zip(weights, layers))
    # Bright fascia lines at the fat/gland and gland/muscle interfaces.
    for b, amp in ((fat, 1.5), (gland, 2.5)):
        patchy = np.clip(_smooth_curve(rng, w, w / 6) + 0.5, 0, None)[None, :]
        refl += amp * patchy * np.exp(-(((v - b[None, :]) * h / (1.2 * px)) ** 2))
    return refl.astype(np.float32), float(np.mean(fat))


def _ducts(rng: np.random.Generator, refl: np.ndarray, top: float, n: int) -> None:
    """Small hypoechoic elongated structures (ducts, vessels): distractors outside the mask."""
    h, w = refl.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(top + 0.05, top + 0.35) * h, rng.uniform(0.05, 0.95) * w
        a, b = rng.uniform(0.04, 0.12) * w, rng.uniform(0.008, 0.025) * h
        ang = rng.uniform(-0.3, 0.3)
        dx, dy = xx - cx, yy - cy
        rx, ry = dx * np.cos(ang) + dy * np.sin(ang), -dx * np.sin(ang) + dy * np.cos(ang)
        inside = _sigmoid((1 - np.sqrt((rx / a) ** 2 + (ry / b) ** 2)) * 6)
        refl *= 1 - rng.uniform(0.6, 0.9) * inside


# ----------------------------------------------------------------------------------- lesion
def _lesion_shape(rng: np.random.Generator, h: int, w: int, malignant: bool, top: float) -> tuple[np.ndarray, dict]:
    """Boolean lesion mask in probe space from a polar radius function r(theta)."""
    lo, hi = (0.09, 0.28) if malignant else (0.06, 0.26)
    r_eq = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * min(h, w)
    aspect = rng.uniform(0.75, 1.35) if malignant else rng.uniform(1.25, 2.1)  # width / height
    a, b = r_eq * np.sqrt(aspect), r_eq / np.sqrt(aspect)
    reach = 1.6 if malignant else 1.15  # lobulation and spicules extend past the ellipse
    shrink = min(1.0, 0.4 * min(h, w) / (reach * max(a, b)))  # keep the lesion inside the image
    a, b, r_eq = a * shrink, b * shrink, r_eq * shrink
    ext = reach * max(a, b)
    lo_y, hi_y = max((top + 0.04) * h + b, ext + 0.04 * h), min(0.72 * h, 0.94 * h - ext)
    cy = rng.uniform(min(lo_y, hi_y), max(lo_y, hi_y))
    cx = rng.uniform(max(0.15 * w, 0.06 * w + ext), min(0.85 * w, 0.94 * w - ext))
    ang = rng.uniform(-0.35, 0.35)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    rx, ry = (dx * np.cos(ang) + dy * np.sin(ang)) / a, (-dx * np.sin(ang) + dy * np.cos(ang)) / b
    rho, theta = np.sqrt(rx**2 + ry**2), np.arctan2(ry, rx)

    table_theta = np.linspace(-np.pi, np.pi, 2049, dtype=np.float32)
    if malignant:
        ks = np.arange(2, 17)
        amps = rng.uniform(0.3, 1.0, ks.size) * 0.2 / ks**0.8
    else:
        ks = np.arange(2, 5)
        amps = rng.uniform(0.0, 0.05, ks.size)
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    table = 1 + amps @ np.cos(ks[:, None] * table_theta[None] + phases[:, None])
    n_spicules = int(rng.integers(3, 12)) if malignant and rng.random() < 0.6 else 0
    for _ in range(n_spicules):
        t0, width, length = rng.uniform(-np.pi, np.pi), rng.uniform(0.08, 0.2), rng.uniform(0.15, 0.55)
        d = np.abs(np.angle(np.exp(1j * (table_theta - t0))))
        table = table + length * np.clip(1 - d / width, 0, None) ** 2
    radius = table[np.round((theta + np.pi) / (2 * np.pi) * 2048).astype(np.int64)]
    mask = rho < radius
    info = {"r_eq": r_eq, "cy": cy, "cx": cx, "b": b, "n_spicules": n_spicules}
    return mask, info


def _attenuation_gain(rng: np.random.Generator, mask: np.ndarray, kind: str, b: float) -> tuple[np.ndarray, float]:
    """Amplitude gain from attenuation integrated along depth, after time-gain compensation."""
    h, w = mask.shape
    alpha0 = rng.uniform(1.2, 2.4)  # nepers of amplitude lost over the full depth
    alpha = np.full((h, w), alpha0 / h, np.float32)
    thickness = max(2.0 * b, 1.0)
    if kind == "irregular":
        effect = rng.uniform(0.35, 0.85) if rng.random() < 0.8 else rng.uniform(0.0, 0.2)
    elif kind == "cyst":
        effect = -rng.uniform(1.0, 2.5)
    else:
        effect = -rng.uniform(0.0, 0.4) if rng.random() < 0.6 else rng.uniform(0.0, 0.15)
    extra = -np.log1p(-effect) if effect > 0 else -np.log1p(abs(effect))  # < 0: the lesion amplifies
    alpha += mask * np.float32(extra / thickness)
    gain = np.exp(-np.cumsum(alpha, axis=0))
    gain = cv2.GaussianBlur(gain.astype(np.float32), (0, 0), sigmaX=rng.uniform(2.0, 4.5) * w / 256, sigmaY=0.5)
    v = np.arange(h, dtype=np.float32) / h
    tgc = alpha0 * rng.uniform(0.75, 1.1) * v + 0.12 * _smooth_curve(rng, h, h / 4)
    return gain * np.exp(tgc)[:, None], float(effect)


def _lesion_reflectivity(rng: np.random.Generator, refl: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """Paint the lesion: anechoic cyst, homogeneous fibroadenoma or heterogeneous carcinoma."""
    h, w = refl.shape
    m, px = mask.astype(np.float32), min(h, w) / 256
    if kind == "cyst":
        inner, edge_sigma = np.full((h, w), rng.uniform(0.0005, 0.003), np.float32), 0.6
    elif kind == "fibroadenoma":
        inner = rng.uniform(0.05, 0.18) * np.exp(0.25 * _smooth_field(rng, (h, w), (6 * px, 10 * px)))
        edge_sigma = 0.8
    else:
        inner = rng.uniform(0.04, 0.15) * np.exp(0.55 * _smooth_field(rng, (h, w), (4 * px, 6 * px)))
        edge_sigma = rng.uniform(0.8, 1.6)
    soft = cv2.GaussianBlur(m, (0, 0), edge_sigma * px)
    out = refl * (1 - soft) + inner * soft
    if kind == "irregular":
        # Echogenic halo just outside the margin, and a few microcalcifications inside.
        ring = np.clip(cv2.GaussianBlur(m, (0, 0), 3.0 * px) - m, 0, None)
        out += rng.uniform(0.0, 3.0) * ring
        idx = np.flatnonzero(mask)
        if idx.size and rng.random() < 0.4:
            out.flat[rng.choice(idx, size=min(idx.size, int(rng.integers(2, 10))), replace=False)] += 15.0
    elif kind == "fibroadenoma":
        ring = np.clip(cv2.GaussianBlur(m, (0, 0), 1.0 * px) - m, 0, None)
        out += rng.uniform(0.0, 2.0) * ring  # thin capsule
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------- imaging
def _speckle_envelope(rng: np.random.Generator, refl: np.ndarray, gain: np.ndarray, scale: float) -> np.ndarray:
    """Envelope of a PSF-blurred complex scatterer field: Rayleigh speckle weighted by reflectivity."""
    h, w = refl.shape
    amp = np.sqrt(refl).astype(np.float32)
    sig_ax, sig_lat = rng.uniform(0.6, 0.9) * scale, rng.uniform(1.3, 2.2) * scale
    power = np.zeros((h, w), np.float32)
    for _ in range(4):  # real and imaginary parts of two compounded looks (lower speckle contrast)
        part = cv2.GaussianBlur(amp * rng.standard_normal((h, w)).astype(np.float32), (0, 0), sig_lat, sigmaY=sig_ax)
        power += part**2
    env = np.sqrt(power / 2) * gain
    noise = np.abs(rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))).astype(np.float32)
    return env + 0.01 * float(np.median(env)) * noise


def _log_compress(rng: np.random.Generator, env: np.ndarray, scale: float) -> np.ndarray:
    """Log compression to a random dynamic range: the display intensity in [0, 1]."""
    db = 20 * np.log10(env + 1e-12)
    db = cv2.GaussianBlur(db.astype(np.float32), (0, 0), sigmaX=rng.uniform(0.6, 1.0) * scale)  # speckle reduction
    top = np.percentile(db, 99.5) + rng.uniform(0, 4)
    dyn = rng.uniform(40, 55)
    return np.clip((db - (top - dyn)) / dyn, 0, 1) ** rng.uniform(1.4, 2.0)


def _scan_geometry(rng: np.random.Generator, h: int, w: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Map every display pixel to probe-space (depth v, lateral u) in [0, 1] and the FOV mask."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = rng.uniform(0.03, 0.08) * h, h - rng.uniform(0.0, 0.03) * h
    if rng.random() < 0.6:
        left, right = rng.uniform(0.02, 0.1) * w, w - rng.uniform(0.02, 0.1) * w
        v, u, probe = (yy - top) / (bottom - top), (xx - left) / (right - left), "linear"
    else:
        r0, depth = rng.uniform(0.5, 1.6) * h, bottom - top
        half = np.arcsin(min(0.99, rng.uniform(0.4, 0.48) * w / (r0 + depth)))
        ay = top - r0
        r, th = np.hypot(yy - ay, xx - w / 2), np.arctan2(xx - w / 2, yy - ay)
        v, u, probe = (r - r0) / depth, (th + half) / (2 * half), "convex"
    fov = (v >= 0) & (v < 1) & (u >= 0) & (u < 1)
    return probe, v, u, fov


def render_phantom(
    rng: np.random.Generator, size: tuple[int, int], cls: str
) -> tuple[np.ndarray, np.ndarray, PhantomInfo]:
    """One phantom: ``uint8 (H, W)`` B-mode image, ``bool (H, W)`` lesion mask and what was drawn."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {CLASSES}, got {cls!r}")
    h, w = size
    malignant = cls == "malignant"
    kind = "irregular" if malignant else ("cyst" if rng.random() < 0.4 else "fibroadenoma")
    refl, gland_top = _tissue(rng, h, w)
    _ducts(rng, refl, gland_top, int(rng.integers(0, 4)))
    mask, shape = _lesion_shape(rng, h, w, malignant, gland_top)
    refl = _lesion_reflectivity(rng, refl, mask, kind)
    gain, effect = _attenuation_gain(rng, mask, kind, shape["b"])
    px = min(h, w) / 256
    bmode = _log_compress(rng, _speckle_envelope(rng, refl, gain, scale=px), scale=px)

    probe, v, u, fov = _scan_geometry(rng, h, w)
    mx, my = (u * (w - 1)).astype(np.float32), (v * (h - 1)).astype(np.float32)
    image = cv2.remap(bmode.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    lesion = cv2.remap(mask.astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) > 0
    image, lesion = np.where(fov, image, 0), lesion & fov
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    _depth_ticks(image, fov)

    ring = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~lesion & fov
    contrast = float(image[lesion].mean() / max(image[ring].mean(), 1.0)) if lesion.any() and ring.any() else 1.0
    info = PhantomInfo(
        cls=cls, probe=probe, lesion_type=kind, lesion_depth=round(shape["cy"] / h, 4),
        equivalent_radius_px=round(shape["r_eq"], 2), posterior_effect=round(effect, 4),
        n_spicules=shape["n_spicules"], lesion_area_fraction=round(float(lesion.mean()), 6),
        lesion_contrast=round(contrast, 4),
    )
    return image, lesion, info


def _depth_ticks(image: np.ndarray, fov: np.ndarray) -> None:
    """Scanner-style depth marks in the black margin right of the field of view."""
    h, w = image.shape
    cols = np.flatnonzero(fov.any(axis=0))
    x = min(int(cols.max()) + 3, w - 2) if cols.size else w - 2
    rows = np.flatnonzero(fov.any(axis=1))
    if rows.size and x + 2 <= w:
        ticks = np.arange(rows.min(), rows.max(), max(h // 10, 4))
        image[ticks, x : x + 2] = np.where(fov[ticks, x : x + 2], image[ticks, x : x + 2], 200)


# ----------------------------------------------------------------------------------- dataset
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output '{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"output folder '{out}' is not empty; pass --overwrite to replace it")
        for name in _OWNED_ENTRIES:  # remove only what a previous run wrote: no stale ids survive
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "splits").mkdir(parents=True, exist_ok=True)


def _stratified_test(ids_by_class: dict[str, list[str]], fraction: float, seed: int) -> list[str]:
    """A fixed-seed test list with ``fraction`` of every class (at least one when a class has >= 2)."""
    rng = np.random.default_rng([seed, 7919])
    test: list[str] = []
    for cls in CLASSES:
        ids = ids_by_class.get(cls, [])
        k = int(round(fraction * len(ids)))
        if fraction > 0 and k == 0 and len(ids) >= 2:
            k = 1
        test += [ids[i] for i in sorted(rng.permutation(len(ids))[:k])]
    return sorted(test)


def synthesize_dataset(
    out: str | Path,
    n: int = 200,
    seed: int = 0,
    size: int | tuple[int, int] = (256, 256),
    test_fraction: float = 0.2,
    malignant_fraction: float = 0.35,
    overwrite: bool = False,
) -> list[dict[str, object]]:
    """Write ``n`` phantoms in the folder format and return the ``metadata.csv`` rows.

    Why: a dataset anyone can regenerate bit for bit (``images/``, ``masks/`` 0/255,
    ``metadata.csv``, a class-stratified ``splits/test.txt``) so the pipeline and its tests run
    without a licensed download; ``rabusseg data split`` then draws labelled/unlabelled lists.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if n < 1:
        raise DataError(f"synth: n must be >= 1, got {n}")
    if min(h, w) < 64:
        raise DataError(f"synth: image size must be at least 64x64, got {h}x{w}")
    if not 0 <= test_fraction < 1 or not 0 <= malignant_fraction <= 1:
        raise DataError("synth: test_fraction must be in [0, 1) and malignant_fraction in [0, 1]")
    out = Path(out)
    _prepare_out(out, overwrite)

    rows: list[dict[str, object]] = []
    ids_by_class: dict[str, list[str]] = {c: [] for c in CLASSES}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        cls = "malignant" if rng.random() < malignant_fraction else "benign"
        image, mask, info = render_phantom(rng, (h, w), cls)
        pid = f"{cls}_{len(ids_by_class[cls]) + 1:04d}"
        ids_by_class[cls].append(pid)
        Image.fromarray(image, mode="L").save(out / "images" / f"{pid}.png")
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out / "masks" / f"{pid}.png")
        fields = asdict(info)
        cls_name = fields.pop("cls")
        rows.append({"id": pid, "class": cls_name, "width": w, "height": h, **fields, "seed": seed, "index": i})

    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    test = _stratified_test(ids_by_class, test_fraction, seed)
    write_split(out / "splits" / "test.txt", test)
    return rows
