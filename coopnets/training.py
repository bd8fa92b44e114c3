"""The training loop: data -> session (nets, optimisers, RNG, state) -> for each step:
``STEPS[cfg.algorithm](...)`` -> monitor, log, grids, checkpoint. To resume, run the same
command again.

A run is a numbered folder ``runs/00012-coop-mnist/`` with ``config.json``, ``data.json``,
``log.txt``, ``stats.jsonl``, TensorBoard events, ``samples-*.png`` grids from a fixed latent
batch, and ``latest.pt``. A run is what it computes (``coopnets.runs``): its config with
``data`` resolved to an absolute path, plus a fingerprint of the data (``data.json``). A new
``train`` call with the same configuration (fields in ``config.RESUME_IGNORES`` such as
``steps`` may differ, but not ``steps`` when the learning rates decay; ``log.txt`` records what
changed) continues the latest such run, from any working directory; the same config on changed
data, or a changed ``--steps`` under a decaying schedule, is refused with one line rather than
resumed.

SIGINT and SIGTERM stop the loop after the current step: a checkpoint is written at that step
(when healthy), the stop is logged, and ``Interrupted`` carries the shell's exit code (130,
143). Every stop (end, signal, divergence, a failed write) is written to ``log.txt``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist
from . import fast
from .algorithms import STEPS, Batch, Nets, amp_context, floats, gap_limit, unwrap
from .checkpoint import LATEST, config_dict, load_checkpoint, remove_stale_temp_files, save_checkpoint
from .config import Config, describe_differences, resume_changes, save_config
from .data import Batches, load_images
from .errors import Interrupted, TrainingDiverged, UserError, signal_name, write_error
from .images import save_grid
from .langevin import revise
from .models import ARCH_VERSION, build_nets, recalibrate_batchnorm
from .runs import RUN_RE, find_run_dir, run_name  # noqa: F401  (the run-folder API, re-exported)
from .runs import DATA_FILE, _existing, _saved_run, check_run_dir, check_writable, data_identity
from .particle import FROZEN_FILTERS, freeze_filters
from .particle import revised as particle_samples
from .seeding import ExampleRNG, generator, stream_seed, sub_seed

CHAIN_ALGORITHMS = ("descriptor", "frame", "wframe", "wgcn")  # samples are the descriptor's chains
MAX_MOVE = 100.0  # an RMS Langevin move of 100 per pixel (pixels in [-1, 1]) is divergence
# A collapsed generator (measured with --gen-lr 100 and 1 on the smoke and mnist-cpu presets:
# BatchNorm statistics 1e3..1e14, 100% of pixels at +-1, or every sample the same; healthy
# runs: statistics below 2, under 11% saturated, per-pixel std over samples 0.2..0.56).
MAX_BN_STAT = 1e6  # |running_mean|, running_var of any BatchNorm after recalibration
MAX_SATURATION = 0.995  # fraction of generated pixels with |x| > 0.99
MIN_DIVERSITY = 0.01  # mean over pixels of the std over the fixed latent batch, when
ALIKE_SATURATION = 0.5  # ... at least this fraction is saturated (a young texture generator's
# samples are alike too, std 0.0099 at step 3 of texture-cpu, but not saturated)
# A stalled run (stall()): the gap at the quadratic limit, the samples alike.
STALL_GAP = 0.9  # median |gap| over MoveWatch's window, in units of G
MIN_SPREAD = 0.05  # per-pixel std over the fixed latents
# A generator that ignores its latent (collapsed(), a warning): its samples differ from one
# another by a small part of their own contrast ("spread": per-pixel std over the fixed latents
# over the mean spatial std of one sample). Measured on the sample grids of 12 brick runs at
# 224x224 (docs/results.md, Textures): healthy generators 0.52-0.88 over the last third of their
# run (mnist-table2-cpu 0.62-0.64); the collapsed ones 0.04-0.13, lasting; young healthy ones
# pass through 0.09-0.24 for up to 45 % of a run. For videos the contrast is each pixel's std over
# time (generator_health): dyntex-fc-cpu on fire, flag and boiling water 0.8-1.7, where the
# spatial contrast read 0.2-0.26 and warned; dyntex-cpu stalled at G on fire 0.12-0.15.
COLLAPSED_SPREAD = 0.3  # median over the last COLLAPSE_WINDOW of the run
COLLAPSE_WINDOW = 0.1  # fraction of the run's steps (and at least 3 checkpoints)
COLLAPSE_AFTER = 0.5  # fraction of the run's steps before which no warning is given
# After the Langevin move has blown up, checkpoints stay held back while the generator's spread
# is under this fraction of its value at the last checkpoint written: a blow-up can wreck the
# generator without a NaN or a saturated pixel, and once the move and the gap had calmed down,
# latest.pt took the wreck (texture-224-cpu at 4,000 steps, seed 1: the move blew up at step
# 945, the spread fell from 0.89 at step 900 to 0.19-0.22, and step 1,100 was written).
WRECKED_SPREAD = 0.5


# ---- logs --------------------------------------------------------------------
def check_space(s: "Session", folder: Path) -> None:
    """A checkpoint needs about its size twice over (the temp file beside the old one)."""
    nets = [*s.modules, *([s.ema] if s.ema is not None else [])]
    need = 2 * sum(t.numel() * t.element_size() for m in nets for t in m.state_dict().values()) * 3
    free = shutil.disk_usage(_existing(folder)).free
    if free < need:
        raise UserError(f"cannot write {folder}: no space left on device for checkpoints "
                        f"(about {need / 1e6:.3g} MB needed, {free / 1e6:.3g} MB free)")


def trim_stats(path: Path, step: int) -> int:
    """Drop the rows of ``stats.jsonl`` after ``step`` (written after the checkpoint a run
    resumes from, so they would appear twice) and a torn last line; returns how many."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    if len(keep) < len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, path)
    return len(lines) - len(keep)


class RunLog:
    """log.txt for people, stats.jsonl for machines, TensorBoard for both (main process).
    ``resume_step``: the checkpoint's step when continuing a folder; stats.jsonl and the
    TensorBoard events (``purge_step``) after it are dropped."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None):
        self.enabled, self.run_dir, self.tb, self.trimmed = enabled, run_dir, None, 0
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            if resume_step is not None:
                self.trimmed = trim_stats(run_dir / "stats.jsonl", resume_step)
            self._hook = threading.excepthook
            threading.excepthook = self._writer_thread_error
            self.tb = SummaryWriter(str(run_dir), purge_step=None if resume_step is None
                                    else resume_step + 1)

    def _writer_thread_error(self, args) -> None:
        """TensorBoard's writer thread dies on a full disk; the main thread reports it in one
        line at the next write, so its traceback is not printed."""
        if not (issubclass(args.exc_type, OSError) and "Writer" in type(args.thread).__name__):
            self._hook(args)

    def _write(self, name: str, line: str) -> None:
        try:
            with open(self.run_dir / name, "a") as fh:
                fh.write(line + "\n")
        except OSError as e:
            raise write_error(self.run_dir / name, e) from None

    def text(self, line: str) -> None:
        if self.enabled:
            self._write("log.txt", line)

    def stop(self, line: str) -> None:
        """Log why the run stopped, without letting a failing disk hide that reason."""
        try:
            self.text(line)
        except UserError:
            pass

    def stats(self, step: int, stats: dict) -> None:
        if not self.enabled:
            return
        self._write("stats.jsonl", json.dumps({"step": step, **{k: round(v, 6) for k, v in stats.items()}}))
        if self.tb:
            try:
                for k, v in stats.items():
                    self.tb.add_scalar(k, v, step)
            except OSError as e:
                raise write_error(self.run_dir, e) from None

    def close(self) -> None:
        if self.tb:
            try:
                self.tb.close()
            except OSError:
                pass  # a full disk: reported already, or by the caller's own write
            self.tb = None
            threading.excepthook = self._hook


# ---- the session: everything a run computes with -----------------------------------------------
@dataclass
class Session:
    """The networks, optimisers, noise generator and carried state of a run on this process,
    plus the fixed latents of its progress grids and BatchNorm calibration."""
    cfg: Config
    device: torch.device
    nets: Nets
    rng: torch.Generator
    state: dict
    fixed_z: torch.Tensor
    calib_z: torch.Tensor
    channels: int
    size: int
    samples: dict = field(default_factory=dict)  # the last step's synthesized tensors
    frames: int = 0  # frames per training example of a video run (0: images)
    ema: nn.Module | None = None  # --gen-ema: the moving average of the generator's weights

    @property
    def modules(self):
        return unwrap(self.nets.des), unwrap(self.nets.gen)


def build_session(cfg: Config, images: torch.Tensor, device: torch.device) -> Session:
    """Fresh networks (weights a function of the seed), Adam optimisers and initial state."""
    channels, size = images.shape[1], cfg.crop_size or images.shape[-1]
    frames = (cfg.crop_frames or images.shape[2]) if images.dim() == 5 else 0  # videos (N,C,T,H,W)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "weights"))
        des, gen = (m.to(device) for m in build_nets(cfg, channels))
    if cfg.algorithm in FROZEN_FILTERS:  # FRAME, wFRAME: a fixed filter bank, learned top layer
        freeze_filters(des)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    des, gen = des.to(memory_format=fmt), gen.to(memory_format=fmt)
    latent_shape = gen.latent_shape(size, frames) if frames else gen.latent_shape(size)
    des(torch.zeros(1, channels, *[frames] * bool(frames), size, size, device=device))  # size check
    fused = device.type == "cuda"  # one kernel per update instead of one per tensor
    nets = Nets(des, gen,
                torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(cfg.des_beta1, cfg.des_beta2),
                                 weight_decay=cfg.des_weight_decay, decoupled_weight_decay=True,
                                 fused=fused),
                torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, cfg.gen_beta2),
                                 fused=fused),
                latent_shape)
    state: dict = {"chains": None, "latents": None}
    if cfg.algorithm == "abp" or (cfg.algorithm == "ggcn" and cfg.ggcn_infer_steps):
        # one persistent latent per training example (Algorithm G's warm starts)
        state["latents"] = torch.randn((len(images), *latent_shape),
                                       generator=generator(stream_seed(cfg.seed, "abp_latents"))
                                       ).to(device)  # on the device: no copy to the host per step
    fixed_z = torch.randn((cfg.grid_size, *latent_shape),
                          generator=generator(stream_seed(cfg.seed, "fixed_latents"))).to(device)
    calib_z = torch.randn((max(4 * cfg.num_chains, 256), *latent_shape),
                          generator=generator(stream_seed(cfg.seed, "bn_calibration"))).to(device)
    rng = generator(cfg.seed * dist.world() + dist.rank(), device)
    ema = copy.deepcopy(gen).requires_grad_(False) if cfg.gen_ema else None  # --gen-ema
    return Session(cfg, device, nets, rng, state, fixed_z, calib_z, channels, size, frames=frames,
                   ema=ema)


def ema_decay(decay: float, step: int) -> float:
    """The moving average's decay at 0-based step ``step``: ``decay``, warmed up as
    min(decay, (1 + t)/(10 + t)) so that the random initial weights are soon forgotten."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, gen: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · gen for every parameter: one fused op, no host sync
    (torch.optim.swa_utils.AveragedModel reads a counter on the host at every update)."""
    torch._foreach_lerp_(list(ema.parameters()), list(gen.parameters()), 1.0 - decay)


def checkpoint_dict(s: Session, step: int) -> dict:
    """What ``latest.pt`` holds; every tensor on the CPU. (Call on every process: under DDP
    the noise generators' states are gathered from all ranks.)"""
    des, gen = s.modules
    rngs = [s.rng.get_state()]
    if dist.world() > 1:
        rngs = [None] * dist.world()
        torch.distributed.all_gather_object(rngs, s.rng.get_state().cpu())
    return {"config": config_dict(s.cfg), "step": step, "arch_version": ARCH_VERSION,
            "channels": s.channels, "image_size": s.size, "frames": s.frames,
            "descriptor": des.state_dict(), "generator": gen.state_dict(),
            "generator_ema": s.ema.state_dict() if s.ema is not None else None,
            "opt_des": s.nets.opt_des.state_dict(), "opt_gen": s.nets.opt_gen.state_dict(),
            "rng": rngs, "rng_device": s.device.type,
            "state": {k: (v.cpu() if v is not None else None) for k, v in s.state.items()}}


# How an optimiser runs, not what it computes: they belong to the device, not to the checkpoint
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer(opt: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimiser state (moments, step counts, rates) into ``opt``, keeping ``opt``'s
    own implementation flags. ``Optimizer.load_state_dict`` takes every group's settings from
    the checkpoint, so a run saved on a CPU (``fused=False``) would resume on a GPU with the
    unfused Adam, and a GPU run's ``fused=True`` would follow it onto a CPU. Adam moves its state
    to the parameters' device (and its step counts to float32 there when fused)."""
    groups = saved.get("param_groups", [])
    if len(groups) == len(opt.param_groups):  # otherwise load_state_dict says what is wrong
        groups = [{**g, **{k: cur[k] for k in IMPLEMENTATION_FLAGS if k in cur}}
                  for g, cur in zip(groups, opt.param_groups)]
        saved = {**saved, "param_groups": groups}
    opt.load_state_dict(saved)


def restore(s: Session, ckpt: dict) -> str:
    """Load a checkpoint into the session, whatever device it was written on. Returns a note
    for the log when the noise stream had to be re-derived."""
    des, gen = s.modules
    try:
        des.load_state_dict(ckpt["descriptor"])
        gen.load_state_dict(ckpt["generator"])
        if s.ema is not None:  # a run saved before its average existed starts it from gen
            s.ema.load_state_dict(ckpt.get("generator_ema") or ckpt["generator"])
        load_optimizer(s.nets.opt_des, ckpt["opt_des"])
        load_optimizer(s.nets.opt_gen, ckpt["opt_gen"])
    except (KeyError, ValueError, RuntimeError) as e:  # a checkpoint of other networks
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the checkpoint does not fit this configuration's networks ({line}); "
                        "start a new run with --new-run") from None
    s.state = {k: (v.to(s.device) if v is not None else None) for k, v in ckpt["state"].items()}
    rank, saved_on = dist.rank(), ckpt.get("rng_device", "cpu")
    if rank >= len(ckpt["rng"]):  # a run resumed on more processes seeds the new ones fresh
        return ""
    if saved_on == s.device.type:
        s.rng.set_state(ckpt["rng"][rank].cpu())
        return ""
    # CPU and CUDA generators are different algorithms: continue with a stream of (seed, step).
    s.rng.manual_seed(sub_seed(s.cfg.seed, ckpt["step"] * dist.world() + rank))
    return (f"the checkpoint's noise generator was a {saved_on} one; this {s.device.type} run "
            f"continues with a fresh stream, so it is not bit-identical to a {saved_on} run")


def lr_factor(cfg: Config, step: int) -> float:
    """The learning-rate schedule at 0-based ``step``: linear from 1 at step 0 to ``lr_final`` at
    the last step, times min(1, (step + 1)/N) with N = ``lr_warmup`` (a linear warm-up)."""
    decay = 1.0 - (1.0 - cfg.lr_final) * step / max(1, cfg.steps - 1)
    return decay * min(1.0, (step + 1) / cfg.lr_warmup) if cfg.lr_warmup else decay


def set_learning_rates(s: Session, step: int) -> None:
    frac = lr_factor(s.cfg, step)
    for opt, lr in ((s.nets.opt_des, s.cfg.des_lr), (s.nets.opt_gen, s.cfg.gen_lr)):
        for group in opt.param_groups:
            group["lr"] = lr * frac


# ---- health -------------------------------------------------------------------------------------
def _kept(run_dir: Path, last_ckpt: int | None) -> str:
    return (f"the last good checkpoint (step {last_ckpt}) is kept in {run_dir / LATEST}"
            if last_ckpt is not None else "no checkpoint was written")


def check_finite(step: int, stats: dict, run_dir: Path, last_ckpt: int | None) -> None:
    """Raise TrainingDiverged when a stat is NaN/inf or the Langevin move exceeds MAX_MOVE."""
    bad = {k: v for k, v in stats.items()
           if not math.isfinite(v) or (k == "langevin_move" and v > MAX_MOVE)}
    if bad:
        raise TrainingDiverged(
            f"training diverged at step {step} ({', '.join(f'{k} = {v}' for k, v in bad.items())}); "
            f"{_kept(run_dir, last_ckpt)}; lower --des-lr or --des-step-size, or raise --ref-std, "
            "and run again")


def generator_health(gen, z: torch.Tensor) -> dict:
    """What a collapsed generator shows (call after recalibrating BatchNorm): the largest
    BatchNorm statistic, the fraction of saturated pixels of g(z), their diversity (mean over
    pixels of the std over the batch ``z``) and their spread (the diversity over the mean
    spatial std of one sample, per channel: about 0 when every latent gives the same picture,
    however much contrast that picture has). For videos the spread is over the mean std over
    time of one sample, per pixel: what should differ between a video's samples is what moves
    in them, since a fixed-layout generator (dyntex-fc) draws the clip's layout in every one."""
    bn = [b.detach().abs().max().item() for name, b in gen.named_buffers()
          if name.endswith(("running_mean", "running_var")) and b.numel()]
    x = _decode(gen, z)
    finite, nan = bool(torch.isfinite(x).all()), float("nan")
    diversity = x.std(0).mean().item() if finite and len(x) > 1 else nan
    if x.dim() == 5 and x.shape[2] > 1:  # (N, C, T, H, W): how much each pixel moves
        contrast = x.std(2).mean().item() if finite else nan
    else:
        contrast = x.flatten(2).std(-1).mean().item() if finite and x[0, 0].numel() > 1 else nan
    return {"bn_stat": max(bn, default=0.0),
            "saturation": (x.abs() > 0.99).float().mean().item() if finite else 1.0,
            "diversity": diversity,
            "spread": diversity / contrast if contrast > 0 else nan}


def check_generator(s: "Session", step: int, run_dir: Path, last_ckpt: int | None,
                    h: dict) -> None:
    """Raise TrainingDiverged when the generator has collapsed (BatchNorm statistics not finite
    or beyond MAX_BN_STAT, almost every pixel at +-1, or every sample the same saturated
    pattern), before it is saved; ``h`` is its generator_health."""
    if s.cfg.algorithm == "descriptor":  # Algorithm D never uses the generator
        return
    bad = []
    if not math.isfinite(h["bn_stat"]) or h["bn_stat"] > MAX_BN_STAT:
        bad.append(f"a BatchNorm running statistic is {h['bn_stat']:.3g}")
    if h["saturation"] > MAX_SATURATION:
        bad.append(f"{h['saturation']:.1%} of generated pixels are saturated at +-1")
    if h["diversity"] < MIN_DIVERSITY and h["saturation"] > ALIKE_SATURATION:  # NaN never fails
        bad.append(f"the samples are all the same saturated pattern (per-pixel std "
                   f"{h['diversity']:.2g}, {h['saturation']:.0%} at +-1)")
    if bad:
        raise TrainingDiverged(
            f"the generator collapsed at step {step} ({'; '.join(bad)}); "
            f"{_kept(run_dir, last_ckpt)}; lower --gen-lr and run again")


class MoveWatch:
    """Holds checkpoints back at the start of a blow-up.

    A diverging CoopNets run shows it first in the Langevin move and in the energy gap
    f(data) - f(syn): they climb to many times their usual size for tens of steps before
    anything is NaN or above MAX_MOVE. A checkpoint is written only if the largest move since
    the previous one is at most ``factor`` times the median move of the last ``window`` steps
    and the largest |f_gap| at most ``gap_factor`` times its median, so that ``latest.pt``
    keeps the last healthy state; a passing spike only delays the next checkpoint. (|f_gap| of
    a healthy run swings more than the move, hence the wider factor: the largest of 200
    half-normal draws is about 4x their median.) Runs without these stats (Algorithm G) and
    the first ``window`` steps of a run are not gated. A resumed run judges by the window its
    checkpoint saved (``state_dict``): before, the ``window`` steps after a restart were
    ungated, and a texture-224-cpu replay resumed at step 862 wrote its blown-up step 868 to
    ``latest.pt``. The move's median is over the intervals whose move passed: a blown-up move
    stays out, so a blow-up that lasts longer than half the window does not become the norm it
    is judged by (measured: texture-224-cpu at 4,000 steps, whose move sat at 2.4 from step
    650 and passed at 750). The gap's median follows every step: frozen, it locked a healthy
    run out of checkpoints for good once its gap settled at the limit G (the same preset at
    --gen-lr 5e-4, from step 800).
    """

    def __init__(self, window: int = 200, factor: float = 4.0, gap_factor: float = 10.0):
        self.series = {"langevin_move": deque(maxlen=window), "f_gap": deque(maxlen=window)}
        self.recent: list = []  # the moves since the last verdict, kept out until it passes
        self.factors = {"langevin_move": factor, "f_gap": gap_factor}
        self.window, self.peaks = window, {"langevin_move": 0.0, "f_gap": 0.0}
        self.high: set = set()  # which of the two the last verdict found too high

    @property
    def moves(self) -> deque:
        return self.series["langevin_move"]

    def state_dict(self) -> dict:
        """The judged window, for a checkpoint: the healthy moves and every gap, oldest first."""
        return {k: list(values) for k, values in self.series.items()}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from a checkpoint's window (None: a checkpoint saved before it had one)."""
        for k, values in (state or {}).items():
            if k in self.series:
                self.series[k].extend(float(v) for v in values)

    def add(self, stats: dict) -> None:
        for k, values in self.series.items():
            v = stats.get(k)
            if v is not None and math.isfinite(v):
                (self.recent if k == "langevin_move" else values).append(abs(v))
                self.peaks[k] = max(self.peaks[k], abs(v))
        if len(self.recent) > self.window:  # no verdicts (no checkpoints): keep the window
            self.moves.extend(self.recent)
            self.recent.clear()

    def verdict(self) -> str:
        """"" if a checkpoint may be written now, else why not (the same on every process)."""
        local = {}
        for k, values in self.series.items():
            full = len(values) == self.window
            local.update({f"{k}.full": float(full), f"{k}.peak": self.peaks[k],
                          f"{k}.median": statistics.median(values) if full else 0.0})
        s = dist.mean_over_ranks(local)
        self.peaks = dict.fromkeys(self.peaks, 0.0)
        why, self.high = [], set()
        for k, label in (("langevin_move", "the Langevin move"), ("f_gap", "|f(data) - f(syn)|")):
            peak, med = s[f"{k}.peak"], s[f"{k}.median"]
            high = s[f"{k}.full"] >= 1 and med > 0 and peak > self.factors[k] * med
            if high:
                self.high.add(k)
                why.append(f"{label} reached {peak:.3g}, {peak / med:.1f}x its median {med:.3g} "
                           f"over the last {self.window} steps")
            # The move's median is over its healthy intervals only; the gap's follows every
            # step, since a healthy gap may settle at a new level (at the limit G, say).
            if k == "langevin_move" and not high:
                self.moves.extend(self.recent)
        self.recent.clear()
        return " and ".join(why)


class Monitor:
    """Collects each step's stats on the device and reads them in one go when a log line,
    a checkpoint or the end is due: the divergence checks see every step, without a host
    synchronisation inside the loop."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.pending, self.watch = run_dir, [], MoveWatch()
        self.t0, self.last_ckpt = time.perf_counter(), None
        self.warned: dict[str, bool] = {}  # "stall", "collapse": warned once already
        self.spreads: list[tuple[int, float]] = []  # (step, latent_spread) at the checkpoints
        self.health: tuple[int, dict] | None = None  # (step, checkpoint_health) of the last one
        self.blown_up: int | None = None  # the step the move blew up at, since the last write

    def add(self, step: int, stats: dict) -> None:
        self.pending.append((step, stats))

    def flush(self) -> dict:
        """Check every pending step (raises TrainingDiverged); returns the last step's floats
        with ``sec_per_it`` averaged since the previous flush."""
        last = {}
        for step, stats in self.pending:
            last = floats(stats)
            check_finite(step, last, self.run_dir, self.last_ckpt)
            self.watch.add(last)
        now = time.perf_counter()
        if self.pending:
            last["sec_per_it"] = (now - self.t0) / len(self.pending)
        self.pending, self.t0 = [], now
        return last


def _finite_params(*modules) -> bool:
    return all(torch.isfinite(p).all() for m in modules for p in m.parameters())


def checkpoint_health(s: Session, mon: Monitor, step: int) -> dict:
    """generator_health of the trained generator at ``step``, its BatchNorm recalibrated: once
    per step, shared by the spread logged at a checkpoint and the checkpoint's own check."""
    if mon.health is None or mon.health[0] != step:
        gen = s.modules[1]
        recalibrate_batchnorm(gen, s.calib_z, s.cfg.num_chains)
        mon.health = (step, generator_health(gen, s.fixed_z))
    return mon.health[1]


def write_checkpoint(s: Session, run_dir: Path, step: int, mon: Monitor) -> None:
    """Recalibrate BatchNorm and write ``latest.pt`` (and a snapshot when one is due)."""
    des, gen = s.modules
    if not _finite_params(des, gen):
        check_finite(step, {"parameters": float("nan")}, run_dir, mon.last_ckpt)
    health = checkpoint_health(s, mon, step)  # (recalibrates the generator's BatchNorm)
    if s.ema is not None:
        recalibrate_batchnorm(s.ema, s.calib_z, s.cfg.num_chains)
    check_generator(s, step, run_dir, mon.last_ckpt, health)
    obj = {**checkpoint_dict(s, step), "watch": mon.watch.state_dict()}
    if dist.is_main():
        save_checkpoint(obj, run_dir / LATEST)
        # a snapshot when a multiple of snapshot_every lies in (the last checkpoint, step]: at the
        # multiple itself, or, if that checkpoint was held back, at the next one written
        every = s.cfg.snapshot_every
        if every and step // every > (mon.last_ckpt or 0) // every:
            snap = run_dir / f"ckpt-{step:06d}.pt"
            try:
                shutil.copyfile(run_dir / LATEST, snap)
            except OSError as e:
                snap.unlink(missing_ok=True)
                raise write_error(snap, e, f"{LATEST} (step {step}) was written") from None
    dist.barrier()
    mon.last_ckpt, mon.blown_up = step, None


def stall(s: Session, mon: Monitor) -> str:
    """Why a CoopNets run under the quadratic gap limit looks stalled, or "": the median |gap|
    of the last window of steps is at G or above and the generator's samples are all alike.
    Measured (docs/results.md "Stability"): mnist-cpu --gen-lr 1e-3 stalled with the gap at
    1.00 G and a per-pixel std over samples of 0.033; healthy runs 0.2..0.56."""
    gaps = mon.watch.series["f_gap"]
    cfg = s.cfg
    if (cfg.algorithm != "coop" or cfg.des_gap_limit <= 0 or cfg.des_gap_shape != "quadratic"
            or len(gaps) < mon.watch.window):
        return ""
    example = (s.channels, *([s.frames] if s.frames else []), s.size, s.size)
    limit = gap_limit(cfg, torch.empty((1, *example)))
    median = statistics.median(gaps)
    if median < STALL_GAP * limit:
        return ""
    spread = generator_health(s.modules[1], s.fixed_z)["diversity"]
    if not spread < MIN_SPREAD:  # NaN (one latent) never warns
        return ""
    return (f"the run may have stalled: |f(data) - f(syn)| has sat at the gap limit G = "
            f"{limit:.3g} (median {median / limit:.2f} G over the last {mon.watch.window} steps) "
            f"while the generator's samples are all alike (per-pixel std {spread:.2g}); "
            f"try --des-gap-shape wall, which leaves gaps under G to the paper's loss")


def latent_spread(s: Session, mon: Monitor, step: int) -> float | None:
    """The trained generator's spread over the fixed latents (generator_health), or None for
    a run without a generator or with one latent in its grid."""
    if s.cfg.algorithm == "descriptor" or len(s.fixed_z) < 2:
        return None
    spread = checkpoint_health(s, mon, step)["spread"]
    return spread if math.isfinite(spread) else None


def collapsed(s: Session, mon: Monitor, step: int) -> str:
    """Why the generator looks collapsed onto one picture, or "": past COLLAPSE_AFTER of the
    run, the median spread of the checkpoints in its last COLLAPSE_WINDOW (or of the last 3,
    if more) is under COLLAPSED_SPREAD. A warning, not a stop: a run can come back from it."""
    steps = s.cfg.steps
    recent = [r for at, r in mon.spreads if at > step - COLLAPSE_WINDOW * steps]
    recent = recent if len(recent) >= 3 else [r for _, r in mon.spreads[-3:]]
    if step < COLLAPSE_AFTER * steps or len(recent) < 3:
        return ""
    median = statistics.median(recent)
    if median >= COLLAPSED_SPREAD:
        return ""
    return (f"the generator may have collapsed: its samples from different latents differ by "
            f"{median:.2f} of their own contrast (median of the last {len(recent)} checkpoints; "
            f"healthy runs 0.5-0.9, videos 0.8-1.7), so they all look alike; try another --seed "
            f"or a lower --gen-lr (docs/results.md, Textures)")


def wrecked(mon: Monitor, now: float | None) -> str:
    """Why the generator looks wrecked by the blow-up of the move at ``mon.blown_up``, or "":
    its spread ``now`` is under WRECKED_SPREAD of its spread at the last checkpoint written.
    (Either spread unknown, e.g. a run without a generator: "".)"""
    before = dict(mon.spreads).get(mon.last_ckpt)
    if before is None or now is None or now >= WRECKED_SPREAD * before:
        return ""
    return (f"the generator's spread fell from {before:.2f} at step {mon.last_ckpt} to {now:.2f} "
            f"after the Langevin move blew up at step {mon.blown_up}, so the blow-up may have "
            f"wrecked it")


def hold_reason(s: Session, mon: Monitor, step: int) -> str:
    """Why no checkpoint may be written at ``step``, or "": the move or the gap far above their
    medians (MoveWatch), or, since a blow-up of the move, a generator it seems to have wrecked."""
    why = mon.watch.verdict()
    if "langevin_move" in mon.watch.high and mon.blown_up is None:
        mon.blown_up = step
    if not why and mon.blown_up is not None:
        why = wrecked(mon, latent_spread(s, mon, step))
    return why


def maybe_checkpoint(s: Session, run_dir: Path, step: int, mon: Monitor, log: RunLog) -> None:
    """Write a checkpoint unless the Langevin move says a blow-up has begun, or, after one, the
    generator's spread says it wrecked the generator (the final one is always written, with a
    warning). Warns once when the run looks stalled, and once when its generator looks
    collapsed."""
    for kind, why in (("stall", not mon.warned.get("stall") and stall(s, mon)),
                      ("collapse", not mon.warned.get("collapse") and collapsed(s, mon, step))):
        if why:
            log.text(f"warning: step {step}: {why}")
            if dist.is_main():
                tqdm.write(f"warning: step {step}: {why}", file=sys.stderr)  # above the progress bar
            mon.warned[kind] = True
    why = hold_reason(s, mon, step)
    if why and step < s.cfg.steps:
        log.text(f"step {step}: checkpoint held back because {why}; latest.pt stays at step "
                 f"{mon.last_ckpt}")
        return
    if why:
        log.text(f"warning: the final checkpoint is written although {why}")
    write_checkpoint(s, run_dir, step, mon)


@torch.no_grad()
def _decode(gen, z):
    was = gen.training
    gen.eval()
    x = gen(z).float()
    gen.train(was)
    return x


def _save_samples(x: torch.Tensor, path: Path) -> None:
    """A PNG grid of images, or for videos (5-D) a GIF and a PNG strip of frames."""
    if x.dim() == 5:
        from .video import save_video_samples
        save_video_samples(x, path.with_suffix(""))
    else:
        save_grid(x, path)


def save_progress(s: Session, run_dir: Path, step: int) -> None:
    """Sample grids from the fixed latent batch: generator alone and after revision (Algorithm
    D: its latest chains); video runs write animations and frame strips."""
    cfg, (des, gen), tag = s.cfg, s.modules, f"{step:06d}"
    if cfg.algorithm in CHAIN_ALGORITHMS:
        chains = s.state.get("chains")
        chains = chains if chains is not None else s.samples.get("x_syn")
        if chains is not None:
            _save_samples(chains[: cfg.grid_size], run_dir / f"samples-des-{tag}.png")
        return
    gen = s.ema if s.ema is not None else gen  # the generator the run samples with
    recalibrate_batchnorm(gen, s.calib_z, cfg.num_chains)
    x_gen = _decode(gen, s.fixed_z)
    _save_samples(x_gen, run_dir / f"samples-gen-{tag}.png")
    if cfg.algorithm == "coop":
        rng = ExampleRNG(stream_seed(cfg.seed, "grid_revision"), range(len(s.fixed_z)), s.device)
        x_rev = revise(des, x_gen, ref_std=cfg.ref_std, steps=cfg.des_steps,
                       step_size=cfg.des_step_size, noise=cfg.des_noise_level, rng=rng)
        _save_samples(x_rev, run_dir / f"samples-rev-{tag}.png")
    elif cfg.algorithm == "ggcn":  # the hidden-space chains from the fixed latents, decoded
        rng = ExampleRNG(stream_seed(cfg.seed, "grid_revision"), range(len(s.fixed_z)), s.device)
        _save_samples(particle_samples(des, gen, s.fixed_z, cfg, rng), run_dir / f"samples-rev-{tag}.png")


def _due(done: int, every: int, last: int) -> bool:
    return done == last or bool(every and done % every == 0)


def _postfix(stats: dict) -> str:
    names = {"f_gap": "f(data)-f(syn)", "langevin_move": "move", "gen_loss": "gen",
             "sec_per_it": "s/it"}
    return " ".join(f"{names[k]} {stats[k]:.3g}" for k in names if k in stats)


def load_training_images(cfg: Config) -> torch.Tensor:
    """The training set as uint8 (N, C, H, W) (videos: (N, C, T, H, W)), after the checks a
    config needs against it."""
    if cfg.algorithm == "abp" and (cfg.crop_size or cfg.crop_frames):
        raise UserError("--algorithm abp keeps one latent per training example; use --crop-size 0"
                        " and --crop-frames 0")
    from .video import is_video_path, load_videos
    if cfg.data_kind == "video" or (cfg.data_kind == "auto" and is_video_path(cfg.data)):
        images = load_videos(cfg.data, cfg.frames, cfg.frame_start, cfg.frame_stride,
                             cfg.image_size, cfg.center_crop, cfg.channels, cfg.data_key)
    else:
        images = load_images(cfg.data, cfg.data_kind, cfg.image_size, cfg.center_crop,
                             cfg.channels, cfg.subset, cfg.data_key)
    n, world = len(images), dist.world()
    if 1 < n < cfg.batch_size * world:  # (one image, a texture, is drawn with replacement)
        each = f" per process x {world} processes" if world > 1 else ""
        what = "videos" if images.dim() == 5 else "images"
        raise UserError(f"--batch-size {cfg.batch_size}{each} is more than the {n} training {what}; "
                        f"use --batch-size {max(1, n // world)} or less")
    return images


def open_run(s: Session, run_dir: Path, start: int, n_images: int, resuming: bool,
             data_id: dict) -> RunLog:
    """Create the run folder, record config.json and data.json (a resumed run's are only
    rewritten by a compatible config: the absolute data path, a new --steps), remove temp
    files a killed write left, and open the logs (main process writes)."""
    stale, changes = [], ""
    if dist.is_main():
        if resuming and (got := _saved_run(run_dir)):  # (the checkpoint's if config.json is torn)
            saved, mine = got[0], dataclasses.asdict(s.cfg)
            changes = describe_differences(saved, mine, resume_changes(saved, mine))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(s.cfg, run_dir / "config.json")
            (run_dir / DATA_FILE).write_text(json.dumps(data_id, indent=2) + "\n")
        except OSError as e:
            raise write_error(run_dir, e) from None
        stale = remove_stale_temp_files(run_dir)
    dist.barrier()
    log = RunLog(run_dir, dist.is_main(), start if resuming else None)
    log.text(f"{'resumed at step ' + str(start) if resuming else 'started'}: {run_dir} on {s.device}, "
             f"{dist.world()} process(es), {n_images} {'videos' if s.frames else 'images'} "
             f"{s.channels}x{str(s.frames) + 'x' if s.frames else ''}{s.size}x{s.size}, "
             f"torch {torch.__version__}")
    if changes:  # e.g. a longer run, or a slower moving average from here on
        log.text(f"changed at the resume: {changes}")
    if stale:
        log.text(f"removed {len(stale)} temp file(s) of an interrupted checkpoint write")
    if log.trimmed:
        log.text(f"dropped {log.trimmed} stats.jsonl row(s) after step {start}, the checkpoint's")
    return log


def step_nets(s: Session) -> Nets:
    """The session's networks as a step uses them: compiled (``--compile``), DDP-wrapped under
    torchrun, with a CUDA-graphed revision (``--cuda-graphs``). Checkpoints keep using the plain
    modules, which share the parameters."""
    cfg, des, gen = s.cfg, *s.modules
    des, gen = fast.compile_module(des, cfg.compile), fast.compile_module(gen, cfg.compile)
    reviser = None
    if cfg.cuda_graphs and s.device.type == "cuda" and cfg.algorithm != "abp":
        reviser = fast.GraphedRevision(des, ref_std=cfg.ref_std, steps=cfg.des_steps,
                                       step_size=cfg.des_step_size, noise=cfg.des_noise_level,
                                       autocast=amp_context(cfg, s.device, "langevin"))
    return Nets(dist.wrap(des, s.device), dist.wrap(gen, s.device), s.nets.opt_des,
                s.nets.opt_gen, s.nets.latent_shape, reviser)


class Signals:
    """SIGINT (Ctrl-C) and SIGTERM (what schedulers send) during the loop: remembered, and the
    loop stops after the current step; a second one stops at once, without saving. Installed
    only from the main thread (Python delivers signals there)."""

    def __init__(self):
        self.signum, self._old = 0, {}

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup, a background job: leave
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise Interrupted(signum, f"stopped by a second {signal_name(signum)} in the middle "
                                      "of a step; nothing more was saved")
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def pending(self, due: bool = True) -> int:
        """The signal to stop for, agreed on by every process (0: none). Under torchrun the
        agreement is an all-reduce, so it is made only at steps that synchronise anyway
        (``due``: a log line or checkpoint); a single process answers at every step."""
        if dist.world() == 1:
            return self.signum
        if not due:
            return 0
        got = dist.mean_over_ranks({"sig": float(self.signum)})["sig"]
        return self.signum or (int(signal.SIGTERM) if got > 0 else 0)


def stop_for_signal(s: Session, run_dir: Path, step: int, mon: Monitor, signum: int) -> Interrupted:
    """Save a checkpoint at ``step`` unless the run is unhealthy or already drifting; returns
    the Interrupted to raise, whose message says what was kept."""
    mon.flush()  # every step since the last check: raises TrainingDiverged if one is bad
    why = hold_reason(s, mon, step)
    if why:
        kept = f"checkpoint held back because {why}; latest.pt stays at step {mon.last_ckpt or 0}"
    elif mon.last_ckpt != step:
        write_checkpoint(s, run_dir, step, mon)
        kept = f"latest.pt saved at step {step}"
    else:
        kept = f"latest.pt is at step {step}"
    return Interrupted(signum, f"stopped by {signal_name(signum)} at step {step}; {kept}; "
                               "run the same command again to resume")


def choose_run(cfg: Config, run_dir, new_run: bool) -> tuple[Config, Path, dict]:
    """(config with the data path made absolute, the run folder, the data identity): the
    folder to resume or start, refused in one line when it would mix runs up or cannot be
    written; all before the data are loaded."""
    given, data_id = cfg.data, data_identity(cfg.data)
    cfg = dataclasses.replace(cfg, data=data_id["path"] if data_id["fingerprint"] else cfg.data)
    if run_dir:
        run_dir = Path(run_dir).expanduser().absolute()
        check_run_dir(run_dir, cfg, data_id, given)
    else:
        run_dir = find_run_dir(cfg, new_run, data_id, given)
    if dist.is_main():
        check_writable(run_dir)
    return cfg, run_dir, data_id


# ---- the loop -----------------------------------------------------------------------------------
def train(cfg: Config, run_dir: str | Path | None = None, new_run: bool = False) -> Path:
    """Train (or resume) a run; returns its folder. Raises UserError (bad input, a run that
    cannot resume, a failed write), TrainingDiverged, or Interrupted (SIGINT/SIGTERM, after
    saving)."""
    device = dist.init(cfg.device)
    fast.configure_device(cfg, device)
    rank, world = dist.rank(), dist.world()
    cfg, run_dir, data_id = choose_run(cfg, run_dir, new_run)
    ckpt = load_checkpoint(run_dir) if (run_dir / LATEST).is_file() else None
    start = ckpt["step"] if ckpt else 0
    if start >= cfg.steps:  # nothing to train, so no data to load: leave the folder as it
        # is, so that config.json keeps the --steps it ran to, not a lower one
        msg = f"run already at step {start} of {cfg.steps}; raise --steps to continue"
        if dist.is_main():
            print(msg)
        return run_dir
    images = load_training_images(cfg)
    if images.dim() == 5:
        from .video import VideoBatches
        batches = VideoBatches(images, cfg.batch_size, cfg.seed, cfg.crop_size, cfg.crop_frames)
    else:
        batches = Batches(images, cfg.batch_size, cfg.seed, cfg.crop_size)
    s = build_session(cfg, images, device)
    if dist.is_main():
        check_space(s, run_dir)
    # a resume: a config.json, or a latest.pt whose config stood in for a torn one
    resuming = ckpt is not None or (run_dir / "config.json").is_file()
    note = restore(s, ckpt) if ckpt else ""
    log = open_run(s, run_dir, start, len(images), resuming, data_id)
    if note:
        log.text(f"note: {note}")
    mon, step_fn = Monitor(run_dir), STEPS[cfg.algorithm]
    mon.last_ckpt = start or None
    if start:
        mon.watch.load_state_dict(ckpt.get("watch"))
    nets = step_nets(s)
    if (why := fast.describe(cfg, device)):
        log.text(f"fast path: {why}")
    if (precision := fast.describe_amp(cfg, device)):
        log.text(precision)
        if precision.startswith("warning") and dist.is_main():
            print(precision, file=sys.stderr)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    show = dist.is_main() and cfg.progress
    plain = show and not sys.stderr.isatty()  # off a terminal: a plain line per log step
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=run_dir.name,
               disable=not show or plain, dynamic_ncols=True)
    try:
        with Signals() as signals:
            for step in bar:
                set_learning_rates(s, step)
                index = batches.indices(step, rank, world)  # one permutation draw per step
                batch = Batch(batches.batch(step, rank, world, index).to(device, memory_format=fmt), index)
                result = step_fn(nets, batch, s.state, cfg, s.rng)
                s.state, s.samples, done = result.state, result.samples, step + 1
                if s.ema is not None:
                    update_ema(s.ema, s.modules[1], ema_decay(cfg.gen_ema, step))
                mon.add(done, result.stats)
                log_due, ckpt_due = _due(done, cfg.log_every, cfg.steps), _due(done, cfg.ckpt_every, cfg.steps)
                if log_due or ckpt_due:
                    stats = mon.flush()
                    if ckpt_due and (spread := latent_spread(s, mon, done)) is not None:
                        stats["gen_spread"] = spread
                        mon.spreads.append((done, spread))
                    if log_due:
                        stats = dist.mean_over_ranks(stats)
                        log.stats(done, stats)
                        log.text(f"step {done}: " + "  ".join(f"{k} {v:.4g}" for k, v in stats.items()))
                        bar.set_postfix_str(_postfix(stats))
                        if plain:
                            print(f"{run_dir.name} step {done}/{cfg.steps}  {_postfix(stats)}",
                                  file=sys.stderr, flush=True)
                if dist.is_main() and cfg.sample_every and _due(done, cfg.sample_every, cfg.steps):
                    save_progress(s, run_dir, done)
                if ckpt_due:
                    maybe_checkpoint(s, run_dir, done, mon, log)
                if done < cfg.steps and (signum := signals.pending(log_due or ckpt_due)):
                    raise stop_for_signal(s, run_dir, done, mon, signum)
    except Interrupted as e:
        log.stop(str(e))
        raise
    except (TrainingDiverged, UserError) as e:
        log.stop(f"stopped: {e}")
        raise
    except KeyboardInterrupt:  # a Ctrl-C outside the loop's handler (another thread's train())
        log.stop(f"stopped: interrupted; latest.pt is at step {mon.last_ckpt or 0}; run the "
                 "same command again to resume")
        raise
    finally:
        bar.close()
        log.close()
    log.stop(f"finished: step {cfg.steps} of {cfg.steps}; latest.pt is at step {mon.last_ckpt}")
    return run_dir
