"""The typed result of a forward pass."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SegmentationOutput:
    """What :class:`~rabusseg.models.deeplabv3plus.SegmentationModel` returns.

    ``pred`` is always there.  The other fields are filled only when relations are computed
    (training mode by default) and are ``None`` otherwise, so inference costs a plain DeepLabv3+.
    """

    pred: Tensor
    """Main logits (B, K, H1, W1) at x1's resolution (about H/4 x W/4)."""
    arp_pred: Tensor | None = None
    """ARP logits ``corr_out`` (B, K, H1, W1): the detached ``pred`` propagated on the x4 grid."""
    features: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
    """Encoder maps x1..x4 (for the CRA loss)."""
    proj: Tensor | None = None
    """ARP projection f (B, P, h, w) on the x4 grid (for ARP and landmark selection)."""


def concat_outputs(parts: list[SegmentationOutput]) -> SegmentationOutput:
    """The outputs of several forward passes as if one batch had been forwarded (along dim 0)."""
    from torch import cat

    first = parts[0]

    def join(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else cat(values)

    features = None
    if first.features is not None:
        features = tuple(cat([p.features[i] for p in parts]) for i in range(4))  # type: ignore[index]
    return SegmentationOutput(pred=join("pred"), arp_pred=join("arp_pred"), features=features, proj=join("proj"))  # type: ignore[arg-type]
