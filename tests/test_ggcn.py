"""wGCN / wFRAME / GGCN (seed 004, docs/ggcn.md): the tests of ../shared/docs/ggcn.md §5 and
the wiring through the training loop, checkpoints, sampling and the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from coopnets.algorithms import STEPS, Batch, Nets, descriptor_step
from coopnets.config import resolve
from coopnets.langevin import descriptor_log_prob, langevin
from coopnets.models import build_nets
from coopnets.particle import freeze_filters, jko, jko_revise, prox_step_bound, wgcn_step


def _descriptor(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 1), nn.Flatten(0))


# (1) K_in = 1 and η = τ is the Langevin step, bit for bit ----------------------------------------
@pytest.mark.parametrize("noise", [True, False])
def test_jko_with_one_inner_step_of_size_tau_is_langevin_bitwise(noise):
    des, s, delta = _descriptor(), 0.3, 0.05
    x0 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lp = descriptor_log_prob(des, s)
    ref = langevin(lp, x0, 7, delta, noise, torch.Generator().manual_seed(2))
    tau = 0.5 * delta * delta
    out = jko(lp, x0, 7, delta, noise, torch.Generator().manual_seed(2), inner_steps=1,
              inner_step_size=tau, prox="iterative", ref_std=s)
    assert torch.equal(out, ref)
    assert torch.equal(jko(lp, x0, 7, delta, noise, torch.Generator().manual_seed(2),
                           prox="explicit"), ref)
    # and the JKO default (η below the bound, K_in = 3) is a different chain
    other = jko(lp, x0, 7, delta, noise, torch.Generator().manual_seed(2), ref_std=s)
    assert not torch.equal(other, ref)


def test_wgcn_explicit_step_equals_algorithm_d_step_bitwise():
    cfg = resolve("smoke", algorithm="wgcn", jko_prox="explicit", des_init="persistent",
                  des_steps=3)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    results = []
    for step in (descriptor_step, wgcn_step):
        torch.manual_seed(0)
        des, _ = build_nets(cfg, 1)
        opt = torch.optim.Adam(des.parameters(), 1e-3, betas=(0.5, 0.999))
        res = step(Nets(des=des, opt_des=opt), Batch(x), {"chains": None}, cfg,
                   torch.Generator().manual_seed(3))
        results.append((res, [p.detach().clone() for p in des.parameters()]))
    (a, pa), (b, pb) = results
    assert torch.equal(a.samples["x_syn"], b.samples["x_syn"])
    assert all(torch.equal(p, q) for p, q in zip(pa, pb))
    assert torch.equal(a.stats["f_gap"], b.stats["f_gap"])
    for key in ("f_obs", "f_syn", "energy", "w2_step"):  # the extra per-step record
        assert torch.isfinite(b.stats[key])


# (2) f ≡ 0: both samplers reach N(0, s²I) -----------------------------------------------------------
@pytest.mark.parametrize("prox", ["explicit", "iterative", "semi-implicit"])
def test_zero_f_chains_reach_the_reference(prox):
    s, delta, n = 1.0, 0.2, 600
    a = 0.5 * delta * delta / s ** 2  # τ / s²
    # stationary variance of the discretised chain: explicit x(1 − a) + δε, prox x/(1 + a) + δε
    exact = {"explicit": s * s / (1 - a / 2), "iterative": s * s * (1 + a) ** 2 / (1 + a / 2)}
    exact["semi-implicit"] = exact["iterative"]
    x0 = torch.full((20000, 4), 3.0)  # far from equilibrium
    x = jko(lambda y: -y.pow(2).sum(1) / (2 * s * s), x0, n, delta, True,
            torch.Generator().manual_seed(0), inner_steps=2, prox=prox, ref_std=s)
    var, mean = x.var().item(), x.mean().item()
    assert abs(mean) < 0.02
    assert abs(var / exact[prox] - 1) < 0.02  # sampling error of 80,000 draws: 0.5 %
    assert abs(var / (s * s) - 1) < 0.05  # and the discretisation bias is O(τ/s²)


# (3) a single linear-ReLU layer: s² ∂f/∂x is the top-down reconstruction s² B_δ (seed 003) ------
def test_relu_layer_gradient_is_the_top_down_reconstruction():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, 5, 2, 2)
    s = 0.5

    def f(x):  # stationary GCN with one layer: the ReLU responses summed over k and y
        return torch.relu(conv(x)).flatten(1).sum(1)

    x = torch.randn(3, 1, 12, 12, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    with torch.no_grad():
        delta = (conv(x) > 0).float()  # the activation pattern δ(x) from the bottom-up pass
        # top-down pass: the filters become basis functions, δ their coefficients
        b = nn.functional.conv_transpose2d(delta, conv.weight, stride=2, padding=2,
                                           output_padding=1)
        # f is affine on the cell of δ: f(x) = a_δ + <x, B_δ>, a_δ = Σ δ·bias
        a_delta = (delta * conv.bias.view(1, -1, 1, 1)).flatten(1).sum(1)
        affine = a_delta + (x * b).flatten(1).sum(1)
    assert torch.allclose(s * s * grad, s * s * b, atol=1e-6)
    assert torch.allclose(f(x).detach(), affine, rtol=1e-5, atol=1e-5)
    # noise-free Langevin is driven by the reconstruction error: x + δ²/(2s²) (x̂ − x)
    lp = lambda y: f(y) - y.flatten(1).pow(2).sum(1) / (2 * s * s)  # noqa: E731
    step = langevin(lp, x, 1, 0.1, noise=False)
    assert torch.allclose(step, x + 0.01 / (2 * s * s) * (s * s * b - x), atol=1e-6)


# (4) linear f: the semi-implicit prox is the converged iterative prox -------------------------------
def test_linear_f_semi_implicit_equals_converged_iterative_prox():
    torch.manual_seed(0)
    c, s, delta = torch.randn(1, 10), 0.7, 0.9
    lp = lambda y: (y * c).sum(1) - y.pow(2).sum(1) / (2 * s * s)  # noqa: E731
    x = torch.randn(6, 10)
    semi = jko(lp, x, 1, delta, False, prox="semi-implicit", ref_std=s)
    tau = 0.5 * delta * delta
    closed = (x + tau * c) / (1 + tau / s ** 2)  # argmin ||y||²/2s² − <c, y> + ||y − x||²/2τ
    assert torch.allclose(semi, closed, atol=1e-6)
    eta = 0.5 * prox_step_bound(delta, s)  # well inside the bound, so it takes many steps
    for k, tol in ((3, None), (60, 1e-6)):
        it = jko(lp, x, 1, delta, False, inner_steps=k, inner_step_size=eta, ref_std=s)
        if tol is None:
            assert (it - closed).abs().max() > 1e-3  # 3 steps are not converged
        else:
            assert torch.allclose(it, closed, atol=tol)


def test_iterative_prox_refuses_a_diverging_inner_step():
    lp = lambda y: -y.pow(2).sum(1) / 2  # noqa: E731
    with pytest.raises(ValueError, match="diverges"):
        jko(lp, torch.zeros(2, 3), 1, 0.5, inner_step_size=2.1 * prox_step_bound(0.5, 1.0),
            ref_std=1.0)


def test_implicit_step_is_stable_where_langevin_blows_up():
    """A stiff quadratic f (curvature κ ≫ 2/τ): explicit Euler diverges, the prox does not."""
    kappa, delta = 1e4, 0.05  # τ κ = 12.5
    lp = lambda y: -kappa * y.pow(2).sum(1) / 2  # noqa: E731
    x0 = torch.ones(4, 3)
    explicit = jko(lp, x0, 20, delta, False, prox="explicit")
    prox = jko(lp, x0, 20, delta, False, inner_steps=20, ref_std=None)
    assert explicit.abs().max() > 1e10
    assert prox.abs().max() < 1.0  # the secant step control keeps the inner iteration stable


def test_jko_chains_are_independent_per_example():
    des = _descriptor()
    x = torch.randn(4, 1, 8, 8)
    full = jko_revise(des, x, ref_std=0.5, steps=3, step_size=0.1, noise=False)
    one = jko_revise(des, x[2:3], ref_std=0.5, steps=3, step_size=0.1, noise=False)
    assert torch.allclose(full[2:3], one, atol=1e-6)


# FRAME and the wiring -------------------------------------------------------------------------------
def test_frame_freezes_the_filter_bank_and_learns_the_top():
    cfg = resolve("smoke", algorithm="frame", des_init="persistent")
    des, _ = build_nets(cfg, 1)
    freeze_filters(des)
    before = [p.detach().clone() for p in des.parameters()]
    opt = torch.optim.Adam(des.parameters(), 1e-2)
    STEPS["frame"](Nets(des=des, opt_des=opt), Batch(torch.rand(8, 1, 28, 28)), {}, cfg,
                   torch.Generator().manual_seed(0))
    body = len(list(des.body.parameters()))
    changed = [not torch.equal(a, b) for a, b in zip(before, des.parameters())]
    # the top layer's weights learn (its bias has zero gradient: f_syn − f_obs cancels it)
    assert changed[:body] == [False] * body and changed[body]


@pytest.mark.parametrize("algorithm", ["wgcn", "wframe", "ggcn", "frame"])
def test_train_resume_and_sample(tmp_path, algorithm):
    from coopnets.checkpoint import load_checkpoint
    from coopnets.sampling import generate
    from coopnets.training import train
    data = tmp_path / "digits.npy"
    np.save(data, (np.random.default_rng(0).random((16, 28, 28)) * 255).astype(np.uint8))
    cfg = resolve("smoke", algorithm=algorithm, data=str(data), outdir=str(tmp_path / "runs"),
                  gen_norm="none", progress=False, des_init="persistent")
    run = train(cfg)
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    if algorithm != "frame":
        assert {"f_obs", "f_syn", "energy", "w2_step"} <= set(stats[-1])
    assert load_checkpoint(run)["step"] == 2
    train(resolve("smoke", algorithm=algorithm, data=str(data), outdir=str(tmp_path / "runs"),
                  gen_norm="none", progress=False, des_init="persistent", steps=3))
    assert load_checkpoint(run)["step"] == 3
    mode = "revise" if algorithm == "ggcn" else "des"
    # on the CPU: a GPU may pick other convolution kernels (TF32 ones) for other batch sizes
    a = generate(run, 3, mode=mode, seed=1, batch_size=3, device="cpu", progress=False)
    b = generate(run, 3, mode=mode, seed=1, batch_size=1, device="cpu", progress=False)
    assert a.shape == (3, 1, 28, 28) and torch.allclose(a, b, atol=1e-5)
    assert math.isfinite(a.sum().item())
    pngs = sorted(p.name for p in run.glob("samples-*.png"))
    assert pngs, "no progress grid"


def test_cli_rejects_bad_jko_settings(capsys):
    from coopnets.commands import main
    assert main(["train", "--preset", "smoke", "--algorithm", "wgcn", "--jko-prox", "implicit"]) == 2
    assert "--jko-prox" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--algorithm", "wgcn", "--jko-inner-step", "1"]) == 2
    assert "diverges" in capsys.readouterr().err
    assert main(["train", "--preset", "ggcn-mnist-cpu", "--gen-steps", "0"]) == 2


def test_bench_energy_end_to_end(digits_npz, tmp_path, capsys):
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_energy
    rc = bench_energy.main([
        "--data", str(digits_npz), "--set", "subset=0:16", "des_width=4", "gen_width=4", "z_dim=8",
        "batch_size=4", "num_chains=4", "des_steps=2", "gen_steps=1", "--valid-subset", "16:32",
        "--steps-gcn", "3", "--steps-wgcn", "3", "--steps-ggcn", "3", "--outdir",
        str(tmp_path / "runs"), "--plots", str(tmp_path), "--score", "--num-samples", "8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert (tmp_path / "energy-curves.png").stat().st_size > 1000
    for label in ("| GCN (Langevin, Alg. D) | 3 |", "| wGCN (JKO, K_in 3) | 3 |",
                  "| GGCN (hidden JKO, amortized, g fits data) | revise | 3 |"):
        assert label in out
    assert bench_energy.blow_up({"energy": [1.0] * 20 + [5.0, 500.0], "step": list(range(22))}) == 21


def test_bench_energy_sweep_stops_langevin_past_two_s_and_not_the_prox(digits_npz, tmp_path, capsys):
    """δ = 0.05 > 2s (s = 0.016): the explicit step amplifies the reference term by |1 − τ/s²|
    = 3.9 per step and the loop stops it; the proximal step contracts it and runs on."""
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_energy
    rc = bench_energy.main([
        "--data", str(digits_npz), "--set", "subset=0:16", "des_width=4", "z_dim=8",
        "batch_size=4", "num_chains=4", "--models", "gcn", "wgcn-semi", "ggcn",
        "--step-sizes", "0.05", "--sweep-steps", "3", "--outdir", str(tmp_path / "runs")])
    assert rc == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| 0.05 |")]
    assert len(rows) == 2  # GGCN is left out: its chains do not use δ
    assert "| GCN (Langevin, Alg. D) | step 1 |" in rows[0]
    assert "| wGCN (semi-implicit) | no |" in rows[1]


def test_bench_energy_jumpiness_is_zero_for_flat_and_large_for_jumps():
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_energy
    assert bench_energy.jumpiness({"energy": np.full(10, 3.0)}) == 0.0
    jumpy = np.array([1.0] * 5 + [1.0, -9.0, 1.0, 1.0, 1.0])
    assert bench_energy.jumpiness({"energy": jumpy}) == 10.0


def _ggcn_distance_to_data(infer_steps: int, steps: int = 100) -> tuple[float, float]:
    """Mean squared distance of fresh samples g(z⁰) to constant data after ``steps`` GGCN
    steps, before and after (des_lr tiny, so f hardly tilts: what g learns it learns itself)."""
    cfg = resolve("smoke", algorithm="ggcn", gen_norm="none", des_steps=0, gen_steps=2,
                  gen_step_size=0.2, des_lr=1e-6, gen_lr=1e-2, batch_size=8, num_chains=8,
                  ggcn_infer_steps=infer_steps, ggcn_infer_step=0.1)
    torch.manual_seed(0)
    des, gen = build_nets(cfg, 1)
    latent_shape = gen.latent_shape(28)
    nets = Nets(des, gen, torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(0.5, 0.999)),
                torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(0.5, 0.999)), latent_shape)
    x = torch.full((8, 1, 28, 28), 0.6)
    state = {"chains": None, "latents": torch.randn(8, *latent_shape)}
    rng, z = torch.Generator().manual_seed(0), torch.randn(64, *latent_shape)

    def distance():
        with torch.no_grad():
            return (gen(z) - 0.6).pow(2).mean().item()
    before = distance()
    for _ in range(steps):
        result = STEPS["ggcn"](nets, Batch(x, torch.arange(8)), state, cfg, rng)
        state = result.state
    assert ("fit_loss" in result.stats) == bool(infer_steps)
    return before, distance()


def test_ggcn_upsampler_learns_the_data_only_when_it_fits_it():
    """ggcn.md §4.5 read literally trains g only on where its own chains end, so g never sees
    the data; with ggcn_infer_steps it is also fitted to the observed examples (Algorithm G)."""
    before, literal = _ggcn_distance_to_data(0)
    _, fitted = _ggcn_distance_to_data(10)
    assert fitted < 0.05 * before, (before, fitted)
    assert literal > 0.5 * before, (before, literal)


def _ggcn_gaps(data, out, **kw):
    """GGCN's f(data) − f(syn) in units of its default limit (0.1 per latent dimension), over
    60 smoke steps whose chains cannot follow f (one tiny hidden step, a frozen upsampler)."""
    from coopnets.training import train
    cfg = resolve("smoke", algorithm="ggcn", data=str(data), outdir=str(out), steps=60,
                  gen_norm="none", des_steps=0, gen_steps=1, gen_step_size=1e-3, gen_lr=1e-8,
                  ggcn_infer_steps=0, des_lr=0.01, log_every=1, sample_every=0, ckpt_every=0,
                  progress=False, **kw)
    run = train(cfg, new_run=True)
    limit = 0.1 * cfg.z_dim  # the default: 0.1 per latent dimension
    return [json.loads(line)["f_gap"] / limit for line in open(run / "stats.jsonl")]


def test_ggcn_gap_limit_is_in_hidden_units_and_holds(digits_npz, tmp_path):
    """The x-space limit (per pixel, 1/s²) is ~10⁵ per image at s = 0.016 and never binds on the
    hidden model's energies (~d/2); GGCN's is 0.1 per latent dimension and holds the gap."""
    paper = _ggcn_gaps(digits_npz, tmp_path / "paper", des_gap_limit=0.0)
    default = _ggcn_gaps(digits_npz, tmp_path / "default")
    assert paper[-1] > 1e4 and paper[-1] > paper[30] > paper[10]  # a runaway, still growing
    assert max(abs(g) for g in default[10:]) < 5  # bounded (measured: 3 G at most)
    assert 0.5 < sum(default[30:]) / len(default[30:]) < 1.5  # and held at G on average


def test_a_ggcn_run_saved_before_the_hidden_limit_keeps_its_loss():
    """Runs saved before ggcn_infer_steps and ggcn_gap_units existed computed with neither."""
    from coopnets.checkpoint import config_dict
    from coopnets.config import config_from_dict
    from coopnets.particle import hidden_gap_limit
    old = {k: v for k, v in config_dict(resolve("ggcn-mnist-cpu")).items()
           if k not in ("ggcn_infer_steps", "ggcn_infer_step", "ggcn_gap_units")}
    cfg = config_from_dict(old, saved=True)
    assert cfg.ggcn_infer_steps == 0 and cfg.ggcn_gap_units == "pixel"
    x, z = torch.zeros(2, 1, 28, 28), torch.zeros(2, 100)
    assert hidden_gap_limit(cfg, z, x) == pytest.approx(0.1 * 784 / 0.016 ** 2)
    assert hidden_gap_limit(resolve("ggcn-mnist-cpu"), z, x) == pytest.approx(10.0)
