"""The results scripts in benchmarks/ run end to end on tiny data (so docs/results.md stays
reproducible), and their pieces compute what they claim."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_mnist  # noqa: E402
import bench_step  # noqa: E402
import bench_textures  # noqa: E402
from common import training_seconds  # noqa: E402


def test_mnist_ablation_end_to_end(digits_npz, tmp_path, capsys):
    out = tmp_path / "runs"
    rc = bench_mnist.main(["--data", str(digits_npz), "--preset", "smoke", "--set", "subset=0:16",
                           "--valid-subset", "16:32", "--num-samples", "12", "--outdir", str(out),
                           "--ablation", "--steps-coop", "2", "--steps-abp", "2",
                           "--budget-min", "0.0001", "--calib-steps", "12"])  # D: calibrated
    assert rc == 0
    summary = json.loads((out / "bench-mnist-ablation.json").read_text())["results"]
    assert set(summary) == {"coop", "descriptor", "abp"}
    assert set(summary["coop"]["scores"]) == {"gen", "revise"}
    assert set(summary["descriptor"]["scores"]) == {"des"}
    assert summary["descriptor"]["step"] == 1  # a 6 ms budget buys the minimum, one step
    assert all("/ablation/" in algo["run"] for algo in summary.values())
    for algo in summary.values():
        for r in algo["scores"].values():
            assert np.isfinite(r["parzen"]) and r["parzen_se"] > 0 and r["mnist_fid"] >= 0
    table = capsys.readouterr().out
    assert "descriptor: " in table and "--steps-descriptor 1" in table
    assert "| CoopNets | revise | 2 |" in table and "226 ± 2.1" in table


def test_missing_data_is_a_skip_message_not_a_crash(tmp_path, capsys):
    assert bench_mnist.main(["--data", str(tmp_path / "nope.npz")]) == 0
    assert "skipped:" in capsys.readouterr().out


def test_texture_sheet_layout():
    obs = torch.full((1, 8, 8), 1.0)  # white
    syn = torch.full((3, 1, 8, 8), -1.0)  # black
    big = torch.zeros(1, 16, 16)  # grey
    s = bench_textures.sheet(obs, syn, big, pad=2)
    assert s.shape == (16, 8 * 4 + 16 + 2 * 4, 1)
    assert (s[:8, :8] == 255).all() and (s[8:, :8] == 255).all()  # observed, then padding
    assert (s[:8, 10:18] == 0).all() and (s[:, -16:] == 128).all()


def noise_texture_folder(tmp_path, seed: int) -> Path:
    """A folder holding one 128x128 uniform-noise texture, noise.png."""
    folder = tmp_path / "textures"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(folder / "noise.png")
    return folder


def test_textures_end_to_end(tmp_path):
    folder = noise_texture_folder(tmp_path, seed=0)
    rc = bench_textures.main(["--data-dir", str(folder), "--textures", "noise", "--steps", "2",
                              "--outdir", str(tmp_path / "runs"), "--out", str(tmp_path / "docs")])
    assert rc == 0
    sheet = np.asarray(Image.open(tmp_path / "docs" / "texture-noise.png"))
    assert sheet.shape == (256, 128 * 4 + 256 + 8 * 4)  # observed | 3 x 128 | 256
    summary = json.loads((tmp_path / "runs" / "bench-textures.json").read_text())
    assert summary["results"]["noise"]["steps"] == 2
    result = summary["results"]["noise"]
    assert result["cell"] == 16 and len(result["cell_correlation"]) == 5  # observed, 3, 2x
    assert abs(result["cell_correlation"][0]) < 0.05  # uniform noise does not repeat
    assert result["layout_scale"] == 24 and len(result["clustering"]) == 5
    assert len(result["layout_horizontal"]) == len(result["layout_vertical"]) == 4  # 3 and 2x


def test_cell_correlation_finds_a_repeated_cell_and_not_noise():
    rng = np.random.default_rng(0)
    cell = rng.normal(size=(16, 16))
    tiled = np.tile(cell, (8, 8))  # 128x128, repeating every 16 pixels
    assert bench_textures.cell_correlation(tiled, 16) == pytest.approx(1.0)
    assert abs(bench_textures.cell_correlation(tiled, 8)) < 0.2  # half a cell: unrelated pixels
    noise = rng.normal(size=(128, 128))
    assert abs(bench_textures.cell_correlation(noise, 16)) < 0.05
    assert abs(bench_textures.cell_correlation(tiled + 2 * noise[::-1], 16) - 0.2) < 0.05


def brick_wall(size=224, width=12, length=45, stagger=22, dy=0, dx=0, joints=None):
    """A drawn wall of vertical brick columns: bright mortar 2 pixels wide between columns
    ``width`` apart and across each column every ``length`` pixels, shifted by ``stagger`` in
    every other column (a running bond; 0: a square grid). ``joints(y, x)`` keeps some joints."""
    y, x = np.mgrid[0:size, 0:size]
    y, x = y + dy, x + dx
    joint = (y + (x // width) % 2 * stagger) % length < 2
    if joints is not None:
        joint &= joints(y, x)
    return np.maximum(x % width < 2, joint).astype(float)


def test_joint_layout_tells_the_running_bond_from_a_grid_ladders_and_stripes():
    bond = brick_wall()
    same = bench_textures.joint_layout(brick_wall(dy=7, dx=5), bond, 48)  # the bond, moved
    assert same[0] > 0.99 and same[1] > 0.99
    grid = bench_textures.joint_layout(brick_wall(stagger=0), bond, 48)  # joints aligned across
    ladder = bench_textures.joint_layout(brick_wall(length=8), bond, 48)  # rungs 8 pixels apart
    stripes = bench_textures.joint_layout(brick_wall(length=10**6, dy=1), bond, 48)  # no joints
    assert 0.3 < grid[0] < 0.8 and ladder[0] < 0.1 and stripes[0] == 0.0
    assert min(grid[1], ladder[1], stripes[1]) > 0.99  # the columns themselves are the bond's
    # the horizontal layout is symmetric in its two pictures and blind to brightness
    assert bench_textures.joint_layout(bond, brick_wall(stagger=0), 48)[0] == pytest.approx(grid[0])
    assert bench_textures.joint_layout(3 * brick_wall(dy=3) + 1, bond, 48)[0] > 0.99


def test_joint_clustering_is_zero_for_an_even_bond_and_high_for_joints_in_one_part():
    assert bench_textures.joint_clustering(brick_wall(), 48) == pytest.approx(0.0, abs=1e-9)
    half = brick_wall(joints=lambda y, x: x < 96)  # joints in the left 96 of 218 columns only
    assert bench_textures.joint_clustering(half, 48) > 0.9
    rng = np.random.default_rng(0)
    noise = rng.random((224, 224))  # no layout: ridges everywhere, about evenly
    assert bench_textures.joint_clustering(noise, 48) < 0.1


def test_the_cell_is_the_generators_upsampling_factor():
    from coopnets.config import resolve
    assert bench_textures.generator_cell(resolve("texture-cpu")) == 16
    assert bench_textures.generator_cell(resolve("texture-224-cpu")) == 32


def test_textures_take_overrides_and_remake_a_sheet_from_its_run(tmp_path):
    folder = noise_texture_folder(tmp_path, seed=1)
    rc = bench_textures.main(["--data-dir", str(folder), "--textures", "noise", "--steps", "2",
                              "--set", "image_size=64", "crop_size=32", "des_gap_shape=wall",
                              "--outdir", str(tmp_path / "runs"), "--out", str(tmp_path / "a")])
    assert rc == 0
    summary = json.loads((tmp_path / "runs" / "bench-textures.json").read_text())["results"]
    assert summary["noise"]["image_size"] == 64
    run = summary["noise"]["run"]
    assert json.loads((Path(run) / "config.json").read_text())["des_gap_shape"] == "wall"
    first = np.asarray(Image.open(tmp_path / "a" / "texture-noise-64.png"))
    assert first.shape == (128, 64 * 4 + 128 + 8 * 4)
    rc = bench_textures.main(["--run", run, "--outdir", str(tmp_path / "runs2"),
                              "--out", str(tmp_path / "b")])
    assert rc == 0  # the same run and seeds: the same sheet, without training
    assert (np.asarray(Image.open(tmp_path / "b" / "texture-noise-64.png")) == first).all()


def test_training_seconds_adds_the_logged_intervals(tmp_path):
    lines = [{"step": 5, "sec_per_it": 2.0}, {"step": 10, "sec_per_it": 1.0},
             {"step": 12, "sec_per_it": 0.5, "des_loss": 1.0}]
    (tmp_path / "stats.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{bad\n")
    assert training_seconds(tmp_path) == pytest.approx(5 * 2.0 + 5 * 1.0 + 2 * 0.5)
    (tmp_path / "ckpt-000010.pt").write_bytes(b"")  # a checkpoint file names its run folder
    assert training_seconds(tmp_path / "ckpt-000010.pt", upto=10) == pytest.approx(15.0)


def test_a_diverged_run_is_reported_and_its_last_checkpoint_scored(digits_npz, tmp_path, capsys,
                                                                    monkeypatch):
    from coopnets import training as train_mod
    real, calls = train_mod.STEPS["coop"], []

    def nan_at_3(*a, **k):
        r = real(*a, **k)
        calls.append(None)
        return r._replace(stats={**r.stats, "f_gap": float("nan")}) if len(calls) == 3 else r

    monkeypatch.setitem(train_mod.STEPS, "coop", nan_at_3)
    out = tmp_path / "runs"
    assert bench_mnist.main(["--data", str(digits_npz), "--preset", "smoke", "--set", "subset=0:16",
                             "--valid-subset", "16:32", "--num-samples", "8", "--steps", "5",
                             "--outdir", str(out)]) == 0
    assert "warning: training diverged at step 3" in capsys.readouterr().out
    results = json.loads((out / "bench-mnist-table2.json").read_text())["results"]
    assert np.isfinite(results["real"]["parzen"])  # the real-data ceiling row
    result = results["coop"]
    assert result["step"] == 2 and np.isfinite(result["scores"]["revise"]["parzen"])


def test_bench_step_prints_eager_and_fast_side_by_side(capsys):
    """The step benchmark runs today's step functions (it once called a removed signature) and
    prints each mode beside eager with the ratio; aot_eager stands in for inductor here."""
    import coopnets.fast as fast
    real = fast.compile_module
    fast.compile_module = lambda m, backend: real(m, "aot_eager")
    try:
        rc = bench_step.main(["--presets", "smoke", "--modes", "eager", "compile", "--repeats", "1",
                              "--threads", "1", "--peak-seconds", "0.05"])
    finally:
        fast.compile_module = real
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("smoke")]
    assert [r[1] for r in rows] == ["eager", "compile"]
    assert rows[0][6] == "1.00x" and rows[1][6].endswith("x")
    assert float(rows[1][5]) > 0 and "vs port" in out


def test_bench_overrides_are_typed_and_unknown_fields_refused():
    from common import config_overrides
    from coopnets.errors import UserError
    assert config_overrides(["des_noise=false", "steps=3", "des_step_size=0.04"]) == {
        "des_noise": False, "steps": 3, "des_step_size": 0.04}
    for bad in ("des_noise", "no_such_field=1", "steps=three"):
        with pytest.raises(UserError):
            config_overrides([bad])
