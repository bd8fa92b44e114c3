"""Pattern completion (Exp 6), masks and latent interpolation (Fig. 6).

The inference is checked against a closed form: for a LINEAR generator g(z) = W z the masked
posterior is Gaussian, and its mode solves (Wᵀ M W / σ² + I) z = Wᵀ M x / σ².
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from coopnets import masks
from coopnets.commands import main
from coopnets.completion import (complete, infer_latent, posterior_curvature, psnr_per_image,
                                 recovery_error_per_image, refine_occluded)
from coopnets.errors import UserError
from coopnets.interpolation import latent_path


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core machine a second intra-op thread only waits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class LinearGenerator(nn.Module):
    """g(z) = W z reshaped to (C, H, W)."""

    def __init__(self, weight: torch.Tensor, image_shape: tuple):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (D, d)
        self.image_shape = image_shape

    def latent_shape(self, image_size: int) -> tuple:
        return (self.weight.shape[1],)

    def forward(self, z):  # (B, d) -> (B, C, H, W)
        return (z @ self.weight.T).view(len(z), *self.image_shape)


class QuadraticDescriptor(nn.Module):
    """f(x) = −||x − c||² / 2: pulls pixels towards c (only to see that refinement moves them)."""

    def forward(self, x):
        return -(x - 0.5).flatten(1).pow(2).sum(1) / 2


SHAPE, D_LAT, SIGMA = (1, 6, 6), 5, 0.5


def _linear_problem(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    weight = 0.3 * torch.randn(math.prod(SHAPE), D_LAT, generator=g)
    x = torch.rand(n, *SHAPE, generator=g) * 2 - 1
    mask = torch.stack([masks.block(SHAPE[-1], 0.3, i) for i in range(n)])[:, None]  # (n,1,H,W)
    return LinearGenerator(weight, SHAPE), x, mask


def _closed_form(gen, x, mask):
    """argmax_z  −||M (x − W z)||² / (2σ²) − ||z||² / 2, per image, in float64."""
    w = gen.weight.detach().double()
    out = []
    for xi, mi in zip(x, mask):
        m = mi.expand(SHAPE).reshape(-1).double()
        a = w.T @ (m[:, None] * w) / SIGMA**2 + torch.eye(D_LAT, dtype=torch.float64)
        b = w.T @ (m * xi.reshape(-1).double()) / SIGMA**2
        out.append((torch.linalg.solve(a, b), torch.linalg.eigvalsh(a)))
    return out


def test_gradient_inference_reaches_the_masked_least_squares_optimum():
    gen, x, mask = _linear_problem()
    sol = _closed_form(gen, x, mask)
    lam_min = min(float(ev[0]) for _, ev in sol)
    lam_max = max(float(ev[-1]) for _, ev in sol)
    # Gradient ascent with rate η = δ²/2 on this quadratic contracts the error by
    # ρ = max|1 − η λ| per step; η = 2 / (λmin + λmax) gives ρ = (κ − 1) / (κ + 1).
    eta = 2.0 / (lam_min + lam_max)
    rho = (lam_max - lam_min) / (lam_max + lam_min)
    steps = 300
    z, res = infer_latent(gen, x, mask, residual_std=SIGMA, steps=steps, step_size=math.sqrt(2 * eta),
                          restarts=2, seed=0, latent_shape=(D_LAT,), noise=False, adapt_step=False)
    z0 = torch.randn(D_LAT)  # a start of the same scale (|z0 − z*| is a few units)
    assert rho**steps * 10 * (z0.norm() + 5) < 1e-6  # the iteration error is negligible, so ...
    for i, (z_star, _) in enumerate(sol):
        # ... what remains is float32 rounding at the fixed point, about κ·ε₃₂·|z*| ≈ 1e-6 |z*|;
        # 1e-4 leaves a wide margin yet fails for any wrong gradient, mask or step.
        assert torch.allclose(z[i].double(), z_star, atol=1e-4 * (1 + z_star.norm())), (z[i], z_star)
        r_star = ((x[i].double() - (gen.weight.detach().double() @ z_star).view(SHAPE)) * mask[i]).pow(2)
        assert res[i].item() == pytest.approx(float(r_star.sum() / mask[i].sum()), rel=1e-4, abs=1e-7)


def test_curvature_and_step_adaptation():
    gen, x, mask = _linear_problem(seed=4)
    sol = _closed_form(gen, x, mask)
    lam = posterior_curvature(gen, torch.randn(len(x), D_LAT), mask, SIGMA, iters=30)
    # for a linear g, H = Wᵀ M W / σ² + I everywhere: power iteration finds its top eigenvalue
    assert torch.allclose(lam.double(), torch.stack([ev[-1] for _, ev in sol]), rtol=1e-3)
    # δ with δ²/2 = 3 / λmax diverges as a fixed step (|1 − 3| > 1) ...
    delta = math.sqrt(6.0 / float(lam.min()))
    kw = dict(residual_std=SIGMA, steps=300, step_size=delta, restarts=1, seed=0, latent_shape=(D_LAT,),
              noise=False)
    z_fixed, _ = infer_latent(gen, x, mask, adapt_step=False, **kw)
    z_star = torch.stack([zs for zs, _ in sol])
    assert not torch.isfinite(z_fixed).all() or (z_fixed.double() - z_star).norm() > 1e3
    # ... but is capped to δ_i²/2 = 1/λ_i per image: the error then shrinks by at least
    # ρ_i = 1 − λmin_i/λmax_i per step; after 300 steps ρ^300 |z0 − z*| < 1e-4 (see assert)
    z, _ = infer_latent(gen, x, mask, **kw)
    for i, (zs, ev) in enumerate(sol):
        rho = 1 - float(ev[0] / ev[-1])
        assert rho**300 * (zs.norm() + 3 * math.sqrt(D_LAT)) < 1e-4
        assert torch.allclose(z[i].double(), zs, atol=2e-4 * (1 + zs.norm()))


def test_restarts_keep_the_best_fit_per_image():
    gen, x, mask = _linear_problem(seed=1, n=4)
    kw = dict(residual_std=SIGMA, steps=1, step_size=0.05, seed=3, latent_shape=(D_LAT,), noise=False)
    _, r1 = infer_latent(gen, x, mask, restarts=1, **kw)
    _, r5 = infer_latent(gen, x, mask, restarts=5, **kw)
    assert (r5 <= r1).all() and (r5 < r1).any()


def test_visible_pixels_unchanged_and_result_independent_of_batch():
    gen, x, mask = _linear_problem(seed=2, n=3)
    kw = dict(residual_std=SIGMA, steps=20, step_size=0.2, restarts=2, seed=7, refine_steps=3,
              ref_std=1.0, des_step_size=0.1, latent_shape=(D_LAT,))
    des = QuadraticDescriptor()
    y, z, _ = complete(des, gen, x, mask, **kw)
    visible = mask.expand_as(x) > 0.5
    assert torch.equal(y[visible], x[visible])
    with torch.no_grad():
        g = gen(z)
    assert not torch.allclose(y[~visible], g[~visible])  # refinement moved them
    start = torch.where(visible, x, g)
    clamped = refine_occluded(des, start, mask, steps=3, ref_std=1.0, step_size=0.1, seed=7)
    assert torch.equal(clamped[visible], x[visible])  # clamped during the refinement itself
    for i in range(3):  # image i alone, named i, gives the same completion
        yi, zi, _ = complete(des, gen, x[i:i + 1], mask[i:i + 1], indices=[i], **kw)
        assert torch.allclose(yi[0], y[i], atol=1e-6) and torch.allclose(zi[0], z[i], atol=1e-6)


def test_empty_mask_returns_the_input():
    gen, x, _ = _linear_problem(seed=3)
    y, _, _ = complete(QuadraticDescriptor(), gen, x, torch.ones(1, 1, *SHAPE[-2:]), residual_std=SIGMA,
                       steps=5, step_size=0.1, restarts=1, seed=0, refine_steps=2, ref_std=1.0,
                       des_step_size=0.1, latent_shape=(D_LAT,))
    assert torch.equal(y, x)


def test_metrics_definitions():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[:, :, :2] = 0.5  # error 0.5 on the 8 pixels of the top half
    m = torch.ones(2, 1, 4, 4)
    m[0, :, :2] = 0  # image 0: the changed pixels are the occluded ones
    m[1, :, :2, :2] = 0  # image 1: 4 occluded, all changed
    err = recovery_error_per_image(a, b, m)
    assert torch.allclose(err, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.isnan(recovery_error_per_image(a, b, torch.ones_like(m))).all()
    assert torch.allclose(psnr_per_image(a, b), torch.full((2,), 10 * math.log10(1 / 0.125), dtype=torch.float64))


# ---- interpolation ---------------------------------------------------------------------------
def test_linear_interpolation_ends_and_midpoint():
    gen, _, _ = _linear_problem()
    z0, z1 = torch.randn(3, D_LAT), torch.randn(3, D_LAT)
    path = latent_path(z0, z1, 5)
    assert path.shape == (3, 5, D_LAT)
    assert torch.equal(path[:, 0], z0) and torch.equal(path[:, -1], z1)
    assert torch.allclose(path[:, 2], (z0 + z1) / 2, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(gen(path[:, 0]), gen(z0)) and torch.equal(gen(path[:, -1]), gen(z1))


def test_slerp_keeps_the_norm_and_ends():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 8, 2, 2, generator=g), torch.randn(4, 8, 2, 2, generator=g)
    z1 = z1 * (z0.flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    path = latent_path(z0, z1, 7, mode="slerp")
    assert torch.allclose(path[:, 0], z0) and torch.allclose(path[:, -1], z1)
    norms = path.flatten(2).norm(dim=2)  # (4, 7): constant along each row
    assert torch.allclose(norms, norms[:, :1].expand_as(norms), rtol=1e-5)
    lin = latent_path(z0, z1, 7).flatten(2).norm(dim=2)
    assert (lin[:, 3] < norms[:, 3] - 1e-3).all()  # the chord dips inside the sphere, slerp does not
    # the angle to z0 grows in equal steps
    cos = torch.nn.functional.cosine_similarity(path.flatten(2).double(), z0.flatten(1)[:, None].double(), dim=2)
    ang = torch.arccos(cos.clamp(-1, 1))
    assert torch.allclose(ang.diff(dim=1), ang.diff(dim=1)[:, :1].expand(4, 6), atol=1e-5)
    same = latent_path(z0, z0, 3, mode="slerp")  # ω = 0 falls back to the line
    assert torch.isfinite(same).all() and torch.allclose(same[:, 1], z0)


def test_interpolation_rejects_bad_arguments():
    with pytest.raises(UserError):
        latent_path(torch.zeros(2), torch.ones(2), 1)
    with pytest.raises(UserError):
        latent_path(torch.zeros(2), torch.ones(2), 3, mode="cubic")


# ---- masks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,fraction", [("m30", 0.3), ("m40", 0.4), ("m50", 0.5)])
def test_block_masks_cover_the_stated_area(name, fraction):
    size, n = 64, 20
    m = masks.parse_mask(name, size, n, seed=1)
    assert m.shape == (n, 1, size, size) and set(m.unique().tolist()) == {0.0, 1.0}
    side = round(math.sqrt(fraction) * size)
    for mi in m[:, 0]:
        occ = (mi == 0).nonzero()
        rows, cols = occ[:, 0], occ[:, 1]
        assert int(rows.max() - rows.min() + 1) == side == int(cols.max() - cols.min() + 1)
        assert len(occ) == side * side  # one solid square
        # the rounding of the side moves the area by at most (2 s + 1) / N² (< 1.4% here)
        assert abs(len(occ) / size**2 - fraction) <= (2 * side + 1) / size**2
    corners = {tuple((mi == 0).nonzero()[0].tolist()) for mi in m[:, 0]}
    assert len(corners) > n // 2  # placed at random ...
    assert torch.equal(m, masks.parse_mask(name, size, n, seed=1))  # ... but seeded
    assert torch.equal(m[:5], masks.parse_mask(name, size, 5, seed=1))  # mask i independent of n
    assert not torch.equal(m, masks.parse_mask(name, size, n, seed=2))


def test_center_and_pixel_masks():
    c = masks.center(64)
    assert (c == 0).sum() == 32 * 32 and c[16:48, 16:48].sum() == 0 and c.sum() == 64 * 64 - 1024
    m = masks.parse_mask("pixels:0.5", 64, 4, seed=0)
    p, n = 0.5, 64 * 64
    for mi in m:
        occluded = float((mi == 0).sum())
        assert abs(occluded - p * n) <= 5 * math.sqrt(n * p * (1 - p))  # 5 binomial std
    assert not torch.equal(m[0], m[1])
    assert masks.parse_mask("pixels:0", 8, 2).min() == 1  # nothing occluded is allowed


def test_mask_from_image(tmp_path):
    arr = np.full((16, 16), 255, np.uint8)
    arr[4:8, 2:10] = 0
    arr[0, 0] = 100  # below half grey: occluded
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = masks.parse_mask(str(tmp_path / "m.png"), 16, 3)
    assert m.shape == (3, 1, 16, 16) and int((m[0, 0] == 0).sum()) == 33
    with pytest.raises(UserError, match="16x16"):
        masks.from_image(tmp_path / "m.png", 20)


def test_bad_masks_give_clear_errors(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(UserError, match="occludes every pixel"):
        masks.parse_mask(str(tmp_path / "black.png"), 8, 1)
    with pytest.raises(UserError, match="fraction"):
        masks.parse_mask("pixels:1.0", 8, 1)
    with pytest.raises(UserError, match="takes a number"):
        masks.parse_mask("pixels:lots", 8, 1)
    with pytest.raises(UserError, match="neither a mask name"):
        masks.parse_mask("m99", 8, 1)
    with pytest.raises(UserError, match="occludes every pixel"):
        masks.check_mask(torch.zeros(2, 1, 4, 4))


# ---- command line on a tiny trained run ----------------------------------------------------------
@pytest.fixture
def tiny_run(smoke_run, smoke_data):
    return smoke_run, smoke_data


def _png(path):
    with Image.open(path) as im:
        return im.size


def test_cli_complete_writes_the_three_grids(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    out = tmp_path / "done"
    rc = main(["complete", str(run), "--input", str(data), "--mask", "m40", "--out", str(out),
               "--num", "4", "--steps", "3", "--restarts", "2", "--refine-steps", "1"])
    assert rc == 0
    sizes = {_png(out / f"{name}.png") for name in ("original", "occluded", "recovered")}
    assert sizes == {(2 * 30 + 2, 2 * 30 + 2)}  # 4 images of 28 px in a 2x2 grid, 2 px padding
    table = capsys.readouterr().out
    assert "mean" in table and "PSNR" in table and len(table.splitlines()) >= 6


def test_cli_complete_bad_masks_exit_2(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    base = ["complete", str(run), "--input", str(data), "--out", str(tmp_path), "--steps", "1"]
    assert main(base + ["--mask", str(tmp_path / "missing.png")]) == 2
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "small.png")
    assert main(base + ["--mask", str(tmp_path / "small.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "10x10" in err and "Traceback" not in err


def test_cli_interpolate(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "interp.png"
    assert main(["interpolate", str(run), "--steps", "5", "--rows", "3", "--mode", "slerp",
                 "--revise", "--out", str(out)]) == 0
    assert _png(out) == (5 * 30 + 2, 3 * 30 + 2)
    for name, value in (("a.png", 0), ("b.png", 255)):
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(tmp_path / name)
    out2 = tmp_path / "between.png"
    assert main(["interpolate", str(run), "--steps", "4", "--between", str(tmp_path / "a.png"),
                 str(tmp_path / "b.png"), "--infer-steps", "2", "--out", str(out2)]) == 0
    assert _png(out2) == ((4 + 2) * 30 + 2, 30 + 2)  # the two images at the ends of the row
