"""Tiny real checkpoints and a deterministic stand-in network for the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rabusseg.checkpoint import save_checkpoint
from rabusseg.config import Config, ModelConfig

TINY = {"aspp_channels": 16, "decoder_channels": 16, "low_level_channels": 8, "proj_channels": 8}


def tiny_config(encoder: str = "mobilenet_v2", output_stride: int = 16) -> Config:
    return Config(model=ModelConfig(encoder=encoder, output_stride=output_stride, **TINY))


def save_tiny_checkpoint(path: Path, encoder: str = "mobilenet_v2", *, seed: int = 0, teacher: bool = False) -> Path:
    """A freshly initialised tiny network saved the way the trainer saves one."""
    from rabusseg.models import build_model

    config = tiny_config(encoder)
    torch.manual_seed(seed)
    student = build_model(config.model)
    torch.manual_seed(seed + 1)
    teacher_state = build_model(config.model).state_dict() if teacher else None
    payload = {"config": config.to_dict(), "student": student.state_dict(), "teacher": teacher_state,
               "inference_weights": "teacher" if teacher else "student", "step": 0, "epoch": 0}
    return save_checkpoint(payload, path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


class BrightnessNet(nn.Module):
    """Lesion logit = 5 x the normalised red channel: black is certain background, white certain
    lesion, and mid-grey (the ImageNet red mean, 124) a coin flip.  Full-resolution output."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(5.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = self.gain * x[:, :1]
        return torch.cat([torch.zeros_like(lesion), lesion], dim=1)  # (B, 2, H, W)
