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


@pytest.fixture(autouse=True, scope="session")
def _deterministic_cudnn():
    """On a GPU, tests that resume a run and compare it bit for bit with an unbroken one need
    the same kernels both times: cuDNN's fastest may add in any order. Training itself does not
    ask for this (it costs speed); on a CPU it changes nothing."""
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to spin-waiting
    yield


def write_digits(path: Path) -> Path:
    """32 random 28x28 greyscale images in an MNIST-like .npz."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    return path


@pytest.fixture
def digits_npz(tmp_path) -> Path:
    return write_digits(tmp_path / "digits.npz")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The digits of the shared smoke run (read-only for tests)."""
    return write_digits(tmp_path_factory.mktemp("smoke") / "digits.npz")


@pytest.fixture(scope="session")
def smoke_run(smoke_data) -> Path:
    """One 2-step smoke run trained once for the whole session; tests only read it (anything
    they write goes to their own tmp_path)."""
    from coopnets.config import resolve
    from coopnets.training import train
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(resolve("smoke", data=str(smoke_data), outdir=str(smoke_data.parent / "runs"),
                             progress=False))
    finally:
        torch.set_num_threads(n)


def scripted_steps(monkeypatch, moves: dict | None = None, gaps: dict | None = None) -> list:
    """CoopNets steps whose Langevin move is ``moves[n]`` and f_gap ``gaps[n]`` at the n-th call
    (0.1 and 1.0 otherwise), judged over a window of 6; returns the list of calls (one entry per
    step taken)."""
    from coopnets import training as train_mod
    real, calls, moves, gaps = train_mod.STEPS["coop"], [], moves or {}, gaps or {}

    def scripted(*a, **k):
        r = real(*a, **k)
        calls.append(None)
        # f_gap held level: the smoke run's own gap grows ~2.5x a step in its first steps
        return r._replace(stats={**r.stats, "langevin_move": moves.get(len(calls), 0.1),
                                 "f_gap": gaps.get(len(calls), 1.0)})

    monkeypatch.setitem(train_mod.STEPS, "coop", scripted)
    watch = train_mod.MoveWatch
    monkeypatch.setattr(train_mod, "MoveWatch", lambda: watch(window=6, factor=4.0))
    return calls
