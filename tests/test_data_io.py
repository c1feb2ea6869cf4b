"""Loaders and hashing: odd-but-valid files read correctly, bad files raise a DataError naming them."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rabusseg.data.hashing import (
    dhash256,
    dhash_hex,
    exact_duplicate_groups,
    groups_from_metadata,
    hamming_matrix,
    near_duplicate_pairs,
    pixel_md5,
)
from rabusseg.data.io import is_image_file, load_image, load_mask, read_split, write_split
from rabusseg.errors import DataError

GRADIENT = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2  # (H=12, W=10), values 0..238


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    Image.fromarray(array, mode=mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


# --------------------------------------------------------------------------- images


def test_gray_image_is_replicated_to_rgb(tmp_path: Path) -> None:
    image = load_image(_save(tmp_path / "g.png", GRADIENT))
    assert image.dtype == np.uint8 and image.shape == (12, 10, 3)
    assert all(np.array_equal(image[..., c], GRADIENT) for c in range(3))


def test_rgb_and_rgba_images_keep_colour_and_drop_alpha(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT, 255 - GRADIENT, np.full_like(GRADIENT, 7)], axis=2)
    assert np.array_equal(load_image(_save(tmp_path / "c.png", rgb)), rgb)
    rgba = np.concatenate([rgb, np.zeros_like(GRADIENT)[..., None]], axis=2)  # fully transparent
    assert np.array_equal(load_image(_save(tmp_path / "a.png", rgba, "RGBA")), rgb)


def test_sixteen_bit_gray_image_keeps_high_byte(tmp_path: Path) -> None:
    values = GRADIENT.astype(np.uint16) * 257  # the usual 8 -> 16 bit conversion
    values[0, 0] = 65535
    values[0, 1] = 255  # below one 8-bit step
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), values)
    assert Image.open(path).mode.startswith("I;16")
    image = load_image(path)
    expected = GRADIENT.copy()
    expected[0, 0], expected[0, 1] = 255, 0
    assert np.array_equal(image[..., 0], expected) and np.array_equal(image[..., 2], expected)


def test_sixteen_bit_rgb_png_and_tiff_use_the_same_rule(tmp_path: Path) -> None:
    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[1, 2] = (300, 40000, 65535)
    for name in ("c16.png", "c16.tif"):
        cv2.imwrite(str(tmp_path / name), rgb16[..., ::-1])  # OpenCV writes BGR
        assert load_image(tmp_path / name)[1, 2].tolist() == [1, 156, 255]


def test_palette_one_bit_jpeg_bmp_and_tiff_images(tmp_path: Path) -> None:
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 10, 20, 30] + [0] * (253 * 3))
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[1].tolist() == [[10, 20, 30], [255, 0, 0]]
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png")[..., 0].tolist() == [[255, 0], [0, 255]]
    for ext in ("bmp", "tif", "jpg"):
        image = load_image(_save(tmp_path / f"g.{ext}", GRADIENT))
        assert image.shape == (12, 10, 3)
        tolerance = 8 if ext == "jpg" else 0  # JPEG is lossy
        assert np.abs(image[..., 1].astype(int) - GRADIENT).max() <= tolerance


def test_float_image_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.ones((3, 3), np.float32), mode="F").save(path)
    with pytest.raises(DataError, match=r"f\.tif.*floating-point"):
        load_image(path)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("half.png", "truncate", "truncated or corrupt"),
        ("text.png", b"this is not an image\n", "not an image"),
        ("empty.png", b"", "empty file"),
        ("half.jpg", "truncate-jpg", "truncated or corrupt"),
    ],
)
def test_bad_image_files_raise_data_error_naming_the_file(tmp_path: Path, name: str, content, reason: str) -> None:
    path = tmp_path / name
    if content == "truncate":
        _save(tmp_path / "full.png", GRADIENT)
        data = (tmp_path / "full.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "truncate-jpg":
        _save(tmp_path / "full.jpg", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    for loader in (load_image, load_mask):
        with pytest.raises(DataError, match=reason) as info:
            loader(path)
        assert name in str(info.value)


def test_missing_file_and_folder_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.png: file does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="is a folder"):
        load_mask(tmp_path)


def test_is_image_file_rule() -> None:
    assert is_image_file("a/b.PNG") and is_image_file("x.tiff") and is_image_file("x.jpeg")
    assert not is_image_file("x.txt") and not is_image_file(".hidden.png") and not is_image_file("x.gif")


# --------------------------------------------------------------------------- masks


def test_mask_modes_l_one_bit_and_rgb(tmp_path: Path) -> None:
    values = np.zeros((6, 7), np.uint8)
    values[1, 1], values[2, 3] = 1, 255
    expected = values > 0
    assert np.array_equal(load_mask(_save(tmp_path / "l.png", values)), expected)
    assert load_mask(_save(tmp_path / "l.png", values)).dtype == bool
    Image.fromarray(expected).save(tmp_path / "one.png")
    assert np.array_equal(load_mask(tmp_path / "one.png"), expected)
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[1, 1, 2] = 1  # a single non-zero channel is lesion
    rgb[2, 3] = 200
    assert np.array_equal(load_mask(_save(tmp_path / "rgb.png", rgb)), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_mask_ignores_compression_noise(tmp_path: Path, channels: int) -> None:
    """JPEG ringing leaves faint pixels around the lesion: they are not lesion."""
    lesion = np.zeros((48, 64), bool)
    lesion[10:30, 20:45] = True
    values = np.where(lesion, 255, 0).astype(np.uint8)
    image = values if channels == 1 else np.stack([values] * 3, axis=2)
    Image.fromarray(image).save(tmp_path / "m.jpg", quality=75)
    decoded = np.asarray(Image.open(tmp_path / "m.jpg"))
    brightest = decoded if decoded.ndim == 2 else decoded.max(axis=2)
    assert ((brightest != 0) & ~lesion).any()  # the noise is there to be ignored
    assert np.array_equal(load_mask(tmp_path / "m.jpg"), lesion)


def test_sixteen_bit_mask_keeps_low_values(tmp_path: Path) -> None:
    values = np.zeros((6, 7), np.uint16)
    values[1, 1], values[2, 3] = 1, 65535  # value 1 would vanish if scaled to 8 bits first
    cv2.imwrite(str(tmp_path / "m16.png"), values)
    assert np.array_equal(load_mask(tmp_path / "m16.png"), values > 0)
    rgb16 = np.zeros((6, 7, 3), np.uint16)
    rgb16[4, 5, 0] = 1
    cv2.imwrite(str(tmp_path / "m48.png"), rgb16)
    assert np.argwhere(load_mask(tmp_path / "m48.png")).tolist() == [[4, 5]]


def test_rgba_mask_uses_colour_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere, as BUSI's RGBA masks
    rgba[1, 1, :3] = 255
    rgba[2, 2] = (255, 255, 255, 0)  # white but fully transparent: background
    mask = load_mask(_save(tmp_path / "m.png", rgba, "RGBA"))
    assert np.argwhere(mask).tolist() == [[1, 1]]


def test_palette_mask_is_judged_by_colour_not_index(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([255, 255, 255, 0, 0, 0, 0, 128, 0] + [0] * (253 * 3))  # index 1 is black
    palette.save(tmp_path / "p.png")
    assert load_mask(tmp_path / "p.png").tolist() == [[True, False, True], [True, False, True]]
    palette.info["transparency"] = 0  # index 0 transparent: background despite its white colour
    palette.save(tmp_path / "pt.png", transparency=0)
    assert load_mask(tmp_path / "pt.png").tolist() == [[False, False, True], [True, False, False]]


# --------------------------------------------------------------------------- split lists


def test_read_split_tolerates_crlf_blank_lines_spaces_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbfa_001\r\n\r\n  b_002  \r\nbenign (3).png\t\r\n\n")
    assert read_split(path) == ["a_001", "b_002", "benign (3).png"]


def test_write_split_round_trips(tmp_path: Path) -> None:
    write_split(tmp_path / "x" / "y.txt", ["b", "a"])
    assert (tmp_path / "x" / "y.txt").read_bytes() == b"b\na\n"
    assert read_split(tmp_path / "x" / "y.txt") == ["b", "a"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"), ("caf\xe9\n".encode("latin-1"), "not a UTF-8")],
)
def test_split_that_is_not_text_raises_data_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        read_split(path)
    assert "train.txt" in str(info.value)


def test_missing_split_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"gone\.txt: split file does not exist"):
        read_split(tmp_path / "gone.txt")


# --------------------------------------------------------------------------- hashing


def test_pixel_md5_hashes_decoded_rgb_bytes(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT] * 3, axis=2)
    assert pixel_md5(rgb) == hashlib.md5(rgb.tobytes()).hexdigest()
    # a gray PNG and its RGB twin are the same image
    gray = load_image(_save(tmp_path / "g.png", GRADIENT))
    colour = load_image(_save(tmp_path / "c.png", rgb))
    assert pixel_md5(gray) == pixel_md5(colour)


def test_dhash_is_stable_under_resizing_and_separates_other_images() -> None:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (120, 160), dtype=np.uint8), (0, 0), 6)
    rgb = np.stack([base] * 3, axis=2)
    bigger = cv2.resize(rgb, (200, 150), interpolation=cv2.INTER_LINEAR)
    other = np.stack([cv2.GaussianBlur(rng.integers(0, 255, (120, 160), dtype=np.uint8), (0, 0), 6)] * 3, axis=2)
    hashes = np.stack([dhash256(rgb), dhash256(bigger), dhash256(other)])
    assert hashes.shape == (3, 256) and hashes.dtype == bool
    distance = hamming_matrix(hashes)
    assert distance[0, 0] == 0 and distance[0, 1] <= 12 < distance[0, 2]
    assert distance[0, 2] == int((hashes[0] != hashes[2]).sum())
    assert len(dhash_hex(hashes[0])) == 64


def test_duplicate_groups_and_pairs_follow_the_shared_conventions() -> None:
    ids = ["c_1", "a_1", "b_1", "a_2"]
    digests = ["x", "y", "x", "z"]
    assert exact_duplicate_groups(ids, digests) == {"b_1": "dup1", "c_1": "dup1"}
    bits = np.zeros((4, 256), bool)
    bits[1, :20] = True  # a_1 is far from everything
    pairs = near_duplicate_pairs(ids, list(bits), digests)
    assert [(p["id_a"], p["id_b"]) for p in pairs] == [("a_2", "b_1"), ("a_2", "c_1"), ("b_1", "c_1")]
    assert [p["same_pixels"] for p in pairs] == [0, 0, 1]
    rows = [{"id": "a", "pixel_md5": "1"}, {"id": "b", "pixel_md5": "1"}, {"id": "c", "pixel_md5": "2"}]
    assert groups_from_metadata(rows) == {"a": "dup1", "b": "dup1"}


@pytest.mark.realdata
def test_hashes_reproduce_the_shared_busi_metadata(busi_dir: Path) -> None:
    with (busi_dir / "metadata.csv").open(newline="") as handle:
        meta = {r["id"]: r for r in csv.DictReader(handle)}
    with (busi_dir / "near_duplicate_candidates.csv").open(newline="") as handle:
        pairs = list(csv.DictReader(handle))
    chosen = [p for p in pairs if p["id_a"] in ("benign_003", "benign_004", "benign_399")]
    assert chosen
    for pair in chosen:
        a, b = (load_image(busi_dir / "images" / f"{pair[k]}.png") for k in ("id_a", "id_b"))
        assert int((dhash256(a) != dhash256(b)).sum()) == int(pair["dhash256_hamming"])
        assert pixel_md5(a) == meta[pair["id_a"]]["pixel_md5"]
    colour = load_image(busi_dir / "images" / "benign_006.png")  # stored RGB
    assert pixel_md5(colour) == meta["benign_006"]["pixel_md5"]
