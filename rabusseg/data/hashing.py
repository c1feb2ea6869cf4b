"""Duplicate detection: exact (decoded pixels) and near (perceptual dHash).

Conventions, reproduced from ``../shared/datasets/busi`` (``metadata.csv``: ``pixel_md5``,
``exact_duplicate_group``; ``near_duplicate_candidates.csv``: ``dhash256_hamming``):

* ``pixel_md5`` is the MD5 of the image decoded to ``uint8 (H, W, 3)`` RGB (:func:`load_image`),
  C order, no shape prefix. Hashing pixels, not file bytes, finds copies re-encoded differently
  (a grayscale PNG and its RGB original hash the same).
* Images sharing a ``pixel_md5`` form an exact-duplicate group named ``dup1``, ``dup2``, ... in the
  order of their first member's id; singletons get no group.
* ``dhash256``: Pillow ITU-R 601 luma (``convert("L")``), resized with Pillow's bilinear filter to
  17 x 16 (width x height), one bit per horizontal neighbour pair, set when the right pixel is
  brighter: 16 x 16 = 256 bits. Near-duplicate candidates are all pairs within Hamming distance 12
  (this reproduces the shared list's 90 BUSI pairs exactly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

DHASH_SIZE = 16
NEAR_DUPLICATE_MAX_DISTANCE = 12


def pixel_md5(image: np.ndarray) -> str:
    """MD5 hex digest of decoded RGB pixels (``uint8 (H, W, 3)``), the exact-duplicate key."""
    return hashlib.md5(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def dhash256(image: np.ndarray) -> np.ndarray:
    """256-bit difference hash of an RGB ``uint8`` image, as ``bool (256,)``.

    Robust to resizing, re-encoding and small intensity changes, so it finds re-exported copies
    of one scan that pixel hashing misses.
    """
    gray = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("L")
    small = np.asarray(gray.resize((DHASH_SIZE + 1, DHASH_SIZE), Image.Resampling.BILINEAR), dtype=np.int16)
    return (small[:, 1:] > small[:, :-1]).ravel()  # (16, 16) -> (256,)


def dhash_hex(bits: np.ndarray) -> str:
    """Hex text of a dHash bit vector (64 characters for 256 bits), for storing in a CSV."""
    return np.packbits(bits.astype(bool)).tobytes().hex()


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of ``(N, B)`` bit vectors, as ``int (N, N)``."""
    bits = np.asarray(hashes, dtype=np.float32)  # (N, B)
    return np.rint(bits @ (1.0 - bits).T + (1.0 - bits) @ bits.T).astype(np.int64)


def exact_duplicate_groups(ids: Sequence[str], digests: Sequence[str]) -> dict[str, str]:
    """Map each id that shares its pixel digest with another id to a group name ``dupK``."""
    by_digest: dict[str, list[str]] = {}
    for image_id, digest in sorted(zip(ids, digests)):
        by_digest.setdefault(digest, []).append(image_id)
    groups = sorted((members for members in by_digest.values() if len(members) > 1), key=lambda m: m[0])
    return {image_id: f"dup{k}" for k, members in enumerate(groups, start=1) for image_id in members}


def near_duplicate_pairs(
    ids: Sequence[str],
    hashes: Sequence[np.ndarray],
    digests: Sequence[str] | None = None,
    max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
) -> list[dict[str, object]]:
    """Pairs of ids whose dHash distance is ``<= max_distance``, sorted by ``(id_a, id_b)``.

    Rows carry ``id_a``, ``id_b``, ``dhash256_hamming`` and ``same_pixels`` (1 when the pixel
    digests are equal, when ``digests`` is given).
    """
    if len(ids) < 2:
        return []
    order = np.argsort(np.asarray(ids, dtype=object))
    sorted_ids = [ids[i] for i in order]
    distance = hamming_matrix(np.stack([hashes[i] for i in order]))  # (N, N)
    rows_a, rows_b = np.nonzero(np.triu(distance <= max_distance, k=1))
    pairs = []
    for a, b in zip(rows_a.tolist(), rows_b.tolist()):
        same = int(digests is not None and digests[order[a]] == digests[order[b]])
        pairs.append(
            {"id_a": sorted_ids[a], "id_b": sorted_ids[b], "dhash256_hamming": int(distance[a, b]), "same_pixels": same}
        )
    return pairs


def groups_from_metadata(rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """Exact-duplicate groups recorded in ``metadata.csv``: ``exact_duplicate_group``, else equal ``pixel_md5``.

    Splitting and checking read groups from the metadata instead of re-hashing every image, so
    they stay fast; datasets without either column are treated as duplicate-free.
    """
    groups = {row["id"]: row["exact_duplicate_group"] for row in rows if row.get("exact_duplicate_group")}
    if groups or not rows or "exact_duplicate_group" in rows[0]:
        return groups
    with_digest = [row for row in rows if row.get("pixel_md5")]
    return exact_duplicate_groups([r["id"] for r in with_digest], [r["pixel_md5"] for r in with_digest])
