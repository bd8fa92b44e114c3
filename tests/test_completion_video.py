"""Video completion (issue 12): occluded pixels or missing frames of a video, by the same
posterior inference as images (coopnets.completion), the masks and the command line.

The inference is checked against the closed form of a LINEAR video generator g(z) = W z: with
frames missing, the masked posterior mode solves (Wᵀ M W / σ² + I) z = Wᵀ M x / σ², and the
missing frames are W z* there.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_completion import LinearGenerator, QuadraticDescriptor
from test_video import error_line, smooth_video, tiny_nets

from coopnets import masks
from coopnets.commands import main
from coopnets.completion import (complete, complete_images, infer_latent, missing_frame_psnr,
                                 psnr_per_image, recovery_error_per_image, refine_occluded)
from coopnets.errors import UserError


class LinearVideoGenerator(LinearGenerator):
    """g(z) = W z reshaped to (C, T, H, W); one latent vector for the whole clip."""

    def latent_shape(self, image_size: int, frames: int = 0) -> tuple:
        return (self.weight.shape[1],)


# ---- masks -----------------------------------------------------------------------------------
def test_missing_frame_masks_round_trip():
    n, t, size = 6, 32, 8
    m = masks.parse_mask("frames:0.25", size, n, seed=3, frames=t)
    assert m.shape == (n, 1, t, size, size) and set(m.unique().tolist()) == {0.0, 1.0}
    per_frame = m.flatten(3)  # (n, 1, T, H·W): every frame wholly present or wholly missing
    assert ((per_frame.min(3).values == per_frame.max(3).values)).all()
    missing = per_frame[:, 0, :, 0] == 0  # (n, T)
    assert (missing.sum(1) == 8).all()  # exactly round(0.25 · 32) per video
    assert len({tuple(r.nonzero()[:, 0].tolist()) for r in missing}) > n // 2  # drawn at random ...
    assert torch.equal(m, masks.parse_mask("frames:0.25", size, n, seed=3, frames=t))  # ... seeded
    assert torch.equal(m[:2], masks.parse_mask("frames:0.25", size, 2, seed=3, frames=t))
    r = masks.parse_mask("frames:8-15", size, 2, frames=t)
    gone = (r[:, 0].flatten(2) == 0).all(2)  # (2, T)
    assert gone[:, 8:16].all() and not gone[:, :8].any() and not gone[:, 16:].any()
    assert (r[:, 0].flatten(2) == 0).any(2).equal(gone)  # the other frames wholly visible
    one = masks.parse_mask("frames:31-31", size, 1, frames=t)
    assert (one[0, 0, 31] == 0).all() and (one[0, 0, :31] == 1).all()


def test_image_masks_on_videos():
    t = 5
    block = masks.parse_mask("m30", 16, 3, seed=1, frames=t)
    image = masks.parse_mask("m30", 16, 3, seed=1)
    assert block.shape == (3, 1, t, 16, 16)
    for k in range(t):  # a fixed occluder: the image mask in every frame
        assert torch.equal(block[:, :, k], image)
    pix = masks.parse_mask("pixels:0.5", 16, 2, seed=0, frames=t)
    assert torch.equal(pix[:, :, 0], masks.parse_mask("pixels:0.5", 16, 2, seed=0))
    assert not torch.equal(pix[:, :, 0], pix[:, :, 1])  # drawn afresh in every frame
    assert torch.equal(masks.parse_mask("center", 16, 2, frames=t)[:, :, 3], masks.parse_mask("center", 16, 2))


@pytest.mark.parametrize("spec,frames,match", [
    ("frames:lots", 8, "fraction"), ("frames:1.0", 8, "fraction"), ("frames:0.99", 8, "hides all"),
    ("frames:0-7", 8, "at least one frame"), ("frames:5-8", 8, "LAST < 8"), ("frames:6-2", 8, "FIRST <= LAST"),
    ("frames:2-x", 8, "two frame numbers"), ("frames:0.25", 0, "video runs")])
def test_bad_frame_specs_are_one_line_user_errors(spec, frames, match):
    with pytest.raises(UserError, match=match) as e:
        masks.parse_mask(spec, 8, 2, frames=frames)
    assert "\n" not in str(e.value)


# ---- metrics -----------------------------------------------------------------------------------
def test_video_metrics_definitions():
    a = torch.zeros(2, 1, 4, 3, 3)
    b = a.clone()
    b[:, :, 1] = 0.5  # frame 1 wrong by 0.5 everywhere
    m = torch.ones(2, 1, 4, 3, 3)
    m[0, :, 1] = 0  # video 0: frame 1 missing
    m[1, :, 1, :1] = 0  # video 1: one row of frame 1 occluded, no frame wholly missing
    assert torch.allclose(psnr_per_image(a, b), torch.full((2,), 10 * math.log10(1 / (0.25 / 4)),
                                                           dtype=torch.float64))
    assert torch.allclose(recovery_error_per_image(a, b, m), torch.tensor([0.5, 0.5], dtype=torch.float64))
    pm = missing_frame_psnr(a, b, m)
    assert pm[0].item() == pytest.approx(10 * math.log10(1 / 0.25)) and math.isnan(pm[1])


# ---- inference -------------------------------------------------------------------------------
SHAPE, D_LAT, SIGMA = (1, 8, 4, 4), 5, 0.5  # (C, T, H, W)


def test_missing_frames_are_filled_with_the_masked_least_squares_mode():
    g = torch.Generator().manual_seed(0)
    gen = LinearVideoGenerator(0.3 * torch.randn(math.prod(SHAPE), D_LAT, generator=g), SHAPE)
    x = torch.rand(2, *SHAPE, generator=g) * 2 - 1
    mask = masks.parse_mask("frames:0.25", SHAPE[-1], 2, seed=1, frames=SHAPE[1])  # 2 of 8 missing
    w = gen.weight.detach().double()
    kw = dict(residual_std=SIGMA, steps=400, step_size=10.0, restarts=1, seed=0, noise=False,
              latent_shape=(D_LAT,))
    z, _ = infer_latent(gen, x, mask, **kw)
    y, _, _ = complete(QuadraticDescriptor(), gen, x, mask, refine_steps=0, ref_std=1.0,
                       des_step_size=0.1, **kw)
    for i in range(2):
        mi = mask[i].expand(SHAPE).reshape(-1).double()
        a = w.T @ (mi[:, None] * w) / SIGMA**2 + torch.eye(D_LAT, dtype=torch.float64)
        z_star = torch.linalg.solve(a, w.T @ (mi * x[i].reshape(-1).double()) / SIGMA**2)
        ev = torch.linalg.eigvalsh(a)
        # the step is capped at δ²/2 = 1/λmax: the error shrinks by 1 − λmin/λmax per step
        assert (1 - float(ev[0] / ev[-1])) ** 400 * (z_star.norm() + 3 * math.sqrt(D_LAT)) < 1e-4
        assert torch.allclose(z[i].double(), z_star, atol=2e-4 * (1 + z_star.norm()))
        gone = mi == 0
        assert gone.sum() == 2 * 16  # two whole frames of 4x4
        filled = (w @ z_star)[gone]  # the missing frames are g(z*) there ...
        assert torch.allclose(y[i].reshape(-1).double()[gone], filled, atol=1e-3)
        assert torch.equal(y[i].reshape(-1)[~gone], x[i].reshape(-1)[~gone])  # ... the rest is x


def test_refinement_keeps_the_visible_pixels_of_a_video_bit_for_bit():
    torch.manual_seed(0)
    des, gen = tiny_nets()
    x = torch.rand(2, 3, 8, 16, 16) * 2 - 1
    mask = masks.parse_mask("frames:0.25", 16, 2, seed=0, frames=8) * masks.parse_mask(
        "pixels:0.3", 16, 2, seed=1, frames=8)
    y, z, _ = complete(des, gen, x, mask, residual_std=0.3, steps=2, step_size=0.1, restarts=2,
                       seed=0, refine_steps=2, ref_std=0.16, des_step_size=0.05,
                       latent_shape=gen.latent_shape(16, 8))
    visible = mask.expand_as(x) > 0.5
    assert torch.equal(y[visible], x[visible]) and torch.isfinite(y).all()
    with torch.no_grad():
        start = torch.where(visible, x, gen(z))
    refined = refine_occluded(des, start, mask, steps=2, ref_std=0.16, step_size=0.05, seed=0)
    assert torch.equal(refined[visible], x[visible])  # clamped during the refinement itself
    assert not torch.allclose(refined[~visible], start[~visible])  # the descriptor moved the rest


def test_all_visible_video_comes_back_unchanged():
    torch.manual_seed(1)
    des, gen = tiny_nets()
    videos = torch.randint(0, 256, (1, 3, 8, 16, 16), dtype=torch.uint8)
    ones = masks.parse_mask("pixels:0", 16, 1, frames=8)
    assert ones.shape == (1, 1, 8, 16, 16) and ones.min() == 1

    class Cfg:  # the fields complete_images reads from a run's config
        residual_std, gen_step_size, ref_std, des_step_size = 0.3, 0.1, 0.16, 0.05

    res = complete_images(des, gen, Cfg, videos, ones, steps=2, restarts=1, refine_steps=2, seed=0)
    assert torch.equal(res["recovered"], res["original"])
    assert torch.isinf(res["psnr"]).all() and torch.isnan(res["error"]).all()
    assert torch.isnan(res["psnr_missing"]).all()


# ---- command line on a 2-step dyntex-cpu run -----------------------------------------------------
@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vidrun")
    np.save(root / "clip.npy", smooth_video(t=32, h=32, w=32))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--preset", "dyntex-cpu", "--data", str(root / "clip.npy"),
                     "--steps", "2", "--sample-every", "2", "--des-width", "4", "--gen-width", "4",
                     "--outdir", str(root / "runs"), "--progress", "false"]) == 0
    finally:
        torch.set_num_threads(n)
    (run,) = (root / "runs").iterdir()
    return run, root / "clip.npy"


def test_cli_completes_missing_frames_and_writes_gifs(video_run, tmp_path, capsys):
    run, clip = video_run
    out = tmp_path / "done"
    assert main(["complete", str(run), "--data", str(clip), "--mask", "frames:0.25", "--out", str(out),
                 "--steps", "3", "--restarts", "2", "--refine-steps", "1"]) == 0
    lengths = set()
    for name in ("original", "occluded", "recovered"):
        with Image.open(out / f"{name}.gif") as im:  # loaded as the run was: 32 frames of 64x64
            # Pillow stores identical consecutive frames (adjacent black missing frames of
            # occluded.gif) once, with their durations added: the playback is the same
            assert im.size == (64, 64) and (im.n_frames == 32 or name == "occluded")
            durations = []
            for k in range(im.n_frames):
                im.seek(k)
                durations.append(im.info["duration"])
            lengths.add(sum(durations))
        assert (out / f"{name}.png").is_file()  # the frame strip
    assert len(lengths) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["psnr"][0]) and math.isfinite(metrics["psnr_missing_frames"][0])
    assert 0 < metrics["error"][0] < 1
    table = capsys.readouterr().out
    assert "missing dB" in table and "video" in table and "mean" in table


def test_cli_bad_video_inputs_exit_2_with_one_line(video_run, smoke_run, tmp_path, capsys):
    run, clip = video_run
    base = ["complete", str(run), "--data", str(clip), "--out", str(tmp_path), "--steps", "1"]
    assert "frames:FIRST-LAST" in error_line(capsys, base + ["--mask", "frames:3-x"])
    assert "LAST < 32" in error_line(capsys, base + ["--mask", "frames:30-40"])
    assert "multiple of 4" in error_line(capsys, base + ["--mask", "m30", "--frames", "6"])
    np.save(tmp_path / "short.npy", smooth_video(t=8))
    assert "only 8 frames" in error_line(capsys, ["complete", str(run), "--data", str(tmp_path / "short.npy"),
                                                  "--mask", "m30", "--out", str(tmp_path)])
    from coopnets.images import to_float
    from coopnets.video import save_gif
    save_gif(to_float(torch.from_numpy(smooth_video(t=4, h=28, w=28).transpose(3, 0, 1, 2).copy())),
             tmp_path / "clip.gif")
    image_run = ["complete", str(smoke_run), "--out", str(tmp_path), "--steps", "1"]
    assert "image run" in error_line(capsys, image_run + ["--data", str(tmp_path / "clip.gif"), "--mask", "m30"])
    assert "video runs" in error_line(capsys, image_run + ["--data", str(tmp_path / "clip.gif"),
                                                           "--mask", "m30", "--frames", "8"])
