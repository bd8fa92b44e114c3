"""A small MNIST classifier whose penultimate layer gives features for a domain-specific
"MNIST FID" (the Fréchet distance of Heusel et al. 2017, with this network in place of
Inception, which sees MNIST digits far from its training domain).

Network (LeNet-style, 131k parameters, shipped in fp16 at ``coopnets/assets/mnist_classifier.pt``):
  conv3x3(1->32)-BN-ReLU-maxpool  28->14
  conv3x3(32->64)-BN-ReLU-maxpool 14->7
  conv3x3(64->64)-BN-ReLU-maxpool 7->3
  linear(576->128)-ReLU           <- features (128-D)
  linear(128->10)                 <- logits
Input: (N, 1, 28, 28) in [-1, 1]. ``mnist_features`` accepts uint8 or float in [0, 1]
(N, C, H, W): RGB is averaged to grey, other sizes are resized to 28x28 (bilinear,
align_corners=False, antialias=True).

Trained once by ``benchmarks/train_mnist_classifier.py`` on MNIST's 60,000 training images;
the test accuracy is stored in the file's ``meta`` and in docs/results.md.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .features import reference_stats, run_batched
from .fid import feature_stats, fid_from_stats

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "mnist_classifier.pt"
FEATURE_DIM = 128
_MODELS: dict = {}


class MnistNet(nn.Module):
    """LeNet-style CNN; ``features`` is the 128-D penultimate activation."""

    def __init__(self):
        super().__init__()
        chans = [1, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.fc1 = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def prepare(x: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (N, C, H, W) (``as_image_batch``) -> float32 (N, 1, 28, 28) in [-1, 1]."""
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float() * 2.0 - 1.0
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    return x


def load_mnist_classifier(weights=None, device="cpu") -> MnistNet:
    """The classifier from ``weights`` (default: the shipped file), fp32, eval mode; cached."""
    p = Path(weights or DEFAULT_WEIGHTS).expanduser()
    key = (str(p), str(device))
    if key not in _MODELS:
        if not p.is_file():
            raise UserError(f"MNIST classifier weights {p} not found; train them with "
                            "`python benchmarks/train_mnist_classifier.py` or pass --classifier PATH")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
            net = MnistNet()
            net.load_state_dict({k: v.float() for k, v in obj["state_dict"].items()})
        except Exception as e:
            raise UserError(f"cannot load MNIST classifier {p}: {e}") from None
        _MODELS[key] = net.to(device).eval()
    return _MODELS[key]


def classifier_meta(weights=None) -> dict:
    """The ``meta`` dict stored with the weights (test accuracy, epochs, seed, ...)."""
    p = Path(weights or DEFAULT_WEIGHTS)
    return dict(torch.load(p, map_location="cpu", weights_only=True).get("meta", {}))


def mnist_features(images, weights=None, batch_size: int = 500, device="cpu",
                   progress: bool = False) -> np.ndarray:
    """Penultimate-layer features (N, 128), float64, of images (N, C, H, W) uint8 or [0, 1]."""
    net = load_mnist_classifier(weights, device)
    return run_batched(lambda x: net.features(prepare(x)), images, batch_size, device, progress, "mnist features")


def mnist_logits(images, weights=None, batch_size: int = 500, device="cpu", progress: bool = False) -> np.ndarray:
    """Class logits (N, 10) of images (N, C, H, W) uint8 or [0, 1]."""
    net = load_mnist_classifier(weights, device)
    return run_batched(lambda x: net(prepare(x)), images, batch_size, device, progress, "mnist logits")


def extractor_id(weights=None) -> str:
    p = Path(weights or DEFAULT_WEIGHTS)
    return f"mnist-classifier:{p.name}:{p.stat().st_size if p.is_file() else 0}|bilinear28"


def mnist_reference_stats(images, weights=None, cache_dir=None, use_cache: bool = True) -> dict:
    """MNIST-classifier statistics (and features) of a reference set, cached by pixel hash."""
    return reference_stats(images, extractor_id(weights), lambda x: mnist_features(x, weights),
                           cache_dir=cache_dir, use_cache=use_cache)


def mnist_fid(a, b, weights=None) -> float:
    """Fréchet distance between the classifier features of two image sets (N, C, H, W)."""
    return fid_from_stats(*feature_stats(mnist_features(a, weights)),
                          *feature_stats(mnist_features(b, weights)))


def _load_split(npz_path, split: str):
    p = Path(npz_path)
    if not p.is_file():
        raise UserError(f"MNIST file {p} not found; it needs x_train, y_train, x_test, y_test")
    with np.load(p) as f:
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


@torch.no_grad()
def accuracy(net: MnistNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    hits = sum(int((net(prepare(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def train_mnist_classifier(npz_path, out_path=DEFAULT_WEIGHTS, epochs: int = 3, batch_size: int = 128,
                           lr: float = 3e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train on MNIST's 60,000 training images; write fp16 weights and meta to ``out_path``.

    Adam with a one-cycle schedule, random shifts of up to 2 pixels as augmentation. The test
    accuracy (x_test, y_test) is measured at the end and stored in ``meta``; returns meta.
    """
    torch.manual_seed(seed)
    x, y = _load_split(npz_path, "train")
    xt, yt = _load_split(npz_path, "test")
    net = MnistNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = prepare(x[idx])
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(F.pad(xb, (2, 2, 2, 2), value=-1.0), (dy, dx), (2, 3))[..., 2:30, 2:30]
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}, "
                  f"test accuracy {accuracy(net, xt, yt):.4f}, {time.time() - t0:.0f}s", flush=True)
    net.eval()
    # accuracy of the weights as shipped (rounded to fp16, then used in fp32)
    shipped = MnistNet()
    shipped.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in net.state_dict().items()})
    meta = {"test_accuracy": accuracy(shipped, xt, yt), "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "seed": seed, "train_examples": len(x), "test_examples": len(xt),
            "seconds": round(time.time() - t0, 1), "torch": str(torch.__version__), "dtype": "float16"}
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": meta}, out)
    _MODELS.clear()
    return meta

