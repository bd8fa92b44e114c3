"""Checkpoints: one plain dict, written atomically (temp file + rename), read back on the CPU.

    {"config": dict, "step": int, "arch_version": int, "channels": int, "image_size": int,
     "descriptor": state_dict, "generator": state_dict, "opt_des": ..., "opt_gen": ...,
     "rng": [ByteTensor per process], "rng_device": "cpu" | "cuda", "state": {tensors},
     "watch": {"langevin_move": [floats], "f_gap": [floats]}}   # the divergence check's window

``latest.pt`` in a run folder is what resuming and sampling read. Every tensor is loaded on
the CPU (RNG states must stay there); callers move networks and state to their device, which
is what lets a run saved on a GPU resume or sample on a CPU and the reverse. Checkpoints are read with
``torch.load(weights_only=True)``: tensors, containers and plain values only, so a crafted
file cannot run code. An export folder (``coopnets.export``: ``config.json`` and
``*.safetensors``) loads wherever a run folder or checkpoint does, without optimiser states.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .config import Config, config_from_dict
from .errors import UserError
from .models import ARCH_VERSION, build_nets

LATEST = "latest.pt"
EXPORT_FILES = ("config.json", "descriptor.safetensors", "generator.safetensors")


TMP_GLOB = f".{LATEST}.*.tmp"  # what save_checkpoint writes before the rename


class _Writes:
    """A file object that remembers the OSError behind a failed write: torch.save turns it
    into a RuntimeError from its C++ writer that no longer says "no space left"."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``. A failed
    write (full disk, read-only file system) removes the temp file, leaves ``path`` as it was
    and raises a one-line UserError that says why."""
    from .errors import write_error
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kept = f"{path.name} is unchanged" if path.exists() else "no checkpoint was written"
    out = None
    try:
        with open(tmp, "wb") as fh:
            out = _Writes(fh)
            torch.save(obj, out)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        err = e if isinstance(e, OSError) else out.error if out is not None else None
        if err is None:
            raise
        raise write_error(path, err, kept) from None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``.latest.pt.<pid>.tmp`` files left by a killed or failed write."""
    gone = []
    for p in Path(folder).glob(TMP_GLOB):
        try:
            p.unlink()
            gone.append(p)
        except OSError:
            pass
    return gone


def is_export(folder) -> bool:
    """Whether ``folder`` is an export folder (``generator.safetensors`` beside ``config.json``)."""
    p = Path(folder)
    return (p / "generator.safetensors").is_file() and (p / "config.json").is_file()


def find_checkpoint(run_or_ckpt) -> Path:
    """A checkpoint file, a run folder (its latest.pt), or an export folder (its config.json)."""
    p = Path(run_or_ckpt).expanduser()
    if p.is_dir():
        if (p / LATEST).is_file() or not is_export(p):
            p = p / LATEST
            if not p.is_file():
                raise UserError(f"run folder {p.parent} has no checkpoint yet ({LATEST}); train it first")
        else:
            p = p / "config.json"
    elif not p.is_file():
        raise UserError(f"{p} is neither a run folder nor a checkpoint file")
    return p


def source_dir(run_or_ckpt) -> Path:
    """The folder that outputs derived from a run, checkpoint or export go into by default."""
    return find_checkpoint(run_or_ckpt).parent


def _refusal(path: Path, err: Exception) -> str:
    """One line on why a weights-only load refused ``path``: the global it asked for, if any."""
    text = str(err)
    m = re.search(r"\bGLOBAL (\S+) (?:was not an allowed|whose module)", text)
    if m:
        return (f"{path} is not a safe coopnets checkpoint: it asks to run code on load "
                f"({m.group(1)}); it was not loaded")
    detail = next((ln.strip() for ln in text.splitlines()  # torch's message is a paragraph
                   if ln.strip() and not re.search(r"weights.only|WeightsUnpickler", ln, re.I)),
                  type(err).__name__)
    return (f"{path} is not a safe coopnets checkpoint: a weights-only load refuses it "
            f"({detail.rstrip('.')}); it was not loaded")


def load_checkpoint(run_or_ckpt) -> dict:
    """The checkpoint dict of a run folder, ``.pt`` file or export folder, on the CPU
    (``load_state_dict`` copies into the nets wherever they live; generator RNG states must
    stay CPU tensors). Loading is weights-only; a file that needs any other global is refused
    with a UserError and nothing in it runs.
    """
    path = find_checkpoint(run_or_ckpt)
    if path.name == "config.json" and is_export(path.parent):
        ckpt = _load_export(path.parent)
    else:
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for users
                warnings.simplefilter("ignore")
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UserError(_refusal(path, e)) from None
        except Exception as e:  # a truncated or foreign file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "generator" not in ckpt:
        raise UserError(f"{path} is not a coopnets checkpoint")
    if ckpt.get("arch_version") != ARCH_VERSION:
        raise UserError(f"{path} was written for network architecture version "
                        f"{ckpt.get('arch_version', 1)}, this coopnets builds version {ARCH_VERSION}; "
                        "retrain, or use the coopnets version that wrote it")
    return ckpt


def _load_export(folder: Path) -> dict:
    """An export folder as a checkpoint dict (config, model fields, the two state_dicts)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    for name in EXPORT_FILES:
        if not (folder / name).is_file():
            raise UserError(f"export folder {folder} lacks {name}; export the run again")
    try:
        meta = json.loads((folder / "config.json").read_text())
        model = meta.pop("model")
        ckpt = {"config": meta, **{k: model[k] for k in ("channels", "image_size", "step")},
                "arch_version": model.get("arch_version", 1), "frames": model.get("frames", 0)}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{folder / 'config.json'} is not a coopnets export config "
                        f"({type(e).__name__}: {e})") from None
    for net in ("descriptor", "generator"):
        try:
            ckpt[net] = load_file(folder / f"{net}.safetensors", device="cpu")
        except (SafetensorError, OSError) as e:
            raise UserError(f"cannot read {folder / f'{net}.safetensors'}: {e}") from None
    return ckpt


def sampling_generator(ckpt: dict, ema: bool = True) -> dict:
    """The generator weights a run samples with: the moving average of a ``--gen-ema`` run
    (unless ``ema`` is False), else the trained weights."""
    return ckpt["generator_ema"] if ema and ckpt.get("generator_ema") is not None else ckpt["generator"]


def load_run(run_or_ckpt, device="cpu", ema: bool = True):
    """(config, descriptor, generator, checkpoint dict) of a run folder, ``.pt`` file or export
    folder, nets on ``device`` in eval mode. The generator is the moving average of a
    ``--gen-ema`` run; ``ema=False`` gives the trained weights instead."""
    ckpt = load_checkpoint(run_or_ckpt)
    where = find_checkpoint(run_or_ckpt)

    def refuse(e):
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return UserError(f"{where} does not describe coopnets networks this version builds: {line}")
    try:
        cfg = config_from_dict(ckpt["config"], saved=True)  # as the run computed
    except (TypeError, KeyError, UserError) as e:  # unknown fields, wrong types
        raise refuse(e) from None
    if not ema and cfg.gen_ema and ckpt.get("generator_ema") is None:
        raise UserError(f"{where} holds only the moving average of the generator (an export of a "
                        "--gen-ema run); its trained weights are in the run's checkpoints")
    try:
        des, gen = build_nets(cfg, ckpt["channels"])
        des.load_state_dict(ckpt["descriptor"])
        gen.load_state_dict(sampling_generator(ckpt, ema))
    except (TypeError, KeyError, RuntimeError, UserError) as e:  # missing keys, other weights
        raise refuse(e) from None
    return cfg, des.to(device).eval(), gen.to(device).eval(), ckpt


def config_dict(cfg: Config) -> dict:
    return asdict(cfg)
