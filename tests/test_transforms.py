"""Albumentations pipelines: crop and padding values, alignment under scale and flip, eval resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rabusseg.data.transforms import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_strong_transform,
    build_train_transform,
    normalize_image,
    reseed,
)

PAD_VALUE = torch.tensor([(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)


def _blob_pair(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric mask and an image whose intensity encodes it (200 inside, 60 outside)."""
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - h * 0.4) ** 2 / (h * 0.2) ** 2 + (xx - w * 0.3) ** 2 / (w * 0.15) ** 2) < 1
    mask |= (yy > h * 0.7) & (xx > w * 0.6) & (xx < w * 0.9)
    image = np.where(mask, 200, 60).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), mask.astype(np.uint8)


def test_normalize_image_uses_imagenet_statistics() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[0, 0] = 255
    out = normalize_image(image)
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32
    assert torch.allclose(out[:, 1:, :], PAD_VALUE.expand(3, 3, 5))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(out[:, 0, 0], expected)
    with pytest.raises(ValueError, match="uint8"):
        normalize_image(image.astype(np.float32))


def test_small_image_is_padded_with_zero_and_ignore_label() -> None:
    image, mask = _blob_pair(40, 50)
    transform = build_train_transform(64, scale_range=(1.0, 1.0))
    for seed in range(5):
        reseed(transform, seed)
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
        padded = out["mask"] == IGNORE_INDEX
        assert padded.sum() == 64 * 64 - 40 * 50
        assert (out["image"][padded] == 0).all() and (out["image"][~padded] > 0).all()
        tensor = normalize_image(out["image"])
        pad = torch.from_numpy(padded)
        assert torch.allclose(tensor[:, pad], PAD_VALUE.view(3, 1).expand(3, int(pad.sum())))
        assert set(np.unique(out["mask"])) <= {0, 1, IGNORE_INDEX}


def test_scale_and_flip_keep_image_and_mask_aligned() -> None:
    image, mask = _blob_pair()
    transform = build_train_transform(72, scale_range=(0.5, 2.0))
    flipped_seen = scales_seen = 0
    for seed in range(30):
        reseed(transform, seed)
        out = transform(image=image, mask=mask)
        valid = out["mask"] != IGNORE_INDEX
        bright = out["image"][..., 0] > 130
        agree = (bright == (out["mask"] == 1))[valid].mean()
        assert agree > 0.97, f"seed {seed}: image and mask disagree on {1 - agree:.1%} of pixels"
        scales_seen += int(valid.sum() != valid.size)  # small scales leave padding
    assert scales_seen > 3
    # Flip only (scale 1, crop = image): the output is the input or its exact mirror, about half each.
    flip_only = build_train_transform(60, scale_range=(1.0, 1.0))
    square_img, square_mask = _blob_pair(60, 60)
    for seed in range(20):
        reseed(flip_only, seed)
        out = flip_only(image=square_img, mask=square_mask)
        flipped = np.array_equal(out["mask"], square_mask[:, ::-1])
        assert flipped or np.array_equal(out["mask"], square_mask)
        assert np.array_equal(out["image"][..., 0] > 130, out["mask"] == 1)
        flipped_seen += int(flipped)
    assert 3 <= flipped_seen <= 17


def test_scale_range_and_resize_are_honoured() -> None:
    image, mask = _blob_pair(40, 60)
    half = build_train_transform(64, scale_range=(0.5, 0.5))
    out = half(image=image, mask=mask)
    assert int((out["mask"] != IGNORE_INDEX).sum()) == 20 * 30
    double = build_train_transform(64, scale_range=(2.0, 2.0))
    assert (double(image=image, mask=mask)["mask"] != IGNORE_INDEX).all()
    resized = build_train_transform(64, scale_range=(1.0, 1.0), resize_to=30)  # 40x60 -> 20x30
    assert int((resized(image=image, mask=mask)["mask"] != IGNORE_INDEX).sum()) == 20 * 30
    with pytest.raises(ValueError, match="scale_range"):
        build_train_transform(64, scale_range=(2.0, 1.0))


def test_reseed_is_deterministic_and_gives_each_transform_its_own_stream() -> None:
    image, mask = _blob_pair()
    transform = build_train_transform(48)
    reseed(transform, 11)
    a = transform(image=image, mask=mask)
    reseed(transform, 11)
    b = transform(image=image, mask=mask)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    reseed(transform, 11)
    firsts = [t.py_random.random() for t in transform.transforms]
    assert len(set(firsts)) == len(firsts)  # Compose(seed=...) would give them all the same stream


def test_strong_view_changes_intensity_only() -> None:
    image, _ = _blob_pair()
    strong = build_strong_transform(blur_p=0.0)
    changed = 0
    for seed in range(10):
        reseed(strong, seed)
        out = strong(image=image)["image"]
        assert out.shape == image.shape and out.dtype == np.uint8
        changed += int(not np.array_equal(out, image))
        # No geometry: the brightest pixels stay inside the lesion (jitter is monotone per image).
        if out.std() > 0:
            assert (out[..., 0][image[..., 0] == 200].mean()) >= out[..., 0][image[..., 0] == 60].mean()
    assert changed >= 5


def test_eval_transform_resizes_to_a_fixed_square() -> None:
    image, _ = _blob_pair(50, 70)
    transform = build_eval_transform(32)
    assert transform is not None and transform(image=image)["image"].shape == (32, 32, 3)
    assert build_eval_transform(None) is None
    with pytest.raises(ValueError):
        build_eval_transform(0)
