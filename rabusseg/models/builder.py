"""One entry point from the typed config to a ready network."""

from __future__ import annotations

import logging

from rabusseg.config import ModelConfig
from rabusseg.models.conv import set_conv_rewrites
from rabusseg.models.deeplabv3plus import SegmentationModel
from rabusseg.models.encoders import get_encoder
from rabusseg.models.weights import load_encoder_weights

logger = logging.getLogger("rabusseg")


def build_model(cfg: ModelConfig) -> SegmentationModel:
    """Encoder (with ``cfg.encoder_weights`` loaded, if any) + DeepLabv3+ head, on the CPU.

    Raises ConfigError for a bad encoder name or weight reference and CheckpointError for a
    weight file that does not fit the encoder.  Move the model with ``.to(device)`` afterwards.
    """
    encoder = get_encoder(cfg.encoder, cfg.output_stride)
    if cfg.encoder_weights:
        load_encoder_weights(encoder, cfg.encoder_weights)
    else:
        logger.info("encoder %s starts from random initialisation (model.encoder_weights is not set)", cfg.encoder)
    model = SegmentationModel(
        encoder,
        cfg.num_classes,
        aspp_channels=cfg.aspp_channels,
        decoder_channels=cfg.decoder_channels,
        low_level_channels=cfg.low_level_channels,
        proj_channels=cfg.proj_channels,
        dropout=cfg.dropout,
        classifier_init_std=cfg.classifier_init_std,
        decoder_separable=cfg.decoder_separable,
    )
    set_conv_rewrites(model, cfg.dilated_rewrites)
    return model
