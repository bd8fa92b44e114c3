"""The training loop: data -> nets -> (DDP) -> for step: stats = step_fn(...) -> log, grids,
checkpoint. To resume, run the same command again.

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
import time
from collections import deque
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed as dist
from .algorithms import abp_step, coop_step, descriptor_chain_start, descriptor_step, unwrap
from .checkpoint import LATEST, build_nets, config_dict, load_checkpoint, save_checkpoint
from .config import Config, save_config, same_run
from .data import Batches, load_images
from .errors import TrainingDiverged, UserError
from .images import save_grid
from .langevin import ExampleRNG, descriptor_log_prob, langevin
from .nets import ARCH_VERSION, recalibrate_batchnorm

RUN_RE = re.compile(r"^(\d{5})-")


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
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir))
            except ImportError:  # tensorboard is a dependency, but keep training without it
                self.tb = None

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


MAX_MOVE = 100.0  # an RMS Langevin move of 100 per pixel (pixels in [-1, 1]) is divergence


def _check_finite(step: int, stats: dict, run_dir: Path, last_ckpt: int | None) -> None:
    bad = {k: v for k, v in stats.items()
           if not math.isfinite(v) or (k == "langevin_move" and v > MAX_MOVE)}
    if bad:
        kept = (f"the last good checkpoint (step {last_ckpt}) is kept in {run_dir / LATEST}"
                if last_ckpt is not None else "no checkpoint was written")
        raise TrainingDiverged(
            f"training diverged at step {step} ({', '.join(f'{k} = {v}' for k, v in bad.items())}); "
            f"{kept}; lower --des-lr or --des-step-size, or raise --des-refsig, and run again")


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


def _finite_params(*modules) -> bool:
    return all(torch.isfinite(p).all() for m in modules for p in m.parameters())


@torch.no_grad()
def _decode(gen, z):
    was = gen.training
    gen.eval()
    x = gen(z).float()
    gen.train(was)
    return x


def save_progress(run_dir, step, cfg, des, gen, fixed_z, chains=None):
    """Sample grids from the fixed latent batch: generator alone and after revision."""
    tag = f"{step:06d}"
    if cfg.algorithm == "descriptor":
        if chains is not None:
            save_grid(chains[: cfg.grid_size], run_dir / f"samples-des-{tag}.png")
        return
    x_gen = _decode(gen, fixed_z)
    save_grid(x_gen, run_dir / f"samples-gen-{tag}.png")
    if cfg.algorithm == "coop":
        rng = ExampleRNG(cfg.seed + 1, range(len(fixed_z)), fixed_z.device)
        x_rev = langevin(descriptor_log_prob(des, cfg.des_refsig), x_gen, cfg.des_steps,
                         cfg.des_step_size, cfg.des_noise, rng)
        save_grid(x_rev, run_dir / f"samples-rev-{tag}.png")


def train(cfg: Config, run_dir: str | Path | None = None, new_run: bool = False) -> Path:
    """Train (or resume) a run; returns its folder."""
    device = dist.init(cfg.device)
    rank, world = dist.rank(), dist.world()
    main = dist.is_main()

    # ---- data -------------------------------------------------------------------------
    images = load_images(cfg.data, cfg.data_kind, cfg.image_size, cfg.center_crop,
                         cfg.channels, cfg.subset, cfg.data_key)  # (N, C, H, W) uint8
    if cfg.algorithm == "abp" and cfg.crop_size:
        raise UserError("--algorithm abp keeps one latent per training image; use --crop-size 0")
    batches = Batches(images, cfg.batch_size, cfg.seed, cfg.crop_size)
    channels, size = images.shape[1], cfg.crop_size or images.shape[-1]

    # ---- networks, optimisers, state ------------------------------------------------------
    with torch.random.fork_rng(devices=[]):  # initial weights are a function of the seed
        torch.manual_seed(cfg.seed)
        des, gen = (m.to(device) for m in build_nets(cfg, channels))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    des, gen = des.to(memory_format=fmt), gen.to(memory_format=fmt)
    latent_shape = gen.latent_shape(size)
    des(torch.zeros(1, channels, size, size, device=device))  # size check, one clear error
    opt_des = torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(cfg.des_beta1, 0.999))
    opt_gen = torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, 0.999))
    rng = torch.Generator(device).manual_seed(cfg.seed * world + rank)
    fixed_z = torch.randn((cfg.grid_size, *latent_shape),
                          generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    state: dict = {"chains": None, "latents": None}
    if cfg.algorithm == "abp":  # one persistent latent per training example (warm starts)
        state["latents"] = torch.randn((len(images), *latent_shape),
                                       generator=torch.Generator().manual_seed(cfg.seed))

    run_dir = Path(run_dir) if run_dir else find_run_dir(cfg, new_run)
    start, last_ckpt = 0, None
    if (run_dir / LATEST).is_file():
        ckpt = load_checkpoint(run_dir)  # on the CPU; load_state_dict moves it
        des.load_state_dict(ckpt["descriptor"])
        gen.load_state_dict(ckpt["generator"])
        opt_des.load_state_dict(ckpt["opt_des"])
        opt_gen.load_state_dict(ckpt["opt_gen"])
        if rank < len(ckpt["rng"]):  # a run resumed on more processes seeds the new ones fresh
            rng.set_state(ckpt["rng"][rank])
        state = {k: (v.to(device) if k == "chains" and v is not None else v)
                 for k, v in ckpt["state"].items()}
        start = last_ckpt = ckpt["step"]
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
    dist.barrier()
    log = RunLog(run_dir, main)
    log.text(f"{'resumed at step ' + str(start) if start else 'started'}: {run_dir} "
             f"on {device}, {world} process(es), {len(images)} images {channels}x{size}x{size}, "
             f"torch {torch.__version__}")
    des_t, gen_t = dist.wrap(des, device), dist.wrap(gen, device)

    calib_z = torch.randn((max(4 * cfg.num_chains, 256), *latent_shape),
                          generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)

    def checkpoint(step):
        if not _finite_params(des, gen):
            _check_finite(step, {"parameters": float("nan")}, run_dir, last_ckpt)
        recalibrate_batchnorm(gen, calib_z, cfg.num_chains)
        rngs = [rng.get_state()]
        if world > 1:
            rngs = [None] * world
            torch.distributed.all_gather_object(rngs, rng.get_state().cpu())
        if main:
            obj = {"config": config_dict(cfg), "step": step, "arch_version": ARCH_VERSION,
                   "channels": channels,
                   "image_size": size, "descriptor": des.state_dict(),
                   "generator": gen.state_dict(), "opt_des": opt_des.state_dict(),
                   "opt_gen": opt_gen.state_dict(), "rng": rngs,
                   "state": {k: (v.cpu() if v is not None else None) for k, v in state.items()}}
            save_checkpoint(obj, run_dir / LATEST)
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                shutil.copyfile(run_dir / LATEST, run_dir / f"ckpt-{step:06d}.pt")
        dist.barrier()

    # ---- loop ---------------------------------------------------------------------------
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=run_dir.name,
               disable=not (main and cfg.progress), dynamic_ncols=True)
    t_last, window, watch = time.perf_counter(), [], MoveWatch()
    try:
        for step in bar:
            frac = 1.0 - (1.0 - cfg.lr_final) * step / max(1, cfg.steps - 1)
            for opt, lr in ((opt_des, cfg.des_lr), (opt_gen, cfg.gen_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr * frac
            x_obs = batches.batch(step, rank, world).to(device, memory_format=fmt)  # (B, C, H, W)
            if cfg.algorithm == "coop":
                stats, _, _ = coop_step(des_t, gen_t, opt_des, opt_gen, x_obs, cfg,
                                        latent_shape, rng)
            elif cfg.algorithm == "descriptor":
                x_init = descriptor_chain_start(cfg, x_obs, state["chains"], rng)
                x_syn, stats = descriptor_step(des_t, opt_des, x_obs, x_init, cfg, rng)
                state["chains"] = x_syn if cfg.des_init == "persistent" else x_syn[: cfg.grid_size]
            else:
                idx = batches.indices(step, rank, world)
                z, stats = abp_step(gen_t, opt_gen, x_obs, state["latents"][idx].to(device), cfg, rng)
                state["latents"][idx] = z.cpu()
            now = time.perf_counter()
            window.append(now - t_last)
            t_last = now
            _check_finite(step + 1, stats, run_dir, last_ckpt)
            watch.add(stats)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                stats = dist.mean_over_ranks(stats)
                stats["sec_per_it"] = sum(window) / len(window)
                window = []
                log.stats(done, stats)
                line = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
                log.text(f"step {done}: {line}")
                bar.set_postfix_str(_postfix(stats))
            if main and cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
                recalibrate_batchnorm(gen, calib_z, cfg.num_chains)
                save_progress(run_dir, done, cfg, unwrap(des), unwrap(gen), fixed_z, state["chains"])
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                why = watch.verdict()
                if why and done < cfg.steps:
                    log.text(f"step {done}: checkpoint held back because {why}; latest.pt stays "
                             f"at step {last_ckpt}")
                else:
                    if why:
                        log.text(f"warning: the final checkpoint is written although {why}")
                    checkpoint(done)
                    last_ckpt = done
    except KeyboardInterrupt:
        log.text(f"interrupted; resume from step {last_ckpt or 0} with the same command")
        raise
    finally:
        bar.close()
        log.close()
    if start >= cfg.steps and main:
        msg = f"run already at step {start} of {cfg.steps}; raise --steps to continue"
        log.text(msg)
        print(msg)
    return run_dir


def _postfix(stats: dict) -> str:
    names = {"f_gap": "f(data)-f(syn)", "langevin_move": "move", "gen_loss": "gen",
             "sec_per_it": "s/it"}
    return " ".join(f"{names[k]} {stats[k]:.3g}" for k in names if k in stats)
