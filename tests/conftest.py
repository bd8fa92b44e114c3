import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """../shared/data beside the checkout (override with COOPNETS_SHARED=/path/to/shared/data,
    the same variable the metrics module reads)."""
    return Path(os.environ.get("COOPNETS_SHARED") or REPO.parent / "shared" / "data")


def need_shared(rel: str) -> Path:
    p = shared_data() / rel
    if not p.exists():
        pytest.skip(f"{p} is absent (real data lives in ../shared/data beside the checkout)")
    return p


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to spin-waiting
    yield


@pytest.fixture
def digits_npz(tmp_path) -> Path:
    """32 random 28x28 greyscale images in an MNIST-like .npz."""
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    return path


@pytest.fixture
def smoke_run(tmp_path, digits_npz) -> Path:
    from coopnets.config import resolve
    from coopnets.training import train
    return train(resolve("smoke", data=str(digits_npz), outdir=str(tmp_path / "runs"), progress=False))
