"""DeepLabv3+ with RA-BUSSeg's ARP projection branch (METHOD section 1).

encoder -> ASPP on x4 -> decoder fusing x1 -> ``pred`` at x1's resolution (H/4).
In training, ``proj`` on x4 gives the features of the ARP propagation and of CRA's landmark
selection; at inference none of that is computed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from rabusseg.models.aspp import ASPP, conv_bn_relu, separable_conv_bn_relu
from rabusseg.models.autocast import no_autocast
from rabusseg.models.dropout import Dropout
from rabusseg.models.encoders.base import Encoder
from rabusseg.models.outputs import SegmentationOutput
from rabusseg.models.relation import adjacent_propagation
from rabusseg.models.resize import upsample_logits


class Decoder(nn.Module):
    """Fuse the ASPP output (upsampled to x1) with a 1x1 projection of x1, then classify.

    ``separable`` makes the two 3x3 fusing convolutions depthwise-separable: they run at x1's
    resolution (H/4), where they are the network's largest dense convolutions.
    """

    def __init__(
        self,
        aspp_channels: int,
        low_level_in: int,
        low_level_channels: int,
        channels: int,
        num_classes: int,
        dropout: float,
        separable: bool = False,
    ) -> None:
        super().__init__()
        fuse_conv = separable_conv_bn_relu if separable else conv_bn_relu
        self.low_level = conv_bn_relu(low_level_in, low_level_channels, 1)
        self.fuse = nn.Sequential(
            fuse_conv(aspp_channels + low_level_channels, channels, 3),
            Dropout(dropout),
            fuse_conv(channels, channels, 3),
            Dropout(dropout),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, context: Tensor, x1: Tensor) -> Tensor:
        low = self.low_level(x1)  # (B, low, H1, W1)
        context = upsample_logits(context, low.shape[-2:])  # (B, aspp, H1, W1)
        fused = self.fuse(torch.cat([context, low], dim=1))  # (B, ch, H1, W1)
        # The logits in float32 even under autocast: bf16 keeps 3 significant digits, too few for
        # the small logit differences the losses and the 0.5 threshold act on (a 64 -> K 1x1 conv: cheap).
        with no_autocast(fused.device):
            return self.classifier(fused.float())  # (B, K, H1, W1)


class SegmentationModel(nn.Module):
    """Encoder + ASPP + decoder + ARP projection; see :class:`SegmentationOutput` for the outputs.

    ``pred`` has x1's size: (ceil(H/4), ceil(W/4)) for the plain-stem encoders and MobileNetV2,
    H//4 + 1 on even sizes for the deep stem (its ceil-mode pool).  Losses and inference resize
    it to the label or image size with :func:`~rabusseg.models.upsample_logits`.
    """

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int = 2,
        *,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 256,
        proj_channels: int = 256,
        dropout: float = 0.1,
        classifier_init_std: float = 0.01,
        decoder_separable: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        for name, value in (
            ("aspp_channels", aspp_channels),
            ("decoder_channels", decoder_channels),
            ("low_level_channels", low_level_channels),
            ("proj_channels", proj_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c1, _, _, c4 = encoder.out_channels
        self.encoder = encoder
        self.num_classes = num_classes
        self.aspp = ASPP(c4, aspp_channels, encoder.output_stride, dropout)
        self.decoder = Decoder(aspp_channels, c1, low_level_channels, decoder_channels, num_classes, dropout,
                               decoder_separable)  # fmt: skip
        self.proj = nn.Sequential(conv_bn_relu(c4, proj_channels, 3), Dropout(dropout))
        self._init_head(classifier_init_std)

    def _init_head(self, classifier_init_std: float) -> None:
        for module in (self.aspp, self.decoder, self.proj):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        # He init with fan_out = num_classes gives the classifier std 1 and logits of std ~10: an
        # initial loss of ~2 instead of ln 2.  Small weights start near chance; measured on BUSI
        # (docs/choices.md) that trains far better, on tiny phantom lesions it learns slower.
        nn.init.normal_(self.decoder.classifier.weight, std=classifier_init_std)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the (possibly pretrained) encoder: one optimiser group."""
        return self.encoder.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """ASPP, decoder and projection parameters: the group ``optim.head_lr_multiplier`` scales."""
        for module in (self.aspp, self.decoder, self.proj):
            yield from module.parameters()

    def forward(self, x: Tensor, relations: bool | None = None) -> SegmentationOutput:
        """``relations`` (default: ``self.training``) adds ARP logits, features and projection."""
        x1, x2, x3, x4 = self.encoder(x)  # (B, C1, H1, W1) ... (B, C4, h, w)
        pred = self.decoder(self.aspp(x4), x1)  # (B, K, H1, W1)
        if not (self.training if relations is None else relations):
            return SegmentationOutput(pred=pred)
        proj = self.proj(x4)  # (B, P, h, w)
        pred_small = upsample_logits(pred.detach(), x4.shape[-2:])  # (B, K, h, w)
        corr = adjacent_propagation(proj, pred_small)  # (B, K, h, w)
        arp_pred = upsample_logits(corr, pred.shape[-2:])  # (B, K, H1, W1)
        return SegmentationOutput(pred=pred, arp_pred=arp_pred, features=(x1, x2, x3, x4), proj=proj)
