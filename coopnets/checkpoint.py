"""Checkpoints: one plain dict, written atomically (temp file + rename), read back on the CPU.

    {"config": dict, "step": int, "arch_version": int, "channels": int, "image_size": int,
     "descriptor": state_dict, "generator": state_dict, "opt_des": ..., "opt_gen": ...,
     "rng": [ByteTensor per process], "rng_device": "cpu" | "cuda", "state": {tensors}}

``latest.pt`` in a run folder is what resuming and sampling read. Every tensor is loaded on
the CPU (RNG states must stay there); callers move networks and state to their device, which
is what lets a run saved on a GPU resume or sample on a CPU and the reverse.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .config import Config, config_from_dict
from .errors import UserError
from .models import ARCH_VERSION, build_nets

LATEST = "latest.pt"


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def find_checkpoint(run_or_ckpt) -> Path:
    """A checkpoint file, or a run folder (its latest.pt)."""
    p = Path(run_or_ckpt).expanduser()
    if p.is_dir():
        p = p / LATEST
        if not p.is_file():
            raise UserError(f"run folder {p.parent} has no checkpoint yet ({LATEST}); train it first")
    elif not p.is_file():
        raise UserError(f"{p} is neither a run folder nor a checkpoint file")
    return p


def load_checkpoint(run_or_ckpt) -> dict:
    """The checkpoint dict of a run folder or file, every tensor on the CPU."""
    path = find_checkpoint(run_or_ckpt)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "generator" not in ckpt:
        raise UserError(f"{path} is not a coopnets checkpoint")
    if ckpt.get("arch_version") != ARCH_VERSION:
        raise UserError(f"{path} was written for network architecture version "
                        f"{ckpt.get('arch_version', 1)}, this coopnets builds version {ARCH_VERSION}; "
                        "retrain, or use the coopnets version that wrote it")
    return ckpt


def load_run(run_or_ckpt, device="cpu"):
    """(config, descriptor, generator, checkpoint dict) of a trained run, nets in eval mode."""
    ckpt = load_checkpoint(run_or_ckpt)
    cfg = config_from_dict(ckpt["config"])
    des, gen = build_nets(cfg, ckpt["channels"])
    des.load_state_dict(ckpt["descriptor"])
    gen.load_state_dict(ckpt["generator"])
    return cfg, des.to(device).eval(), gen.to(device).eval(), ckpt


def config_dict(cfg: Config) -> dict:
    return asdict(cfg)
