"""The training loop: data -> session (nets, optimisers, RNG, state) -> for each step:
``STEPS[cfg.algorithm](...)`` -> monitor, log, grids, checkpoint. To resume, run the same
command again.

A run is a numbered folder ``runs/00012-coop-mnist/`` with ``config.json``, ``log.txt``,
``stats.jsonl``, TensorBoard events, ``samples-*.png`` grids from a fixed latent batch, and
``latest.pt``. A new ``train`` call with the same configuration (fields in
``config.RESUME_IGNORES`` such as ``steps`` may differ) continues the latest such run.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed as dist
from .algorithms import STEPS, Batch, Nets, floats, unwrap
from .checkpoint import LATEST, config_dict, load_checkpoint, save_checkpoint
from .config import Config, save_config, same_run
from .data import Batches, load_images
from .errors import TrainingDiverged, UserError
from .images import save_grid
from .langevin import revise
from .models import ARCH_VERSION, build_nets, recalibrate_batchnorm
from .particle import FROZEN_FILTERS, freeze_filters
from .particle import revised as particle_samples
from .seeding import ExampleRNG, generator, stream_seed, sub_seed

RUN_RE = re.compile(r"^(\d{5})-")
CHAIN_ALGORITHMS = ("descriptor", "frame", "wframe", "wgcn")  # samples are the descriptor's chains
MAX_MOVE = 100.0  # an RMS Langevin move of 100 per pixel (pixels in [-1, 1]) is divergence


# ---- run folders and logs --------------------------------------------------------------------
def run_name(cfg: Config) -> str:
    tag = cfg.preset or Path(cfg.data).stem or "run"
    return f"{cfg.algorithm}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}"


def find_run_dir(cfg: Config, new_run: bool = False) -> Path:
    """The latest run folder in ``cfg.outdir`` with the same configuration, or a new one."""
    out = Path(cfg.outdir)
    runs = sorted((p for p in out.glob("*") if p.is_dir() and RUN_RE.match(p.name)), reverse=True)
    if not new_run:
        mine = config_dict(cfg)
        for p in runs:
            try:
                saved = json.loads((p / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if same_run(saved, mine):
                return p
    number = int(RUN_RE.match(runs[0].name).group(1)) + 1 if runs else 0
    return out / f"{number:05d}-{run_name(cfg)}"


class RunLog:
    """log.txt for people, stats.jsonl for machines, TensorBoard for both (main process)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled, self.run_dir, self.tb = enabled, run_dir, None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir))

    def text(self, line: str) -> None:
        if self.enabled:
            with open(self.run_dir / "log.txt", "a") as fh:
                fh.write(line + "\n")

    def stats(self, step: int, stats: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "stats.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **{k: round(v, 6) for k, v in stats.items()}}) + "\n")
        if self.tb:
            for k, v in stats.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


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

    @property
    def modules(self):
        return unwrap(self.nets.des), unwrap(self.nets.gen)


def build_session(cfg: Config, images: torch.Tensor, device: torch.device) -> Session:
    """Fresh networks (weights a function of the seed), Adam optimisers and initial state."""
    channels, size = images.shape[1], cfg.crop_size or images.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "weights"))
        des, gen = (m.to(device) for m in build_nets(cfg, channels))
    if cfg.algorithm in FROZEN_FILTERS:  # FRAME, wFRAME: a fixed filter bank, learned top layer
        freeze_filters(des)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    des, gen = des.to(memory_format=fmt), gen.to(memory_format=fmt)
    latent_shape = gen.latent_shape(size)
    des(torch.zeros(1, channels, size, size, device=device))  # size check, one clear error
    nets = Nets(des, gen,
                torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(cfg.des_beta1, 0.999)),
                torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, 0.999)),
                latent_shape)
    state: dict = {"chains": None, "latents": None}
    if cfg.algorithm == "abp":  # one persistent latent per training example (warm starts)
        state["latents"] = torch.randn((len(images), *latent_shape),
                                       generator=generator(stream_seed(cfg.seed, "abp_latents")))
    fixed_z = torch.randn((cfg.grid_size, *latent_shape),
                          generator=generator(stream_seed(cfg.seed, "fixed_latents"))).to(device)
    calib_z = torch.randn((max(4 * cfg.num_chains, 256), *latent_shape),
                          generator=generator(stream_seed(cfg.seed, "bn_calibration"))).to(device)
    rng = generator(cfg.seed * dist.world() + dist.rank(), device)
    return Session(cfg, device, nets, rng, state, fixed_z, calib_z, channels, size)


def checkpoint_dict(s: Session, step: int) -> dict:
    """What ``latest.pt`` holds; every tensor on the CPU. (Call on every process: under DDP
    the noise generators' states are gathered from all ranks.)"""
    des, gen = s.modules
    rngs = [s.rng.get_state()]
    if dist.world() > 1:
        rngs = [None] * dist.world()
        torch.distributed.all_gather_object(rngs, s.rng.get_state().cpu())
    return {"config": config_dict(s.cfg), "step": step, "arch_version": ARCH_VERSION,
            "channels": s.channels, "image_size": s.size,
            "descriptor": des.state_dict(), "generator": gen.state_dict(),
            "opt_des": s.nets.opt_des.state_dict(), "opt_gen": s.nets.opt_gen.state_dict(),
            "rng": rngs, "rng_device": s.device.type,
            "state": {k: (v.cpu() if v is not None else None) for k, v in s.state.items()}}


def restore(s: Session, ckpt: dict) -> str:
    """Load a checkpoint into the session, whatever device it was written on. Returns a note
    for the log when the noise stream had to be re-derived."""
    des, gen = s.modules
    des.load_state_dict(ckpt["descriptor"])
    gen.load_state_dict(ckpt["generator"])
    s.nets.opt_des.load_state_dict(ckpt["opt_des"])  # Adam moves its state to the parameters
    s.nets.opt_gen.load_state_dict(ckpt["opt_gen"])
    s.state = {k: (v.to(s.device) if k == "chains" and v is not None else v)
               for k, v in ckpt["state"].items()}
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
    """The linear learning-rate schedule: 1 at step 0, ``lr_final`` at the last step."""
    return 1.0 - (1.0 - cfg.lr_final) * step / max(1, cfg.steps - 1)


def set_learning_rates(s: Session, step: int) -> None:
    frac = lr_factor(s.cfg, step)
    for opt, lr in ((s.nets.opt_des, s.cfg.des_lr), (s.nets.opt_gen, s.cfg.gen_lr)):
        for group in opt.param_groups:
            group["lr"] = lr * frac


# ---- health -------------------------------------------------------------------------------------
def check_finite(step: int, stats: dict, run_dir: Path, last_ckpt: int | None) -> None:
    """Raise TrainingDiverged when a stat is NaN/inf or the Langevin move exceeds MAX_MOVE."""
    bad = {k: v for k, v in stats.items()
           if not math.isfinite(v) or (k == "langevin_move" and v > MAX_MOVE)}
    if bad:
        kept = (f"the last good checkpoint (step {last_ckpt}) is kept in {run_dir / LATEST}"
                if last_ckpt is not None else "no checkpoint was written")
        raise TrainingDiverged(
            f"training diverged at step {step} ({', '.join(f'{k} = {v}' for k, v in bad.items())}); "
            f"{kept}; lower --des-lr or --des-step-size, or raise --ref-std, and run again")


class MoveWatch:
    """Holds checkpoints back at the start of a blow-up.

    A diverging CoopNets run shows it first in the Langevin move: it climbs to many times its
    usual size for tens of steps before anything is NaN or above MAX_MOVE. A checkpoint is
    written only if the largest move since the previous one is at most ``factor`` times the
    median move of the last ``window`` steps, so that ``latest.pt`` keeps the last healthy
    state; a passing spike only delays the next checkpoint. Runs without Langevin moves
    (Algorithm G) and the first ``window`` steps after a (re)start are not gated.
    """

    def __init__(self, window: int = 200, factor: float = 4.0):
        self.moves: deque = deque(maxlen=window)
        self.factor, self.peak = factor, 0.0

    def add(self, stats: dict) -> None:
        move = stats.get("langevin_move")
        if move is not None and math.isfinite(move):
            self.moves.append(move)
            self.peak = max(self.peak, move)

    def verdict(self) -> str:
        """"" if a checkpoint may be written now, else why not (the same on every process)."""
        full = len(self.moves) == self.moves.maxlen
        med = statistics.median(self.moves) if full else 0.0
        s = dist.mean_over_ranks({"full": float(full), "median": med, "peak": self.peak})
        self.peak = 0.0
        if s["full"] < 1 or s["peak"] <= self.factor * s["median"]:
            return ""
        return (f"the Langevin move reached {s['peak']:.3g}, {s['peak'] / s['median']:.1f}x its "
                f"median {s['median']:.3g} over the last {self.moves.maxlen} steps")


class Monitor:
    """Collects each step's stats on the device and reads them in one go when a log line,
    a checkpoint or the end is due: the divergence checks see every step, without a host
    synchronisation inside the loop."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.pending, self.watch = run_dir, [], MoveWatch()
        self.t0, self.last_ckpt = time.perf_counter(), None

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


def write_checkpoint(s: Session, run_dir: Path, step: int, mon: Monitor) -> None:
    """Recalibrate BatchNorm and write ``latest.pt`` (and a snapshot when due)."""
    des, gen = s.modules
    if not _finite_params(des, gen):
        check_finite(step, {"parameters": float("nan")}, run_dir, mon.last_ckpt)
    recalibrate_batchnorm(gen, s.calib_z, s.cfg.num_chains)
    obj = checkpoint_dict(s, step)
    if dist.is_main():
        save_checkpoint(obj, run_dir / LATEST)
        if s.cfg.snapshot_every and step % s.cfg.snapshot_every == 0:
            shutil.copyfile(run_dir / LATEST, run_dir / f"ckpt-{step:06d}.pt")
    dist.barrier()
    mon.last_ckpt = step


def maybe_checkpoint(s: Session, run_dir: Path, step: int, mon: Monitor, log: RunLog) -> None:
    """Write a checkpoint unless the Langevin move says a blow-up has begun (the final one is
    always written, with a warning)."""
    why = mon.watch.verdict()
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


def save_progress(s: Session, run_dir: Path, step: int) -> None:
    """Sample grids from the fixed latent batch: generator alone and after revision (Algorithm
    D: its latest chains)."""
    cfg, (des, gen), tag = s.cfg, s.modules, f"{step:06d}"
    if cfg.algorithm in CHAIN_ALGORITHMS:
        chains = s.state.get("chains")
        chains = chains if chains is not None else s.samples.get("x_syn")
        if chains is not None:
            save_grid(chains[: cfg.grid_size], run_dir / f"samples-des-{tag}.png")
        return
    recalibrate_batchnorm(gen, s.calib_z, cfg.num_chains)
    x_gen = _decode(gen, s.fixed_z)
    save_grid(x_gen, run_dir / f"samples-gen-{tag}.png")
    if cfg.algorithm == "coop":
        rng = ExampleRNG(stream_seed(cfg.seed, "grid_revision"), range(len(s.fixed_z)), s.device)
        x_rev = revise(des, x_gen, ref_std=cfg.ref_std, steps=cfg.des_steps,
                       step_size=cfg.des_step_size, noise=cfg.des_noise, rng=rng)
        save_grid(x_rev, run_dir / f"samples-rev-{tag}.png")
    elif cfg.algorithm == "ggcn":  # the hidden-space chains from the fixed latents, decoded
        rng = ExampleRNG(stream_seed(cfg.seed, "grid_revision"), range(len(s.fixed_z)), s.device)
        save_grid(particle_samples(des, gen, s.fixed_z, cfg, rng), run_dir / f"samples-rev-{tag}.png")


def _due(done: int, every: int, last: int) -> bool:
    return done == last or bool(every and done % every == 0)


def _postfix(stats: dict) -> str:
    names = {"f_gap": "f(data)-f(syn)", "langevin_move": "move", "gen_loss": "gen",
             "sec_per_it": "s/it"}
    return " ".join(f"{names[k]} {stats[k]:.3g}" for k in names if k in stats)


def load_training_images(cfg: Config) -> torch.Tensor:
    """The training set as uint8 (N, C, H, W), after the checks a config needs against it."""
    if cfg.algorithm == "abp" and cfg.crop_size:
        raise UserError("--algorithm abp keeps one latent per training image; use --crop-size 0")
    return load_images(cfg.data, cfg.data_kind, cfg.image_size, cfg.center_crop, cfg.channels,
                       cfg.subset, cfg.data_key)


def open_run(s: Session, run_dir: Path, start: int, n_images: int) -> RunLog:
    """Create the run folder, save config.json and open the logs (main process writes)."""
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(s.cfg, run_dir / "config.json")
    dist.barrier()
    log = RunLog(run_dir, dist.is_main())
    log.text(f"{'resumed at step ' + str(start) if start else 'started'}: {run_dir} on {s.device}, "
             f"{dist.world()} process(es), {n_images} images {s.channels}x{s.size}x{s.size}, "
             f"torch {torch.__version__}")
    return log


# ---- the loop -----------------------------------------------------------------------------------
def train(cfg: Config, run_dir: str | Path | None = None, new_run: bool = False) -> Path:
    """Train (or resume) a run; returns its folder."""
    device = dist.init(cfg.device)
    rank, world = dist.rank(), dist.world()
    images = load_training_images(cfg)
    batches = Batches(images, cfg.batch_size, cfg.seed, cfg.crop_size)
    s = build_session(cfg, images, device)
    run_dir = Path(run_dir) if run_dir else find_run_dir(cfg, new_run)
    start, note = 0, ""
    if (run_dir / LATEST).is_file():
        ckpt = load_checkpoint(run_dir)
        note, start = restore(s, ckpt), ckpt["step"]
    log = open_run(s, run_dir, start, len(images))
    if note:
        log.text(f"note: {note}")
    mon, step_fn = Monitor(run_dir), STEPS[cfg.algorithm]
    mon.last_ckpt = start or None
    nets = Nets(dist.wrap(s.nets.des, device), dist.wrap(s.nets.gen, device), s.nets.opt_des,
                s.nets.opt_gen, s.nets.latent_shape)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    show = dist.is_main() and cfg.progress
    plain = show and not sys.stderr.isatty()  # off a terminal: a plain line per log step
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=run_dir.name,
               disable=not show or plain, dynamic_ncols=True)
    try:
        for step in bar:
            set_learning_rates(s, step)
            index = batches.indices(step, rank, world)  # one permutation draw per step
            batch = Batch(batches.batch(step, rank, world, index).to(device, memory_format=fmt), index)
            result = step_fn(nets, batch, s.state, cfg, s.rng)
            s.state, s.samples, done = result.state, result.samples, step + 1
            mon.add(done, result.stats)
            log_due, ckpt_due = _due(done, cfg.log_every, cfg.steps), _due(done, cfg.ckpt_every, cfg.steps)
            if log_due or ckpt_due:
                stats = mon.flush()
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
    except KeyboardInterrupt:
        log.text(f"interrupted; resume from step {mon.last_ckpt or 0} with the same command")
        raise
    finally:
        bar.close()
        log.close()
    if start >= cfg.steps and dist.is_main():
        msg = f"run already at step {start} of {cfg.steps}; raise --steps to continue"
        log.text(msg)
        print(msg)
    return run_dir
