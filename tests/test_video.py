"""Spatial-temporal CoopNets (Exp 7): video I/O, the 3-D nets, the CLI, metrics and LDS."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from coopnets.commands import main
from coopnets.errors import UserError
from coopnets.images import to_float
from coopnets.lds import fit_lds
from coopnets.metrics.video_quality import video_scores
from coopnets.models import DESCRIPTORS, GENERATORS
from coopnets.video import VideoBatches, load_videos, save_gif, save_mp4


def smooth_video(t=12, h=32, w=32, seed=0) -> np.ndarray:
    """(T, H, W, 3) uint8: a drifting smooth colour pattern (compresses well, moves)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / h
    ph = rng.uniform(0, 2 * np.pi, 3)
    frames = [np.stack([127 + 100 * np.sin(2 * np.pi * (xx + yy * (c + 1) / 3 + k / t) + ph[c])
                        for c in range(3)], -1) for k in range(t)]
    return np.stack(frames).round().astype(np.uint8)


def as_ncthw(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(v.transpose(3, 0, 1, 2).copy())


def test_loader_round_trips_npy_frames_gif_and_mp4(tmp_path):
    v = smooth_video()
    np.save(tmp_path / "v.npy", v)
    assert torch.equal(load_videos(tmp_path / "v.npy"), as_ncthw(v)[None])  # exact
    np.savez(tmp_path / "two.npz", x=np.stack([v, v[::-1]]))
    both = load_videos(tmp_path / "two.npz", frames=5, frame_start=1, frame_stride=2)
    assert torch.equal(both[1], as_ncthw(v[::-1][1::2][:5]))  # (N, T, H, W, C) + selection
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(v):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    assert torch.equal(load_videos(folder), as_ncthw(v)[None])  # lossless
    x = to_float(as_ncthw(v))[None]
    save_gif(x, tmp_path / "v.gif")
    g = load_videos(tmp_path / "v.gif")
    assert g.shape == (1, 3, 12, 32, 32)
    assert (g.float() - as_ncthw(v).float()).abs().mean() < 6  # GIF: 256-colour palettes
    save_mp4(x, tmp_path / "v.mp4")
    m = load_videos(tmp_path / "v.mp4")
    assert m.shape == (1, 3, 12, 32, 32)
    mse = ((m.float() - as_ncthw(v).float()) ** 2).mean()
    assert 10 * math.log10(255 ** 2 / mse) > 28  # H.264 of a smooth video: close, not exact
    small = load_videos(tmp_path / "v.npy", image_size=16, center_crop=True, channels=1)
    assert small.shape == (1, 1, 12, 16, 16)


def test_video_batches_are_seeded_spatio_temporal_crops():
    v = torch.arange(2 * 3 * 10 * 8 * 8, dtype=torch.int64).reshape(2, 3, 10, 8, 8) % 256
    b = VideoBatches(v.to(torch.uint8), 1, seed=0, crop=4, crop_frames=6)
    x = b.batch(3)
    assert x.shape == (1, 3, 6, 4, 4) and torch.equal(x, b.batch(3))
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)[0]
    found = [(i, t, r, c) for i in range(2) for t in range(5) for r in range(5) for c in range(5)
             if torch.equal(v[i, :, t:t + 6, r:r + 4, c:c + 4].to(torch.uint8), u8)]
    assert found  # a true sub-block of one of the videos
    with pytest.raises(UserError, match="crop-frames"):
        VideoBatches(v.to(torch.uint8), 1, crop_frames=11)


def tiny_nets(width=4, z=3):
    des = DESCRIPTORS["dyntex"].build(3, width)
    gen = GENERATORS["dyntex"].build(3, width, z, "none")
    return des, gen


@pytest.mark.parametrize("name,size", [("dyntex", 16), ("dyntex-fc64", 64)])
def test_descriptor_input_gradient_of_each_example_is_independent_of_its_batch(name, size):
    torch.manual_seed(0)
    des = DESCRIPTORS[name].build(3, 4)
    x = torch.randn(3, 3, 8, size, size, requires_grad=True)
    (g_batch,) = torch.autograd.grad(des(x).sum(), x)
    for i in range(3):
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        (g_alone,) = torch.autograd.grad(des(xi).sum(), xi)
        assert torch.allclose(g_alone[0], g_batch[i], atol=1e-5, rtol=1e-4)
    y = x.detach().clone()
    y[1:] = torch.randn_like(y[1:])  # other examples change: example 0's gradient does not
    y.requires_grad_(True)
    (g_other,) = torch.autograd.grad(des(y).sum(), y)
    assert torch.allclose(g_other[0], g_batch[0], atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in des.modules())


def test_stationary_nets_make_longer_larger_videos_and_are_local():
    torch.manual_seed(0)
    des, gen = tiny_nets()
    small, big = gen.latent_shape(32, 8), gen.latent_shape(64, 16)
    assert small == (3, 2, 2, 2) and big == (3, 4, 4, 4)
    z = torch.randn(1, *big)
    with torch.no_grad():
        x_big = gen(z)
        x_small = gen(z[:, :, :3, :3, :3])  # a corner of the same latent
        x_tiny = gen(z[:, :, :2, :2, :2])
    assert x_big.shape == (1, 3, 16, 64, 64) and x_small.shape == (1, 3, 12, 48, 48)
    # Fully convolutional: away from the corner's far boundary (one latent cell: 4 frames,
    # 16 pixels) the two videos coincide; nearer to it they differ.
    assert torch.equal(x_big[..., :4, :16, :16], x_small[..., :4, :16, :16])
    assert not torch.allclose(x_big[..., :4, :16, :16], x_tiny[..., :4, :16, :16], atol=1e-5)
    f = des(x_big)
    assert f.shape == (1,) and torch.isfinite(f).all()
    with pytest.raises(UserError, match="multiple of 4"):
        gen.latent_shape(32, 6)


def test_fixed_layout_nets_are_stationary_in_time_only():
    """dyntex-fc64: latents (d, t, 1, 1) make 64x64 frames of any length (the first frames do
    not depend on latent cells far later); f is invariant to a shift in time (circular
    padding) but not in space, and other frame sizes are refused with one line."""
    torch.manual_seed(0)
    des, gen = DESCRIPTORS["dyntex-fc64"].build(3, 4).double(), GENERATORS["dyntex-fc64"].build(3, 4, 3, "none")
    assert gen.latent_shape(64, 8) == (3, 2, 1, 1) and gen.latent_shape(64, 24) == (3, 6, 1, 1)
    assert not gen.stationary
    z = torch.randn(1, *gen.latent_shape(64, 24))
    with torch.no_grad():
        long, short = gen(z), gen(z[:, :, :3])
    assert long.shape == (1, 3, 24, 64, 64) and short.shape == (1, 3, 12, 64, 64)
    assert torch.equal(long[:, :, :4], short[:, :, :4])  # local in time
    assert not torch.allclose(long[:, :, :4], gen(z[:, :, :1]).detach()[:, :, :4], atol=1e-5)
    for m in des.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.padding_mode = "circular"
    x = torch.randn(1, 3, 16, 64, 64, dtype=torch.float64)
    assert des.top(des.body(x)).shape[-2:] == (1, 1)  # the top covers the whole frame
    torch.testing.assert_close(des(torch.roll(x, 4, dims=2)), des(x))  # 4 = the body's stride in time
    assert not torch.allclose(des(torch.roll(x, (16, 16), dims=(3, 4))), des(x))  # positions matter
    with pytest.raises(UserError, match="64x64 frames only") as e:
        gen.latent_shape(32, 8)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="takes 64x64 frames") as e:
        des(x[..., :32, :32])
    assert "\n" not in str(e.value)


def test_dyntex_fc_cpu_smoke_run_synthesizes_longer_videos_at_its_size(tmp_path, capsys):
    np.save(tmp_path / "clip.npy", smooth_video(t=32, h=64, w=64))
    runs = tmp_path / "runs"
    base = ["train", "--preset", "dyntex-fc-cpu", "--data", str(tmp_path / "clip.npy"),
            "--des-width", "4", "--gen-width", "4", "--outdir", str(runs), "--progress", "false"]
    assert main(base + ["--steps", "2", "--sample-every", "2"]) == 0
    (run,) = runs.iterdir()
    for stem in ("samples-gen-000002", "samples-rev-000002"):  # whole 64x64 frames, 8 of them
        with Image.open(run / f"{stem}.gif") as im:
            assert im.n_frames == 8 and im.size == (4 * 64 + 3 * 2, 64)
    assert main(["sample", str(run), "-n", "2", "--frames", "24", "--out", str(tmp_path / "long.gif")]) == 0
    with Image.open(tmp_path / "long.gif") as im:
        assert im.n_frames == 24 and im.size == (2 * 64 + 2, 64)  # 3x the trained length
    assert "stationary" in error_line(capsys, ["sample", str(run), "--size", "128",
                                               "--out", str(tmp_path / "big.gif")])
    err = error_line(capsys, base + ["--new-run", "--image-size", "32", "--steps", "1"])
    assert "64x64 frames only" in err
    err = error_line(capsys, base + ["--new-run", "--crop-size", "32", "--steps", "1"])
    assert "64x64 frames only" in err


def test_dyntex_cpu_smoke_run_through_the_cli_writes_gifs(tmp_path, capsys):
    np.save(tmp_path / "clip.npy", smooth_video(t=32, h=32, w=32))
    runs = tmp_path / "runs"
    assert main(["train", "--preset", "dyntex-cpu", "--data", str(tmp_path / "clip.npy"),
                 "--steps", "2", "--sample-every", "2", "--des-width", "4", "--gen-width", "4",
                 "--outdir", str(runs), "--progress", "false"]) == 0
    (run,) = runs.iterdir()
    for stem in ("samples-gen-000002", "samples-rev-000002"):
        with Image.open(run / f"{stem}.gif") as im:
            assert im.n_frames == 8 and im.size == (4 * 32 + 3 * 2, 32)  # 4 side by side
        assert (run / f"{stem}.png").is_file()
    assert main(["sample", str(run), "-n", "2", "--frames", "32", "--size", "64",
                 "--out", str(tmp_path / "long.gif")]) == 0
    with Image.open(tmp_path / "long.gif") as im:
        assert im.n_frames == 32 and im.size == (2 * 64 + 2, 64)  # longer and larger than trained
    assert main(["sample", str(run), "-n", "1", "--out", str(tmp_path / "s.mp4")]) == 0
    assert load_videos(tmp_path / "s.mp4").shape == (1, 3, 8, 32, 32)
    assert main(["sample", str(run), "-n", "2", "--mode", "gen", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (2, 8, 32, 32, 3)
    # checkpointed the same way: an export folder samples the same video as the run
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert main(["sample", str(tmp_path / "exp"), "-n", "2", "--mode", "gen",
                 "--out", str(tmp_path / "e.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "e.npz")["samples"], np.load(tmp_path / "s.npz")["samples"])
    # (coopnets complete on video runs: tests/test_completion_video.py)
    assert "video run" in error_line(capsys, ["interpolate", str(run)])


def test_lds_reproduces_the_linear_system_it_was_fitted_to():
    """A noise-free system y_t = ȳ + C x_t, x_{t+1} = A x_t with A a rotation whose states
    sum to zero over the clip: the fit recovers A's eigenvalues and the clip exactly."""
    rng = np.random.default_rng(0)
    t, n = 24, 4
    angles = 2 * np.pi * np.array([1, 3]) / t  # whole periods over t frames: mean state 0
    A = np.zeros((n, n))
    for k, a in enumerate(angles):
        A[2 * k:2 * k + 2, 2 * k:2 * k + 2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    C = np.linalg.qr(rng.standard_normal((3 * 8 * 8, n)))[0] * 40
    mean = rng.uniform(60, 190, 3 * 8 * 8)
    x, ys = rng.standard_normal(n), []
    for _ in range(t):
        ys.append(mean + C @ x)
        x = A @ x
    video = np.stack(ys, 1).reshape(3, 8, 8, t).transpose(0, 3, 1, 2)
    lds = fit_lds(video, n=n)
    assert np.allclose(np.sort_complex(np.linalg.eigvals(lds.A)),
                       np.sort_complex(np.linalg.eigvals(A)), atol=1e-8)
    assert np.abs(lds.B).max() < 1e-6  # no residual: no noise needed
    assert np.allclose(lds.synthesize(t, noise=False), video, atol=1e-7)
    assert np.allclose(lds.mean, video.transpose(0, 2, 3, 1).reshape(-1, t).mean(1))
    assert lds.synthesize(2 * t).shape == (3, 2 * t, 8, 8)  # any length


def test_video_scores_closed_forms():
    obs = torch.full((3, 4, 16, 16), 100, dtype=torch.uint8)
    obs[:, :, :8] = 50
    same = video_scores(obs[None], obs)
    assert np.isinf(same["psnr"]).all() and np.allclose(same["ssim"], 1.0)
    off = video_scores((obs + 10)[None], obs)
    assert np.allclose(off["psnr"], 20 * np.log10(25.5))  # MSE (10/255)²
    with pytest.raises(UserError, match="same"):
        video_scores(obs[None, :, :2], obs)


def error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("coopnets: error:") and "\n" not in err, err
    return err


def test_bad_video_inputs_exit_2_with_one_line(tmp_path, capsys, smoke_run):
    base = ["train", "--preset", "dyntex-cpu", "--outdir", str(tmp_path / "runs"), "--progress", "false"]
    (tmp_path / "broken.avi").write_bytes(b"RIFF....AVI not really a video" * 10)
    assert "cannot read video" in error_line(capsys, base + ["--data", str(tmp_path / "broken.avi")])
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty.mp4" in error_line(capsys, base + ["--data", str(tmp_path / "empty.mp4")])
    np.save(tmp_path / "flat.npy", np.zeros((4, 5), np.uint8))
    assert "video array" in error_line(capsys, base + ["--data", str(tmp_path / "flat.npy")])
    np.save(tmp_path / "float.npy", np.zeros((8, 4, 4, 3), np.float32))
    assert "uint8" in error_line(capsys, base + ["--data", str(tmp_path / "float.npy")])
    np.save(tmp_path / "short.npy", smooth_video(t=8))
    assert "only 8 frames" in error_line(capsys, base + ["--data", str(tmp_path / "short.npy")])
    (tmp_path / "noframes").mkdir()
    assert "no frames" in error_line(capsys, base + ["--data", str(tmp_path / "noframes")])
    assert "frame-stride" in error_line(capsys, base + ["--data", str(tmp_path / "short.npy"),
                                                        "--frame-stride", "0"])
    assert "multiple of 4" in error_line(capsys, base + ["--data", str(tmp_path / "short.npy"),
                                                         "--frames", "8", "--crop-frames", "6"])
    assert "video run" in error_line(capsys, ["sample", str(smoke_run), "-n", "2",
                                              "--out", str(tmp_path / "x.gif")])
    assert "video runs only" in error_line(capsys, ["sample", str(smoke_run), "--frames", "8"])


def test_bench_dyntex_end_to_end_on_a_tiny_clip(tmp_path, capsys):
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_dyntex
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / bench_dyntex.CLIPS["vapour"], smooth_video(t=8, h=32, w=32))
    assert bench_dyntex.main(["--data-dir", str(data), "--clips", "vapour", "--steps", "2",
                              "--frames", "8", "--size", "32", "--outdir", str(tmp_path / "runs"),
                              "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| LDS (ours, same protocol) |" in out and "| CoopNets (paper) | 19.41 | 0.599 |" in out
    with Image.open(tmp_path / "out" / "vapour.gif") as im:
        assert im.n_frames == 8 and im.size == (3 * 32 + 2 * 2, 32)  # observed | 2 syntheses
    assert (tmp_path / "out" / "vapour.png").is_file()
    assert bench_dyntex.main(["--data-dir", str(tmp_path / "nope")]) == 0  # a skip message
    assert "skipped" in capsys.readouterr().out
