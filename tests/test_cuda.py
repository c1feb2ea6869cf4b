"""CUDA paths: bf16, torch.compile and channels-last parity, device-independent landmarks, an NCCL DDP step.

Every test here needs a CUDA device and skips with a message without one; ``benchmarks/gpu_check.sh``
runs them on a lent GPU.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch

from rabusseg.config import ModelConfig
from rabusseg.losses import ohem_cross_entropy
from rabusseg.models import build_model
from rabusseg.models.relation import global_affinity, select_landmarks, select_landmarks_from_features

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs these on a GPU)"),
]

SMALL = ModelConfig(encoder="resnet18", output_stride=8, aspp_channels=32, decoder_channels=32, low_level_channels=16,
                    proj_channels=32, dropout=0.0, classifier_init_std=0.3)  # fmt: skip


def _batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 128, 128, generator=g)
    labels = torch.zeros(4, 128, 128, dtype=torch.long)
    labels[:, 40:90, 30:100] = 1
    return x.to(device), labels.to(device)


def _fitted(device: torch.device) -> torch.nn.Module:
    """A small network fitted for 20 float32 steps (at initialisation the loss ignores the features)."""
    torch.manual_seed(0)
    model = build_model(SMALL).to(device).train()
    x, labels = _batch(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(20):
        optimizer.zero_grad()
        ohem_cross_entropy(model(x, relations=False).pred, labels).backward()
        optimizer.step()
    return model


def _loss_and_grad(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, bf16: bool) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        pred = model(x, relations=False).pred
    loss = ohem_cross_entropy(pred, labels)
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_bf16_loss_and_gradient_close_to_float32() -> None:
    """Tolerances as on CPU (test_precision.py): loss within 2%, whole-gradient cosine >= 0.8."""
    device = torch.device("cuda")
    model = _fitted(device)
    x, labels = _batch(device)
    loss32, g32 = _loss_and_grad(model, x, labels, bf16=False)
    loss16, g16 = _loss_and_grad(copy.deepcopy(model), x, labels, bf16=True)
    assert abs(loss16 - loss32) <= 0.02 * loss32
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) >= 0.8


def test_channels_last_gives_the_same_outputs() -> None:
    device = torch.device("cuda")
    model = _fitted(device).eval()
    x, _ = _batch(device)
    with torch.no_grad():
        plain = model(x).pred
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)).pred
    torch.testing.assert_close(last, plain, rtol=1e-3, atol=1e-3)


def test_compiled_model_gives_the_same_outputs() -> None:
    device = torch.device("cuda")
    model = _fitted(device).eval()
    x, _ = _batch(device)
    with torch.no_grad():
        eager = model(x).pred
        compiled = torch.compile(model)(x).pred
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)


def test_landmarks_identical_on_cuda_and_cpu() -> None:
    """Both landmark paths multiply exact fixed-point integers: the same indices on any device."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(4, 64, 16, 16, generator=g)
    first = torch.tensor([0, 17, 100, 255])
    cpu_rows = select_landmarks_from_features(features, first, 32)
    cuda_rows = select_landmarks_from_features(features.cuda(), first.cuda(), 32).cpu()
    cuda_full = select_landmarks(global_affinity(features.cuda()), first.cuda(), 32).cpu()
    assert torch.equal(cpu_rows, cuda_rows) and torch.equal(cpu_rows, cuda_full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-rank NCCL process group: SyncBatchNorm + DDP around the network, one step with the ARP loss."""
    import torch.distributed as dist

    from rabusseg.losses import arp_loss

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        device = torch.device("cuda:0")
        torch.manual_seed(0)
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model(SMALL)).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[0])
        x, labels = _batch(device)
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = ddp(x, relations=True)
        loss = ohem_cross_entropy(out.pred, labels) + 0.5 * arp_loss(out.arp_pred, labels)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
        flag = torch.ones(1, device=device)
        dist.all_reduce(flag)
        assert flag.item() == 1.0
    finally:
        dist.destroy_process_group()
