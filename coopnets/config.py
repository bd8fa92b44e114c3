"""One dataclass of every setting, named presets, and CLI overrides generated from the fields.

A preset is a dict of overrides of the defaults; ``--any-field VALUE`` overrides a preset;
``--config run/config.json`` repeats a run exactly. The resolved config is saved with the run.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UserError

GAP_SHAPES = ("quadratic", "wall")  # des_gap_shape: coopnets.algorithms.descriptor_loss

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


ALGORITHMS = ("coop", "descriptor", "abp", "frame", "wframe", "wgcn", "ggcn")


@dataclass
class Config:
    preset: str = ""
    algorithm: str = "coop"  # coop (CoopNets) | descriptor (Algorithm D) | abp (Algorithm G)
    #                          | frame | wframe | wgcn | ggcn (seed 004, docs/ggcn.md)
    # data -------------------------------------------------------------------------------
    data: str = ""  # folder, zip, .npz/.npy, IDX file, a single texture image, or a video
    data_kind: str = "auto"  # auto | folder | zip | mnist | array | texture | video
    data_key: str = ""  # which array of an .npz (default x_train, or the only one)
    subset: str = ""  # START:STOP, e.g. 0:50000 for MNIST's training part
    image_size: int = 0  # resize to a square of this size (0: keep the data's size)
    center_crop: bool = False  # centre-crop to a square before resizing
    channels: int = 0  # 1 or 3 to convert; 0 keeps the data's
    crop_size: int = 0  # train on random crops of this size (textures); 0: whole images
    # videos (data_kind video: .avi/.mp4/.gif, a folder of frames, or a video .npy/.npz) --------
    frames: int = 0  # frames to load from each video (0: all)
    frame_start: int = 0  # first frame loaded
    frame_stride: int = 1  # load every k-th frame
    crop_frames: int = 0  # train on random runs of this many frames; 0: all loaded frames
    # networks ---------------------------------------------------------------------------
    des_net: str = "img64"  # see nets.DESCRIPTORS
    gen_net: str = "img64"  # see nets.GENERATORS
    des_width: int = 64
    gen_width: int = 64
    z_dim: int = 100  # d
    gen_norm: str = "batch"  # batch | none
    # descriptor: Langevin on x (D1) and learning (D2) -----------------------------------------
    des_steps: int = 10  # l_D
    des_step_size: float = 0.002  # δ
    ref_std: float = 0.016  # s, std of the descriptor's Gaussian reference q(x) = N(0, s²I)
    des_noise: bool = True
    # The Langevin noise as c δ U instead of δ U (c < 1 samples the tempered p^(1/c²); 1 is D1)
    des_noise_scale: float = 1.0
    des_lr: float = 0.01
    des_beta1: float = 0.5
    des_beta2: float = 0.999  # Adam's second-moment decay
    # Bound f(data) − f(syn) at G (per pixel, in units of 1/s²), which stops the runaway in
    # which every paper preset diverged (docs/results.md "Stability"); 0 is the paper's exact
    # loss. Shape "quadratic": the loss adds gap²/2G, a brake from gap 0 that holds a runaway
    # at G. "wall": the paper's loss while the gap is under G, then (gap − G)²/2G more, held at
    # 2G; it does not stall a descriptor whose gap starts near G, as the quadratic can.
    des_gap_limit: float = 0.1
    des_gap_shape: str = "quadratic"  # quadratic | wall
    # Bound the descriptor's slope at the revised samples: the loss adds λ (P/s²) mean (u − 1)⁺²
    # with u = s² · RMS over pixels of ∂f/∂x̃, the slope in units of the reference's largest
    # pull inside the image range (1/s² at |x| = 1); P pixels. Above it a noise-free chain runs
    # out of the image along ∂f, which is how texture-224-cpu blew up (docs/results.md
    # "Stability"). 0 (λ) is the paper's loss. Algorithms coop and descriptor.
    des_slope_penalty: float = 0.0
    # Clip the descriptor's gradient norm at this multiple of its running average (over about
    # 50 steps, after 50 that only learn it; algorithms.GradClip) before Adam's update; 0: off
    # (the paper). Adam turns a gradient ten times its recent size into a step about sixteen
    # times lr per weight (β1 0.5, β2 0.999), and one such step wrecked texture-224-cpu
    # (docs/results.md "Stability"). Algorithms coop and descriptor.
    des_grad_clip: float = 0.0
    # Penalise the energy's magnitude, as later EBMs do (Du & Mordatch 2019: α(E(x)² + E(x̃)²)):
    # the loss adds λ (P/s²) (mean_i f̂(x_i)² + mean_j f̂(x̃_j)²), f̂ = f s²/P the score per pixel in
    # units of 1/s² (those of --des-gap-limit); with --des-gap-limit 0 each example's likelihood
    # gradient is scaled by (1 − 2λ f̂) at the data and (1 + 2λ f̂) at the samples (with a limit
    # the two terms add). A runaway of f meets a pull back that grows with it. 0: the paper.
    # Algorithms coop and descriptor.
    des_energy_reg: float = 0.0
    # Decoupled weight decay of the descriptor (AdamW's: every weight shrinks by lr · this per
    # step, apart from Adam's step); the released MatConvNet code's SGD had L2 decay 1e-4.
    # 0: the paper (this package's Adam). Every algorithm with a descriptor.
    des_weight_decay: float = 0.0
    des_init: str = "noise"  # Algorithm D chains: noise | persistent | data
    # CoopNets with a pool of persistent chains beside the generator's (0: off, the paper): the
    # descriptor also learns from this many chains that each step continues by l_D Langevin steps
    # from where they stopped, so it sees samples that have run far longer than the generator's;
    # each step each pool chain restarts, with probability --coop-pool-renew, from one of the
    # step's revised samples. The generator learns from its own chains only.
    coop_pool: int = 0
    coop_pool_renew: float = 0.05
    # generator: Langevin on z (G1) and learning (G2) --------------------------------------------
    gen_steps: int = 0  # l_G; 0 uses the generated latents as they are
    gen_step_size: float = 0.1
    residual_std: float = 0.3  # σ, std of the generator's residual x − g(z)
    gen_noise: bool = True
    gen_lr: float = 1e-4
    gen_beta1: float = 0.5
    gen_beta2: float = 0.999
    # Keep an exponential moving average of the generator's weights, with this decay per step
    # (warmed up: min(D, (1 + t)/(10 + t)) at step t), beside the trained one; sampling,
    # evaluation and export use it (0: off, the paper). Added to a run, it starts at resume.
    gen_ema: float = 0.0
    # wGCN / wFRAME / GGCN: the JKO particle step (coopnets/particle.py, docs/ggcn.md) ----------
    jko_prox: str = "iterative"  # iterative | semi-implicit | explicit (= the Langevin step)
    jko_inner_steps: int = 3  # K_in, gradient steps per proximal step (iterative)
    jko_inner_step: float = 0.0  # η of the first inner step; 0: 1/(1/τ + 1/s²), τ = δ²/2
    # GGCN's upsampler g is also the base q = g#N(0, I) that f tilts, so it fits the data too:
    # Algorithm G's posterior inference of each observed example's z (warm-started, this many
    # Langevin steps of this size), then g(z) regresses on it (docs/ggcn.md). 0: g learns from
    # the chains' ends only, ggcn.md §4.5 read literally, which never shows g the data.
    ggcn_infer_steps: int = 10
    ggcn_infer_step: float = 0.1
    # GGCN's --des-gap-limit counts per latent dimension in units of N(0, I) ("latent"), or per
    # pixel in units of 1/s² as for the x-space models ("pixel": it never binds on GGCN's f)
    ggcn_gap_units: str = "latent"
    # schedule ---------------------------------------------------------------------------
    batch_size: int = 100  # n observed examples per step (per process)
    num_chains: int = 144  # M synthesized examples per step (per process)
    steps: int = 10000  # total iterations
    lr_final: float = 1.0  # both learning rates decay linearly to this fraction at the last step
    lr_warmup: int = 0  # and rise linearly from 1/N of that over the first N steps (0: no warm-up)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # none | bf16 (networks under autocast; Langevin state stays float32) | bf16-langevin
    # (autocast inside the Langevin chains only; the parameter updates stay float32) | auto
    # (bf16-langevin where the device has bf16 kernels, none where it would emulate them)
    amp: str = "none"
    channels_last: bool = False  # NHWC memory format (try on GPUs; slower for small CPU nets)
    compile: str = "none"  # none | inductor | aot_eager: torch.compile the networks (coopnets.fast)
    cuda_graphs: bool = False  # replay descriptor revision (D1) from a CUDA graph (CUDA only)
    tf32: bool = True  # CUDA: TF32 matrix multiplies and cuDNN convolutions; false: float32 for both
    # (PyTorch's own default is TF32 convolutions and float32 matmuls)
    # output -----------------------------------------------------------------------------
    outdir: str = "runs"
    log_every: int = 10
    sample_every: int = 200
    ckpt_every: int = 200
    snapshot_every: int = 0  # keep a copy of the checkpoint every N steps (0: only latest; one
    # held back with its checkpoint is taken at the next checkpoint written)
    grid_size: int = 64  # fixed latent batch drawn once, for comparable progress grids
    progress: bool = True

    def validate(self) -> "Config":
        def need(cond, msg):
            if not cond:
                raise UserError(msg)
        need(self.algorithm in ALGORITHMS,
             f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        need(self.jko_prox in ("iterative", "semi-implicit", "explicit"),
             f"--jko-prox must be iterative, semi-implicit or explicit, got {self.jko_prox!r}")
        need(self.jko_inner_steps > 0 and self.jko_inner_step >= 0,
             "--jko-inner-steps must be positive and --jko-inner-step >= 0")
        if self.jko_inner_step:  # above 2 / (1/τ + 1/s²) the inner iteration diverges
            for name, delta, ref in (("des", self.des_step_size, self.ref_std), ("gen", self.gen_step_size, 1.0)):
                bound = 2.0 / (2.0 / delta ** 2 + 1.0 / ref ** 2)
                need(self.algorithm != "ggcn" and name == "gen" or self.jko_inner_step < bound,
                     f"--jko-inner-step {self.jko_inner_step:g} diverges with --{name}-step-size "
                     f"{delta:g}: it must be below {bound:.3g}")
        need(self.ggcn_gap_units in ("latent", "pixel"),
             f"--ggcn-gap-units must be latent or pixel, got {self.ggcn_gap_units!r}")
        need(self.ggcn_infer_steps >= 0 and self.ggcn_infer_step > 0,
             "--ggcn-infer-steps must be >= 0 and --ggcn-infer-step positive")
        need(self.algorithm != "ggcn" or self.gen_steps > 0,
             "--algorithm ggcn samples in hidden space: set --gen-steps (l_z) to 1 or more")
        need(self.des_init in ("noise", "persistent", "data"),
             f"--des-init must be noise, persistent or data, got {self.des_init!r}")
        need(self.coop_pool >= 0, f"--coop-pool must be >= 0, got {self.coop_pool}")
        need(not self.coop_pool or self.algorithm == "coop",
             f"--coop-pool keeps chains beside a CoopNets generator's; --algorithm {self.algorithm} "
             "has none (Algorithm D's own persistent chains: --des-init persistent)")
        need(0 <= self.coop_pool_renew <= 1,
             f"--coop-pool-renew is a probability per step, in [0, 1]; got {self.coop_pool_renew}")
        need(self.algorithm != "abp" or self.gen_steps > 0,
             "--algorithm abp infers each latent by Langevin: set --gen-steps to 1 or more (e.g. 10)")
        need(self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        need(self.compile in ("none", "inductor", "aot_eager"),
             f"--compile must be none, inductor or aot_eager, got {self.compile!r}")
        need(self.channels in (0, 1, 3), f"--channels must be 0, 1 or 3, got {self.channels}")
        need(DEVICE_RE.match(self.device) is not None,
             f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("batch_size", "num_chains", "steps", "des_width", "gen_width", "z_dim",
                     "log_every", "grid_size"):
            need(getattr(self, name) > 0, f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("des_steps", "gen_steps", "image_size", "crop_size", "sample_every", "lr_warmup",
                     "ckpt_every", "snapshot_every", "frames", "frame_start", "crop_frames"):
            need(getattr(self, name) >= 0, f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("des_step_size", "ref_std", "gen_step_size", "residual_std", "des_lr", "gen_lr",
                     "des_noise_scale"):
            need(getattr(self, name) > 0, f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        need(self.des_gap_limit >= 0, f"--des-gap-limit must be >= 0, got {self.des_gap_limit}")
        need(self.des_slope_penalty >= 0,
             f"--des-slope-penalty must be >= 0, got {self.des_slope_penalty}")
        need(self.des_grad_clip == 0 or self.des_grad_clip >= 1,
             f"--des-grad-clip must be 0 (off) or a multiple >= 1 of the running average, "
             f"got {self.des_grad_clip}")
        need(self.des_energy_reg >= 0, f"--des-energy-reg must be >= 0, got {self.des_energy_reg}")
        need(not self.des_energy_reg or self.algorithm in ("coop", "descriptor"),
             f"--des-energy-reg applies to --algorithm coop and descriptor, not {self.algorithm}")
        need(self.des_weight_decay >= 0,
             f"--des-weight-decay must be >= 0, got {self.des_weight_decay}")
        need(not self.des_weight_decay or self.algorithm != "abp",
             "--des-weight-decay decays a descriptor; --algorithm abp trains none")
        need(not self.des_grad_clip or self.algorithm in ("coop", "descriptor"),
             f"--des-grad-clip applies to --algorithm coop and descriptor, not {self.algorithm}")
        need(not self.des_slope_penalty or self.algorithm in ("coop", "descriptor"),
             f"--des-slope-penalty applies to --algorithm coop and descriptor, not {self.algorithm}")
        need(not self.des_slope_penalty or self.compile == "none",
             "--des-slope-penalty needs a second backward pass, which torch.compile does not "
             "support; use --compile none")
        need(self.des_gap_shape in GAP_SHAPES,
             f"--des-gap-shape must be one of {', '.join(GAP_SHAPES)}, got {self.des_gap_shape!r}")
        need(self.frame_stride >= 1, f"--frame-stride must be >= 1, got {self.frame_stride}")
        need(0 < self.lr_final <= 1, f"--lr-final must be in (0, 1], got {self.lr_final}")
        need(0 <= self.gen_ema < 1, f"--gen-ema must be in [0, 1) (e.g. 0.999), got {self.gen_ema}")
        need(not self.gen_ema or self.algorithm in ("coop", "abp", "ggcn"),
             f"--gen-ema averages a generator; --algorithm {self.algorithm} trains none")
        for name in ("des_beta1", "gen_beta1", "des_beta2", "gen_beta2"):
            need(0 <= getattr(self, name) < 1, f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        return self

    @property
    def des_noise_level(self) -> float:
        """The descriptor chains' noise scale c (δ c U per step): 0 without noise."""
        return self.des_noise_scale if self.des_noise else 0.0


AMP_MODES = ("none", "bf16", "bf16-langevin", "auto")

# Fields that do not change what a run computes: a changed value still resumes the run.
RESUME_IGNORES = {"steps", "log_every", "sample_every", "ckpt_every", "snapshot_every",
                  "progress", "device", "outdir", "channels_last", "compile", "cuda_graphs",
                  "tf32", "gen_ema"}  # the average is kept beside training; it changes none of it

_CPU = dict(device="auto", log_every=5, sample_every=50, ckpt_every=50)

_GGCN = dict(algorithm="ggcn", des_lr=2e-5, gen_step_size=0.2, gen_norm="none", des_steps=0)
_MNIST = dict(des_net="mnist", gen_net="mnist", subset="0:50000", channels=1)
_MNIST_CPU = dict(_MNIST, des_width=32, gen_width=32, batch_size=64, num_chains=64, steps=1500,
                  **_CPU)

_TEXTURE_CPU = dict(data_kind="texture", image_size=128, crop_size=64, des_net="texture-deep",
                    gen_net="texture-k4", des_width=24, gen_width=24, z_dim=32,
                    gen_norm="none", batch_size=4, num_chains=16, des_steps=15,
                    des_step_size=0.04, des_noise=False,
                    ref_std=0.16, des_lr=0.003, gen_lr=0.002, lr_final=0.1, steps=500,
                    grid_size=9,
                    **_CPU)

PRESETS: dict[str, dict] = {
    # Exp 1, Fig. 1: stationary CoopNets on one texture image; synthesizes any size. The
    # Langevin scale of the released MatConvNet code's texture setting (pixels in [-1, 1]:
    # T = 30, Delta1 = 0.0023, refsig1 = Delta1 / 0.3), so δ/s = 0.3 and each step pulls x
    # toward the reference by δ²/2s² = 4.5 %. Until 2026-12-07 this preset had s = 1 and
    # δ = 0.01 (δ/s = 0.01): 30 steps moved a sample by their noise alone (docs/results.md).
    "texture": dict(data_kind="texture", image_size=224, des_net="texture", gen_net="texture",
                    des_width=64, gen_width=64, z_dim=64, batch_size=1, num_chains=6,
                    des_steps=30, des_step_size=0.0023, ref_std=0.0023 / 0.3, gen_lr=3e-4,
                    des_lr=0.002, steps=3000, grid_size=6, sample_every=100),
    # The demo: Exp 1 at laptop scale, 2-3 minutes on 2 CPU cores. Tuned for speed: a
    # weaker reference (s = 0.16) lets 15 Langevin steps move the samples; no BatchNorm in the
    # texture generator. Three departures from the paper's nets and sampler, each measured on
    # brick, grass and gravel (docs/results.md, Textures): a descriptor that sees 65 pixels
    # (the paper's 17 are under one brick), kernel-4 transposed convolutions (kernel 5 left a
    # periodic cell), and revision without the Langevin noise: with it the descriptor told
    # data from samples by that noise alone (f(data + noise) 20,000 under f(data)), the gap sat
    # at its limit and the samples stayed a grid; without it the gap is 1-3 % of the limit.
    # The descriptor's slope bounded in place of its gap (docs/results.md "Stability"): under
    # the gap limit one or two seeds in five collapsed at 4x the steps, the gap held at G,
    # where the limit zeroes the likelihood gradient; with the penalty and no limit five of five
    # ran 2,000 steps healthy and drew the running bond (without either, the paper's loss
    # diverged by step 776). In the 500 steps the slope stays under the bound. Not for MNIST,
    # whose samples need a slope near the bound (u = RMS of the pixels, 0.96; brick 0.22).
    "texture-cpu": dict(_TEXTURE_CPU, des_gap_limit=0.0, des_slope_penalty=0.1),
    # Exp 1 at the `texture` preset's scale (224x224, bricks 12 pixels wide and 45 long) on a
    # CPU: texture-cpu's recipe with both nets scaled by two, so that they stand to the bricks
    # as texture-cpu's do at 128x128: a descriptor that sees 129 pixels, a latent at 1/32
    # (16-pixel cells locked the columns to their period), crops of 128. Two guards on the
    # descriptor (docs/results.md, "Stability"): its slope bounded (des_slope_penalty; without
    # it 4,000 steps blew up at step 650), and its gradient clipped at twice its running norm
    # (des_grad_clip; without it seed 1 blew up at step 945 of 4,000, by one Adam step ten
    # times the usual; with it the same seed ran 4,000 steps clean); it keeps the default gap
    # limit beside them, as measured (texture-cpu drops it). 1,000 steps (20 CPU-min)
    # draw the running bond in seeds 0, 1 and 3 (layout 0.64, 0.55, 0.52); seed 2 draws
    # ladders (0.31). Without the clip only seed 0 drew it, seed 1 collapsing to stripes.
    "texture-224-cpu": dict(_TEXTURE_CPU, image_size=224, crop_size=128, des_net="texture-deep5",
                            gen_net="texture-k4-32", des_slope_penalty=0.1, des_grad_clip=2.0,
                            steps=1000, snapshot_every=500),
    # Exp 2, Fig. 2-3: a few images of one object category, 64x64.
    "object": dict(image_size=64, center_crop=True, batch_size=10, num_chains=36,
                   des_steps=10, steps=3000),
    # Exp 3, Fig. 4-5 and Table 1 (Inception score 2.66..3.79): 10 scene categories, 64x64.
    # The configuration of the released code: batch 100, 12x12 = 144 chains, 10 steps.
    "scene-64": dict(image_size=64, center_crop=True, batch_size=100, num_chains=144,
                     des_steps=10, steps=30000),
    # Exp 4, Fig. 7 and Table 2 (Parzen log-likelihood: generator 226, descriptor 228).
    "mnist": dict(des_net="mnist", gen_net="mnist", subset="0:50000", channels=1,
                  batch_size=100, num_chains=100, des_steps=10, steps=25000),
    # Tuned on 1,500-step runs (Parzen of gen/revised samples, docs/results.md): gen_lr 5e-4
    # beat 1e-4 (125/145 vs 113/137) and 2e-3 (99/116); des_lr 0.003 was far worse (66/77),
    # 0.02 no better than 0.01. No learning-rate decay: with a linear decay to 0.1x, runs of
    # 6,000 and 12,000 steps both blew up once the rates were ~0.3x; without it 6,000 steps
    # ran clean and scored higher (revised Parzen 199.9).
    "mnist-cpu": dict(des_net="mnist", gen_net="mnist", subset="0:50000", channels=1,
                      des_width=32, gen_width=32, batch_size=64, num_chains=64, des_steps=8,
                      gen_lr=5e-4, steps=1500, **_CPU),
    # Table 2 on a CPU: mnist-cpu with the changes that took the Parzen scores to the paper's
    # (docs/results.md, MNIST): the generator's moving average (+15 nats; 0.9995 gave +1.5 over
    # 0.999, 0.9998 +0.1 to +0.8 over 0.9995), a generator rate of 2e-3 (the average gains +4
    # per doubling, 5e-4 -> 2e-3, at 12,000 steps), the wall-shaped gap limit (the quadratic
    # stalls this rate), and the Langevin chains in bf16 with fp32 updates where the CPU has
    # bf16 kernels (1.27x there; full bf16 cost the generator 2-4 nats; an AVX2-only CPU
    # emulates bf16, 9x slower, so "auto" keeps float32 there). 24,000 steps, the issue's "about
    # an hour" (64.5 min on 2 threads with bf16 kernels): generator 226.3, revised 239.1 (paper
    # 226 / 228). --steps 30000 (80 min) gave 228.1 / 242.3 with the 0.9995 average. In fp32
    # with 0.999: 225.6 / 237.1 in 2 h.
    "mnist-table2-cpu": dict(_MNIST_CPU, des_steps=8, gen_lr=2e-3, gen_ema=0.9998,
                             amp="auto", des_gap_shape="wall", steps=24000,
                             snapshot_every=3000),
    # Exp 5, Table 3 (FID: generator 35.25, descriptor 33.61): CIFAR-10 32x32.
    "cifar10": dict(des_net="img32", gen_net="img32", batch_size=100, num_chains=100,
                    des_steps=10, steps=100000),
    # Exp 5 at 64x64 (faces for completion, Exp 6, Table 4): CelebA centre crops.
    "celeba-64": dict(image_size=64, center_crop=True, batch_size=100, num_chains=100,
                      des_steps=10, steps=50000),
    "celeba-64-cpu": dict(image_size=64, center_crop=True, des_width=32, gen_width=32,
                          batch_size=64, num_chains=64, des_steps=8, steps=1500, **_CPU),
    # Exp 5, Fig. 8a and Table 3 (FID: generator 16.98, descriptor 16.65): CelebA 128x128.
    "celeba-128": dict(des_net="img128", gen_net="img128", image_size=128, center_crop=True,
                       batch_size=100, num_chains=100, des_steps=10, steps=100000),
    # Exp 5, Fig. 8b and Table 3 (FID: generator 64.30, descriptor 35.42): LSUN bedrooms 256.
    "lsun-256": dict(des_net="img256", gen_net="img256", image_size=256, center_crop=True,
                     batch_size=64, num_chains=64, des_steps=10, steps=200000),
    # Exp 7, Fig. 10 and Table 5 (PSNR 19.41, SSIM 0.599): spatial-temporal CoopNets on one
    # dynamic-texture clip, 64 frames of 128x128 as the released code trains, with its Langevin
    # settings (s = 0.016, δ = 0.002, 10 steps) and learning rates; for a GPU.
    "dyntex": dict(data_kind="video", image_size=128, center_crop=True, frames=64,
                   des_net="dyntex", gen_net="dyntex", des_width=64, gen_width=64, z_dim=64,
                   batch_size=1, num_chains=4, des_steps=10, des_step_size=0.002,
                   ref_std=0.016, des_lr=0.01, gen_lr=2e-4, residual_std=1.0, steps=2000,
                   grid_size=2, sample_every=100),
    # Exp 7 at laptop scale: a moving texture in about 5 minutes on 2 CPU cores. 32 frames of
    # 64x64 loaded; trains on random 8-frame 32x32 crops (the nets are stationary, so samples
    # have any length and size). Tuned on 100-300-step runs on the fire clip (docs/results.md):
    # δ = 0.02 (texture-cpu's then) moved the samples mostly by noise, the drift of 12 steps was
    # under the noise and the samples stayed grey; δ = 0.05 with s = 0.16 makes the drift
    # dominate and flames appear by step 100. The wall gap limit, as dyntex-fc-cpu: under the
    # quadratic, 4 of the 8 clips of Table 5 stalled at G (fire: flat beige noise; flashing
    # light PSNR 9.01, wall 15.87); with the wall none did (average 11.04 dB, quadratic 10.06).
    "dyntex-cpu": dict(data_kind="video", image_size=64, center_crop=True, frames=32,
                       crop_size=32, crop_frames=8, des_net="dyntex", gen_net="dyntex",
                       des_width=16, gen_width=16, z_dim=16, gen_norm="none", batch_size=4,
                       num_chains=16, des_steps=12, des_step_size=0.05, ref_std=0.16,
                       des_lr=0.003, gen_lr=0.002, lr_final=0.1, steps=300, grid_size=4,
                       des_gap_shape="wall", **_CPU),
    # Exp 7 with the released code's kind of nets (issue 12): stationary in time, spatially
    # fully connected descriptor top and fixed-layout generator, so the syntheses can keep a
    # clip's layout (a pot, a flag pole) that the frame-aligned PSNR/SSIM of Table 5 rewards.
    # The paper's scale, for a GPU: dyntex's data, Langevin settings and learning rates, on
    # whole 128x128 frames (the nets take that size only), 64 frames.
    "dyntex-fc": dict(data_kind="video", image_size=128, center_crop=True, frames=64,
                      des_net="dyntex-fc128", gen_net="dyntex-fc128", des_width=64, gen_width=64,
                      z_dim=64, batch_size=1, num_chains=4, des_steps=10, des_step_size=0.002,
                      ref_std=0.016, des_lr=0.01, gen_lr=2e-4, residual_std=1.0, steps=2000,
                      grid_size=2, sample_every=100),
    # Its laptop scale: 32 frames of 64x64, trained on whole frames (crop_size 0: the layout
    # is fixed) and random 8-frame runs (samples have any length); dyntex-cpu's Langevin
    # settings and learning rates (tuned there, docs/results.md). The wall gap limit: under
    # the quadratic the flashing-light run stalled at G from step 25 (PSNR 8.53, wall 20.15);
    # fire and flag scored the same with either (14.51 / 14.38 dB, 15.83 / 16.37 dB).
    "dyntex-fc-cpu": dict(data_kind="video", image_size=64, center_crop=True, frames=32,
                          crop_size=0, crop_frames=8, des_net="dyntex-fc64",
                          gen_net="dyntex-fc64", des_width=16, gen_width=16, z_dim=16,
                          gen_norm="none", batch_size=4, num_chains=16, des_steps=12,
                          des_step_size=0.05, ref_std=0.16, des_lr=0.003, gen_lr=0.002,
                          lr_final=0.1, steps=300, grid_size=4, des_gap_shape="wall", **_CPU),
    # ---- seed 004 (docs/ggcn.md): FRAME, wFRAME, wGCN, GGCN -- a reconstruction ----------------
    # No hyperparameters of the paper are known (ggcn.md §3.6): these start from the CoopNets
    # scale (pixels in [-1, 1], s = 0.016, δ = 0.002) with τ = δ²/2 and K_in = 3 (§3.4).
    # wGCN: persistent chains, JKO particle step; the paper's GCN is --algorithm descriptor
    # with the same settings (or --jko-prox explicit, bit-identical).
    "wgcn-mnist": dict(_MNIST, algorithm="wgcn", des_init="persistent", batch_size=100,
                       num_chains=100, des_steps=10, steps=25000),
    "wgcn-mnist-cpu": dict(_MNIST_CPU, algorithm="wgcn", des_init="persistent", des_steps=8),
    "wgcn-cifar10": dict(des_net="img32", gen_net="img32", algorithm="wgcn", des_init="persistent",
                         batch_size=100, num_chains=100, des_steps=10, steps=100000),
    "wgcn-celeba-64": dict(image_size=64, center_crop=True, algorithm="wgcn", des_init="persistent",
                           batch_size=100, num_chains=100, des_steps=10, steps=50000),
    # FRAME / wFRAME: the same with the filter bank (every layer below the top) frozen at its
    # random initialisation; only the top layer's λ learn. wFRAME's paper reports CIFAR-10
    # Inception scores FRAME 4.28, wFRAME 5.52 (ggcn.md §3.5).
    "frame-mnist-cpu": dict(_MNIST_CPU, algorithm="frame", des_init="persistent", des_steps=8),
    "wframe-mnist-cpu": dict(_MNIST_CPU, algorithm="wframe", des_init="persistent", des_steps=8),
    "frame-cifar10": dict(des_net="img32", gen_net="img32", algorithm="frame", des_init="persistent",
                          batch_size=100, num_chains=100, des_steps=10, steps=100000),
    "wframe-cifar10": dict(des_net="img32", gen_net="img32", algorithm="wframe",
                           des_init="persistent", batch_size=100, num_chains=100, des_steps=10,
                           steps=100000),
    # GGCN: l_z = gen_steps JKO steps in the hidden space (ggcn.md §4.3 suggests s_z = 0.1), the
    # upsampler without BatchNorm (chains must not depend on each other), no x refinement. The
    # hidden reference N(0, I) has energy ~d/2, not the ~10⁵ of N(0, s²I) on pixels, so f must
    # stay small: with the CoopNets des_lr 0.01, f reached 6·10⁵ in 5 steps and the z chains
    # flew off (move > 100 at step 10); des_lr 2e-5 (s_z 0.2) kept the energy near d/2 in a
    # 35-step probe. Not tuned further (docs/ggcn.md). The upsampler also fits the data
    # (ggcn_infer_steps 10, Algorithm G): without it g never sees an image and the samples stay
    # noise; with it, and the gap limit in hidden units, ggcn-mnist-cpu makes varied digits by
    # step 300 (without the hidden-unit limit f ran away and the samples collapsed onto 7s and 1s).
    "ggcn-mnist": dict(_MNIST, **_GGCN, gen_steps=10, batch_size=100, num_chains=100, steps=25000),
    # Its quality peaks near step 400 (Parzen 64 / 55 for g(z) / chains, 1,000 samples) and then
    # falls (step 627: 17 / -48) as g drifts onto 1s and 7s (docs/results.md), so it stops there.
    "ggcn-mnist-cpu": dict(_MNIST_CPU, **_GGCN, gen_steps=4, jko_inner_steps=2, gen_lr=5e-4,
                           steps=400),
    "ggcn-cifar10": dict(des_net="img32", gen_net="img32", **_GGCN,
                         gen_steps=10, batch_size=100, num_chains=100, steps=100000),
    "ggcn-cifar10-cpu": dict(des_net="img32", gen_net="img32", **_GGCN,
                             des_width=32, gen_width=32, gen_steps=6, jko_inner_steps=2,
                             batch_size=64, num_chains=64, steps=1500, **_CPU),
    "ggcn-celeba-64": dict(image_size=64, center_crop=True, **_GGCN,
                           gen_steps=10, batch_size=100, num_chains=100, steps=50000),
    "ggcn-celeba-64-cpu": dict(image_size=64, center_crop=True, **_GGCN,
                               des_width=32, gen_width=32, gen_steps=6, jko_inner_steps=2,
                               batch_size=64, num_chains=64, steps=1500, **_CPU),
    # Tiny networks for tests and smoke runs.
    "smoke": dict(des_net="mnist", gen_net="mnist", des_width=4, gen_width=4, z_dim=8,
                  batch_size=8, num_chains=8, des_steps=2, gen_steps=1, steps=2, log_every=1,
                  sample_every=1, ckpt_every=1, grid_size=4),
}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse_value(f: dataclasses.Field, text: str):
    """Parse a CLI string for a field, with a one-line error when it does not fit."""
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool,
                                                    "str": str}[f.type]
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{_flag(f.name)} takes true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"--{_flag(f.name)} takes a {kind.__name__}, got {text!r}") from None


# Fields renamed since runs were first saved: old config.json files and checkpoints still load.
RENAMED = {"des_refsig": "ref_std", "gen_refsig": "residual_std"}


# Fields whose value for a run saved before they existed is not today's default: such a run
# computed without them, so it resumes, loads and exports as it ran.
BEFORE_FIELD = {"des_gap_limit": 0.0, "ggcn_infer_steps": 0, "ggcn_gap_units": "pixel"}


def migrate(values: dict, saved: bool = False) -> dict:
    """A config dict with old field names mapped to today's; ``saved`` (a run's config.json or
    checkpoint) also fills the fields in BEFORE_FIELD that it predates."""
    out = {RENAMED.get(k, k): v for k, v in values.items()}
    if saved:
        out = {**BEFORE_FIELD, **out}
    return out


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def check_types(values: dict, source: str = "config") -> None:
    """One line naming the first field whose value has the wrong JSON type (a string, null or
    list where a number belongs); an int is accepted where a float belongs."""
    for f in fields(Config):
        if f.name not in values:
            continue
        v, kind = values[f.name], _TYPES[f.type] if isinstance(f.type, str) else f.type
        ok = (isinstance(v, bool) if kind is bool else
              isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
              isinstance(v, int) and not isinstance(v, bool) if kind is int else isinstance(v, kind))
        if not ok:
            what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
            raise UserError(f"{source}: {f.name} must be {what}, got {json.dumps(v)}")


def config_from_dict(values: dict, source: str = "config", saved: bool = False) -> Config:
    """The Config of a dict of fields: old names mapped, fields that did not exist yet take
    their defaults (``saved``, a run's own: the values in BEFORE_FIELD), unknown fields and
    wrong types refused with one line."""
    if not isinstance(values, dict):
        raise UserError(f"{source} is not a JSON object of config fields")
    values = migrate(values, saved)
    unknown = set(values) - {f.name for f in fields(Config)}
    if unknown:
        raise UserError(f"unknown config field(s) {', '.join(sorted(unknown))}; was this saved by "
                        "a newer coopnets?")
    check_types(values, source)
    return Config(**values)


def resolve(preset: str | None = None, config_file: str | None = None, **overrides) -> Config:
    """Defaults <- preset or saved config <- overrides (already typed), validated."""
    values: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"config file {path} is not valid JSON: {e}") from None
        if not isinstance(saved, dict):
            raise UserError(f"config file {path} is not a JSON object of config fields")
        saved = migrate(saved, saved=True)
        check_types(saved, f"config file {path}")
        values.update(saved)
    if preset:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset], preset=preset)
    values.update(migrate(overrides))
    return config_from_dict(values).validate()


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def differences(saved: dict, mine: dict) -> list[str]:
    """The fields in which ``mine`` computes differently from ``saved`` (so it cannot resume
    it), in field order. A field missing from one (a run saved before the field existed)
    counts as its default value; ``des_gap_shape`` does not count while neither run limits the
    gap (``des_gap_limit`` 0). ``steps`` counts when the learning rates decay
    (``lr_final`` < 1): the linear schedule spans the run's steps, so another total would
    change the rates of the steps already taken and of those to come."""
    a, b, defaults = migrate(saved, saved=True), migrate(mine), dataclasses.asdict(Config())
    names = [f.name for f in fields(Config)]
    keys = [k for k in names if k not in RESUME_IGNORES] + sorted((set(a) | set(b)) - set(names))
    out = [k for k in keys if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]
    if not a.get("des_gap_limit") and not b.get("des_gap_limit", defaults["des_gap_limit"]):
        out = [k for k in out if k != "des_gap_shape"]  # no limit: its shape computes nothing
    if "lr_final" not in out and a.get("lr_final", 1.0) < 1 and a.get("steps") != b.get("steps"):
        out.append("steps")
    return out


def resume_changes(saved: dict, mine: dict) -> list[str]:
    """The ``RESUME_IGNORES`` fields that ``mine`` changes from ``saved`` (a resume with a new
    ``--steps`` or ``--gen-ema``), in field order: what the run's log records at the resume."""
    a, b, defaults = migrate(saved, saved=True), migrate(mine), dataclasses.asdict(Config())
    return [f.name for f in fields(Config) if f.name in RESUME_IGNORES
            and a.get(f.name, defaults[f.name]) != b.get(f.name, defaults[f.name])]


def same_run(a: dict, b: dict) -> bool:
    """Whether two configs describe the same computation (so one resumes the other)."""
    return not differences(a, b)


def describe_differences(saved: dict, mine: dict, keys: list[str]) -> str:
    """``algorithm coop -> abp, des_steps 10 -> 30`` for a one-line message."""
    a, b, defaults = migrate(saved, saved=True), migrate(mine), dataclasses.asdict(Config())

    def short(v):
        text = json.dumps(v)
        return text if len(text) <= 60 else text[:28] + "..." + text[-28:]
    return ", ".join(f"{k} {short(a.get(k, defaults.get(k)))} -> {short(b.get(k, defaults.get(k)))}"
                     for k in keys)
