"""An RA-BUSSeg training step written the plain way, as a yardstick for the product's step.

Written from ``METHOD.md`` alone, in the style of the research code the method comes from:
float32, eager, contiguous tensors, oneDNN's own dilated convolutions, the U2PL-style entropy
percentile computed with numpy on the host, and CRA's landmarks chosen image by image with a
Python loop that reads every argmin back to the host (63 device-to-host reads per image).  The
network, optimiser and loss definitions are the same as the product's; only the way the step
is computed differs, so the time ratio measures the engineering, not a different method.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class NaiveStep:
    """One RA-BUSSeg step (after warm-up) on a fixed labelled + unlabelled batch."""

    def __init__(self, preset: str, size: int, batch: int, seed: int = 0) -> None:
        from rabusseg.config import load_config
        from rabusseg.models import build_model

        self.cfg = load_config(preset, ["model.encoder_weights=null", "model.dilated_rewrites=false"])
        torch.manual_seed(seed)
        self.student = build_model(self.cfg.model)
        self.teacher = copy.deepcopy(self.student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        o = self.cfg.optim
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        lesion = ((yy - size / 2) / (0.25 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 <= 1
        self.img_x = torch.randn(batch, 3, size, size, generator=g)
        self.mask_x = lesion.long().expand(batch, size, size).clone()
        self.img_u = torch.randn(batch, 3, size, size, generator=g)
        self.size = size

    def __call__(self) -> float:
        """Run one step; returns the total loss (read on the host, as the research loops print it)."""
        m, lw = self.cfg.method, self.cfg.loss
        self.student.train()
        with torch.no_grad():
            logits_u = self.teacher(self.img_u).pred
            logits_u = F.interpolate(logits_u, size=(self.size, self.size), mode="bilinear", align_corners=True)
            prob_u = torch.softmax(logits_u, dim=1)
            label_u = torch.argmax(prob_u, dim=1)
            entropy = -torch.sum(prob_u * torch.log(prob_u + 1e-10), dim=1)
            thresh = np.percentile(entropy.cpu().numpy().flatten(), 100 - 20.0)  # 20% dropped, first epoch
            label_u = label_u.clone()
            label_u[entropy >= torch.tensor(thresh)] = 255
        out = self.student(torch.cat([self.img_x, self.img_u]), relations=True)
        n = self.img_x.shape[0]
        pred = F.interpolate(out.pred, size=(self.size, self.size), mode="bilinear", align_corners=True)
        arp = F.interpolate(out.arp_pred, size=(self.size, self.size), mode="bilinear", align_corners=True)
        labels = torch.cat([self.mask_x, label_u])
        sup = _ohem(pred[:n], self.mask_x, lw.ohem_threshold, lw.ohem_min_kept)
        valid = (label_u != 255).sum().item()
        unsup = F.cross_entropy(pred[n:], label_u, ignore_index=255) * label_u.numel() / max(valid, 1)
        arp_loss = F.cross_entropy(arp, labels, ignore_index=255)
        cra = _cra_per_image(out.features, out.proj, labels, m.num_landmarks)
        loss = sup + lw.unsup_weight * unsup + lw.arp_weight * arp_loss + lw.cra_weight * cra
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
                t.data = 0.99 * t.data + 0.01 * s.data
            for t, s in zip(self.teacher.buffers(), self.student.buffers(), strict=True):
                t.data = s.data.clone()
        return loss.item()


def _ohem(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """OHEM cross-entropy the research-code way: sort the true-class probabilities on the host's orders."""
    prob = F.softmax(logits, dim=1)
    valid = target != 255
    tgt = target.clone()
    tgt[~valid] = 0
    true_prob = prob.gather(1, tgt.unsqueeze(1)).squeeze(1)[valid]
    threshold = thresh
    if min_kept > 0 and true_prob.numel() > 0:
        k = min(min_kept, true_prob.numel()) - 1
        sorted_prob, _ = torch.sort(true_prob)
        threshold = max(thresh, sorted_prob[k].item())
    keep = valid & (prob.gather(1, tgt.unsqueeze(1)).squeeze(1) <= threshold)
    tgt_kept = target.clone()
    tgt_kept[~keep] = 255
    return F.cross_entropy(logits, tgt_kept, ignore_index=255)


def _cra_per_image(features: Any, proj: torch.Tensor, labels: torch.Tensor, num_landmarks: int) -> torch.Tensor:
    """CRA (METHOD section 2) image by image: full affinity, greedy landmarks with host reads."""
    x1, x2, x3, x4 = features
    b, c, h, w = proj.shape
    grid = F.interpolate(labels.unsqueeze(1).float(), size=(h, w), mode="nearest").squeeze(1).long()
    losses = []
    for i in range(b):
        f = proj[i].detach().flatten(1)  # (C, N)
        affinity = f.t() @ f / math.sqrt(c)  # (N, N)
        lesion = torch.nonzero((grid[i].flatten() != 0) & (grid[i].flatten() != 255)).flatten()
        pool = lesion if lesion.numel() > 0 else torch.arange(h * w)
        chosen = [int(pool[torch.randint(0, pool.numel(), (1,))].item())]
        running = affinity[chosen[0]].clone()
        worst = running.clone()
        for _ in range(1, min(num_landmarks, h * w)):
            masked = worst.clone()
            masked[chosen] = float("inf")
            nxt = int(torch.argmin(masked).item())
            chosen.append(nxt)
            running = running + affinity[nxt]
            worst = torch.maximum(worst, running)
        idx = torch.tensor(chosen)
        rows, cols = idx // w, idx % w
        log_probs = []
        for level, x in enumerate((x1[i], x2[i], x3[i], x4[i])):
            pixels = x if level == 3 else F.interpolate(x.detach()[None], size=(h, w), mode="bilinear",
                                                        align_corners=True)[0]  # fmt: skip
            fy, fx = max(1, round(x.shape[1] / h)), max(1, round(x.shape[2] / w))
            anchors = x[:, (rows * fy).clamp(max=x.shape[1] - 1), (cols * fx).clamp(max=x.shape[2] - 1)]  # (C, M)
            logits = pixels.flatten(1).t() @ anchors  # (N, M)
            log_probs.append(F.log_softmax(logits, dim=1))
        kl = [(log_probs[k + 1].exp() * (log_probs[k + 1] - log_probs[k])).mean() for k in range(3)]
        losses.append(sum(kl) / 3)
    return sum(losses) / b
