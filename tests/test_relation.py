"""ARP and CRA relation functions against naive reference implementations written from METHOD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rabusseg.models.relation import (
    adjacent_propagation,
    adjacent_weights,
    choose_landmark_path,
    cross_layer_alignment_loss,
    first_landmarks,
    global_affinity,
    select_landmarks,
    select_landmarks_from_features,
)


def naive_propagation(features: torch.Tensor, logits: torch.Tensor, k: int) -> torch.Tensor:
    """Loop over pixels and neighbours; a neighbour outside the map has affinity 0 and logit 0."""
    b, c, h, w = features.shape
    out = torch.zeros_like(logits)
    r = k // 2
    for n in range(b):
        for y in range(h):
            for x in range(w):
                aff, vals = [], []
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            aff.append(float(features[n, :, y, x] @ features[n, :, yy, xx]) / math.sqrt(c))
                            vals.append(logits[n, :, yy, xx])
                        else:
                            aff.append(0.0)
                            vals.append(torch.zeros_like(logits[n, :, 0, 0]))
                weights = torch.tensor(aff, dtype=logits.dtype).softmax(0)
                out[n, :, y, x] = sum(wt * v for wt, v in zip(weights, vals))
    return out


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_adjacent_propagation_matches_naive_loop(kernel_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    got = adjacent_propagation(features, logits, kernel_size)
    torch.testing.assert_close(got, naive_propagation(features, logits, kernel_size))


def test_adjacent_weights_sum_to_one_and_constant_logits_survive_inside() -> None:
    features = torch.randn(2, 16, 9, 11, generator=torch.Generator().manual_seed(1))
    weights = adjacent_weights(features)
    assert weights.shape == (2, 9, 9, 11)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 9, 11))
    assert (weights > 0).all()
    out = adjacent_propagation(features, torch.full((2, 2, 9, 11), 3.0))
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full((2, 2, 7, 9), 3.0))
    assert (out[..., 0, :] < 3.0).all()  # border pixels average in padded zeros


def test_adjacent_propagation_runs_in_float32_for_bf16_inputs() -> None:
    g = torch.Generator().manual_seed(14)
    features, logits = torch.randn(1, 32, 6, 6, generator=g).bfloat16(), torch.randn(1, 2, 6, 6, generator=g).bfloat16()
    out = adjacent_propagation(features, logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, adjacent_propagation(features.float(), logits.float()))


def test_adjacent_propagation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        adjacent_propagation(torch.zeros(1, 4, 5, 5), torch.zeros(1, 2, 5, 5), kernel_size=2)
    with pytest.raises(ValueError, match="share"):
        adjacent_propagation(torch.zeros(1, 4, 5, 5), torch.zeros(1, 2, 4, 5))


def test_global_affinity_is_scaled_gram_matrix() -> None:
    f = torch.randn(2, 256, 6, 5, generator=torch.Generator().manual_seed(2)).relu()
    a = global_affinity(f)
    flat = f.flatten(2).double()  # (B, C, N)
    ref = (flat.transpose(1, 2) @ flat / 16.0).float()  # (B, N, N)
    assert a.shape == (2, 30, 30) and a.dtype == torch.float32
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-5)


def naive_select(affinity: torch.Tensor, first: torch.Tensor, m: int) -> torch.Tensor:
    """Per image, per step: S = running row sum, R = max_k S_k, take the unchosen pixel of
    smallest R scanning pixels in order (so the lowest index wins ties)."""
    result = []
    for b in range(affinity.shape[0]):
        chosen = [int(first[b])]
        running = affinity[b, chosen[0]].clone()
        worst = running.clone()
        while len(chosen) < m:
            best_i, best_v = -1, math.inf
            for i in range(affinity.shape[1]):
                if i not in chosen and float(worst[i]) < best_v:
                    best_i, best_v = i, float(worst[i])
            chosen.append(best_i)
            running = running + affinity[b, best_i]
            worst = torch.maximum(worst, running)
        result.append(chosen)
    return torch.tensor(result)


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_select_landmarks_matches_naive_loop(kind: str) -> None:
    g = torch.Generator().manual_seed(3)
    if kind == "continuous":
        affinity = torch.randn(3, 60, 60, generator=g)
    else:  # small integers: many exact ties, resolved by the lowest index
        affinity = torch.randint(0, 3, (3, 60, 60), generator=g).float()
    first = torch.tensor([0, 17, 59])
    got = select_landmarks(affinity, first, 15)
    assert got.shape == (3, 15) and got.dtype == torch.long
    assert torch.equal(got, naive_select(affinity, first, 15))
    assert torch.equal(got[:, 0], first)
    assert all(len(set(row.tolist())) == 15 for row in got)


def test_select_landmarks_can_take_every_pixel() -> None:
    affinity = torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(4))
    got = select_landmarks(affinity, torch.tensor([3, 9]), 10)
    assert all(sorted(row.tolist()) == list(range(10)) for row in got)


def test_select_landmarks_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_landmarks"):
        select_landmarks(torch.zeros(1, 4, 4), torch.tensor([0]), 5)
    with pytest.raises(ValueError, match="first"):
        select_landmarks(torch.zeros(2, 4, 4), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="first"):
        select_landmarks(torch.zeros(1, 4, 4), torch.tensor([0.0]), 2)


def realistic_features(b: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Post-ReLU, low-rank plus noise, with a block of identical vectors (a zero-padded image
    corner gives exactly that), so exact ties between pixels occur."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(b, c, 8, generator=g)
    coeff = torch.randn(b, 8, h * w, generator=g)
    f = (basis @ coeff).view(b, c, h, w) + 0.1 * torch.randn(b, c, h, w, generator=g)  # (B, C, h, w)
    f[:, :, h // 2 :, w // 2 :] = f[:, :, -1:, -1:]  # bottom-right quarter: one repeated vector
    return (f * torch.logspace(-2, 1, b).view(b, 1, 1, 1)).relu()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_only_selection_identical_to_full_affinity(seed: int) -> None:
    f = realistic_features(3, 256, 20, 24, seed)
    first = torch.tensor([0, 479, 250])
    full = select_landmarks(global_affinity(f), first, 64)
    rows = select_landmarks_from_features(f, first, 64)
    assert torch.equal(full, rows)
    assert torch.equal(rows[:, 0], first)


def test_rows_only_selection_identical_under_rounding_order_ties() -> None:
    # Every pixel is a permutation of one vector and the first landmark is constant: all of its
    # affinities are equal in exact arithmetic but round differently depending on the order a
    # float32 matmul adds them in (plain float32 full vs per-row selections disagree on most such
    # images).  The fixed-point computation keeps the tie exact, so the lowest index wins.
    g = torch.Generator().manual_seed(13)
    b, c, n = 2, 256, 256
    v = torch.randn(b, c, generator=g).exp()  # (B, C), magnitudes over a wide range
    perm = torch.argsort(torch.rand(b, n, c, generator=g), dim=2)  # (B, N, C)
    pixels = torch.gather(v[:, None, :].expand(b, n, c), 2, perm)  # (B, N, C)
    pixels[:, 0] = 1.0
    f = pixels.transpose(1, 2).reshape(b, c, 16, 16)  # (B, C, h, w)
    first = torch.tensor([0, 0])
    full = select_landmarks(global_affinity(f), first, 32)
    assert torch.equal(full, select_landmarks_from_features(f, first, 32))
    assert full[:, 1].tolist() == [1, 1]


def test_rows_only_selection_identical_on_odd_widths() -> None:
    f = torch.randn(2, 37, 9, 13, generator=torch.Generator().manual_seed(5))
    first = torch.tensor([5, 100])
    assert torch.equal(select_landmarks(global_affinity(f), first, 30), select_landmarks_from_features(f, first, 30))


def test_auto_landmark_path_is_rows() -> None:
    assert choose_landmark_path(64, 64, "cpu") == "rows"


def test_first_landmarks_picks_lesion_pixels_uniformly() -> None:
    labels = torch.zeros(4000, 4, 5, dtype=torch.long)
    lesion = [(0, 1), (2, 2), (3, 0), (3, 4)]
    for y, x in lesion:
        labels[:, y, x] = 1
    labels[:, 1, 1] = 255  # ignore is not lesion
    idx = first_landmarks(labels, generator=torch.Generator().manual_seed(6))
    assert idx.shape == (4000,)
    counts = torch.bincount(idx, minlength=20)
    wanted = [y * 5 + x for y, x in lesion]
    assert counts.sum() == counts[wanted].sum()
    assert (counts[wanted] > 850).all() and (counts[wanted] < 1150).all()  # 1000 expected each


def test_first_landmarks_falls_back_to_any_pixel_and_is_reproducible() -> None:
    labels = torch.zeros(3000, 3, 3, dtype=torch.long)
    labels[:, 0, 0] = 255
    idx = first_landmarks(labels, generator=torch.Generator().manual_seed(7))
    assert torch.bincount(idx, minlength=9).min() > 250  # every pixel, about 333 each
    again = first_landmarks(labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(idx, again)
    mixed = torch.zeros(2, 3, 3, dtype=torch.long)
    mixed[1, 2, 1] = 1
    assert int(first_landmarks(mixed)[1]) == 7


# ---------------------------------------------------------------------------------- CRA


def naive_cra(features: list[torch.Tensor], landmarks: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """METHOD steps 3-5 written out per image and per landmark; a ``temperature`` makes it cosine / temperature."""
    h, w = features[3].shape[-2:]
    kls = []
    log_ps = []
    for level, x in enumerate(features):
        hh, ww = x.shape[-2:]
        f = 2 if level == 0 else 1
        per_image = []
        for b in range(x.shape[0]):
            pixels = F.interpolate(x[b : b + 1], size=(h, w), mode="bilinear", align_corners=True)[0]
            anchors = torch.stack(
                [x[b, :, min(f * (int(l) // w), hh - 1), min(f * (int(l) % w), ww - 1)] for l in landmarks[b]], dim=1
            )  # (C, M)
            pixels = pixels.flatten(1)  # (C, N)
            if temperature is None:
                logits = pixels.T @ anchors
            else:
                cosines = [[torch.dot(pixels[:, i], anchors[:, n]) / (pixels[:, i].norm() * anchors[:, n].norm())
                            for n in range(anchors.shape[1])] for i in range(pixels.shape[1])]  # fmt: skip
                logits = torch.tensor(cosines) / temperature
            per_image.append(torch.log_softmax(logits, dim=1))  # (N, M)
        log_ps.append(torch.stack(per_image))
    for shallow, deep in zip(log_ps[:3], log_ps[1:]):
        kls.append(F.kl_div(shallow, deep, reduction="none", log_target=True).mean())  # KL(deep || shallow)
    return torch.stack(kls).mean()


def cra_inputs(seed: int, requires_grad: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 8, 11, 13), (2, 12, 6, 7), (2, 16, 6, 7), (2, 20, 6, 7)]
    feats = [(0.3 * torch.randn(*s, generator=g)).requires_grad_(requires_grad) for s in shapes]
    landmarks = torch.stack([torch.randperm(42, generator=g)[:9] for _ in range(2)])  # (B, M)
    return feats, landmarks


def test_cra_matches_naive_reference_and_is_positive() -> None:
    feats, landmarks = cra_inputs(8)
    loss = cross_layer_alignment_loss(feats, landmarks)
    assert loss.ndim == 0 and loss > 0
    torch.testing.assert_close(loss, naive_cra(feats, landmarks))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_cra_cosine_matches_naive_reference(temperature: float) -> None:
    feats, landmarks = cra_inputs(13)
    loss = cross_layer_alignment_loss(feats, landmarks, similarity="cosine", temperature=temperature)
    torch.testing.assert_close(loss, naive_cra(feats, landmarks, temperature=temperature))
    assert not torch.allclose(loss, cross_layer_alignment_loss(feats, landmarks))


def test_cra_cosine_ignores_each_layers_scale_and_dot_does_not() -> None:
    """Why the option exists: a raw dot product sharpens with the activations' size (x4's 1280
    channels made P_4 one-hot); cosine gives every layer the same scale."""
    feats, landmarks = cra_inputs(14)
    scaled = [f * s for f, s in zip(feats, (0.5, 3.0, 1.0, 40.0))]
    cosine = cross_layer_alignment_loss(feats, landmarks, similarity="cosine")
    torch.testing.assert_close(cross_layer_alignment_loss(scaled, landmarks, similarity="cosine"), cosine)
    dot, dot_scaled = cross_layer_alignment_loss(feats, landmarks), cross_layer_alignment_loss(scaled, landmarks)
    assert not torch.allclose(dot_scaled, dot)
    with pytest.raises(ValueError, match="similarity"):
        cross_layer_alignment_loss(feats, landmarks, similarity="l2")  # type: ignore[arg-type]


def test_cra_kl_direction_deeper_layer_is_the_target() -> None:
    feats, landmarks = cra_inputs(9)
    loss = cross_layer_alignment_loss(feats, landmarks)
    log_ps = []
    for x in feats:  # same per-layer distributions, KL taken the other way round
        pix = F.interpolate(x, size=(6, 7), mode="bilinear", align_corners=True).flatten(2)
        f = 2 if x.shape[-1] == 13 else 1
        idx = (landmarks // 7 * f).clamp_max(x.shape[-2] - 1) * x.shape[-1] + (landmarks % 7 * f).clamp_max(x.shape[-1] - 1)
        anchors = x.flatten(2).gather(2, idx.unsqueeze(1).expand(-1, x.shape[1], -1))
        log_ps.append(torch.log_softmax(pix.transpose(1, 2) @ anchors, dim=2))
    reverse = torch.stack(
        [F.kl_div(d, s, reduction="none", log_target=True).mean() for s, d in zip(log_ps[:3], log_ps[1:])]
    )
    assert not torch.allclose(loss, reverse.mean())


def test_cra_is_zero_for_identical_landmark_distributions() -> None:
    # Features linear in the pixel coordinates: x1 on an 11 x 11 grid (2h - 1) with half the
    # slope, so bilinear resizing to 6 x 6 (align_corners=True) and sampling at (2r, 2c) both give
    # exactly the x4 features.  x2 pads zero channels, x3 permutes channels: same dot products.
    g = torch.Generator().manual_seed(10)
    a, by, bx = (0.3 * torch.randn(2, 5, 1, 1, generator=g) for _ in range(3))
    ys, xs = torch.arange(6.0).view(1, 1, 6, 1), torch.arange(6.0).view(1, 1, 1, 6)
    base = a + by * ys + bx * xs  # (B, 5, 6, 6)
    ys1, xs1 = torch.arange(11.0).view(1, 1, 11, 1) / 2, torch.arange(11.0).view(1, 1, 1, 11) / 2
    x1 = a + by * ys1 + bx * xs1  # (B, 5, 11, 11)
    x2 = torch.cat([base, torch.zeros(2, 3, 6, 6)], dim=1)
    x3 = base[:, torch.tensor([4, 2, 0, 1, 3])]
    landmarks = torch.stack([torch.randperm(36, generator=g)[:10] for _ in range(2)])
    loss = cross_layer_alignment_loss([x1, x2, x3, base], landmarks)
    assert abs(float(loss)) < 1e-6
    noisy = base + 0.3 * torch.randn(base.shape, generator=g)
    assert float(cross_layer_alignment_loss([x1, x2, x3, noisy], landmarks)) > 1e-3


@pytest.mark.parametrize("output_stride", [8, 16])
def test_cra_gradient_reaches_landmark_features_only_below_x4(output_stride: int) -> None:
    g = torch.Generator().manual_seed(11)
    if output_stride == 8:
        shapes = [(2, 4, 12, 14), (2, 5, 6, 7), (2, 6, 6, 7), (2, 7, 6, 7)]
        factors = [2, 1, 1]
    else:
        shapes = [(2, 4, 24, 28), (2, 5, 12, 14), (2, 6, 6, 7), (2, 7, 6, 7)]
        factors = [4, 2, 1]
    feats = [torch.randn(*s, generator=g).requires_grad_(True) for s in shapes]
    landmarks = torch.stack([torch.randperm(42, generator=g)[:8] for _ in range(2)])
    cross_layer_alignment_loss(feats, landmarks).backward()
    for x, f in zip(feats[:3], factors):
        touched = x.grad.abs().sum(dim=1) > 0  # (B, H, W)
        expected = torch.zeros_like(touched)
        for b in range(2):
            for l in landmarks[b].tolist():
                expected[b, f * (l // 7), f * (l % 7)] = True
        assert torch.equal(touched, expected)  # landmark cells only: pixel features are detached
    assert (feats[3].grad.abs().sum(dim=1) > 0).float().mean() > 0.9


def test_cra_landmarks_clamped_on_odd_sizes() -> None:
    # x1 of 17 x 17 against a 9 x 9 x4 grid (deep stem on a 64 px input): row 8 -> 16 fits,
    # and a 15 x 15 x1 clamps row 16 to 14.
    for size in (17, 15):
        feats = [torch.randn(1, 3, size, size, requires_grad=True)] + [torch.randn(1, 3, 9, 9) for _ in range(3)]
        cross_layer_alignment_loss(feats, torch.tensor([[80, 0, 40]])).backward()
        assert feats[0].grad[0, :, min(16, size - 1), min(16, size - 1)].abs().sum() > 0


def test_cra_computes_in_float32_under_bf16_inputs() -> None:
    feats, landmarks = cra_inputs(12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cross_layer_alignment_loss([f.bfloat16() for f in feats], landmarks)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, cross_layer_alignment_loss([f.bfloat16().float() for f in feats], landmarks))
