"""Multi-process helpers for ``torchrun``. Without a process group every helper returns the
single-process value, so the training loop has one code path."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device_pref: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun; return this process's device."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        if torch.cuda.is_available() and device_pref != "cpu":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)  # no guessing of the device id
        else:
            dist.init_process_group("gloo")
    return pick_device(device_pref)


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        from .errors import UserError
        raise UserError(f"--device {pref} asked for, but no CUDA device is available; use --device cpu")
    try:
        return torch.device(pref)
    except RuntimeError:
        from .errors import UserError
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {pref!r}") from None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_tensor(t: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over processes, as a tensor on its device (itself when alone)."""
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world()


def mean_over_ranks(stats: dict) -> dict:
    """Average a dict of floats over processes (for logging)."""
    if not dist.is_initialized():
        return stats
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    return dict(zip(keys, mean_tensor(t).tolist()))


def wrap(module: torch.nn.Module, device: torch.device):
    """DDP-wrap for parameter updates; Langevin runs on the unwrapped module."""
    if not dist.is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
