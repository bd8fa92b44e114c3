"""``coopnets eval`` end to end on small .npz files (a toy feature network stands in for Inception)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from coopnets import evaluation as evaluate
from coopnets.commands import evaluate as eval_command
from coopnets.errors import UserError
from coopnets.metrics import fid, kid, parzen_score, psnr, ssim
from coopnets.metrics.mnist_classifier import DEFAULT_WEIGHTS, mnist_features

pytestmark = pytest.mark.filterwarnings("ignore:.torch.jit.* is deprecated:DeprecationWarning")


def eval_(*argv) -> int:
    p = argparse.ArgumentParser()
    eval_command.add_arguments(p)
    return eval_command.run(p.parse_args([str(a) for a in argv]))


def last_log(path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, size=a.shape), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "a.npz", samples=a)
    np.savez(tmp_path / "b.npz", samples=b)
    return a, b


class ToyFeatures(torch.nn.Module):
    """(N, 3, 299, 299) -> (N, 48): 4x4 average pooling, a stand-in for Inception pool3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.fixture
def toy_inception(tmp_path, monkeypatch):
    path = tmp_path / "toy_inception.pt"
    torch.jit.save(torch.jit.script(ToyFeatures()), str(path))
    monkeypatch.setenv("COOPNETS_CACHE", str(tmp_path / "cache"))
    return path


def test_psnr_and_ssim_commands(tmp_path, images, capsys):
    a, b = images
    log = tmp_path / "log.jsonl"
    assert eval_(tmp_path / "a.npz", "--metric", "psnr", "--ref", tmp_path / "b.npz", "--log", log) == 0
    rec = last_log(log)
    assert rec["metric"] == "psnr" and rec["num_samples"] == 12 and rec["mode"] is None
    assert rec["value"] == pytest.approx(psnr(a[:, None], b[:, None]))
    assert "psnr" in capsys.readouterr().out
    assert eval_(tmp_path / "a.npz", "--metric", "ssim", "--ref", tmp_path / "b.npz", "--log", log,
                 "--num-samples", 5, "--ref-subset", "0:5") == 0
    rec = last_log(log)
    assert rec["value"] == pytest.approx(ssim(a[:5, None], b[:5, None])) and rec["num_samples"] == 5
    assert len(log.read_text().splitlines()) == 2  # appended, not overwritten


def test_fid_and_kid_commands_with_a_stand_in_network(tmp_path, images, toy_inception):
    a, b = images
    net = torch.jit.load(str(toy_inception))
    from coopnets.metrics.inception import preprocess
    with torch.no_grad():
        fa = net(preprocess(torch.from_numpy(a)[:, None])).double().numpy()
        fb = net(preprocess(torch.from_numpy(b)[:, None])).double().numpy()
    log = tmp_path / "log.jsonl"
    common = ["--ref", tmp_path / "b.npz", "--inception", toy_inception, "--log", log]
    assert eval_(tmp_path / "a.npz", "--metric", "fid", *common, "--save-stats", tmp_path / "a_stats.npz") == 0
    assert last_log(log)["value"] == pytest.approx(fid(fa, fb), rel=1e-5)
    assert len(list((tmp_path / "cache" / "stats").glob("*.npz"))) == 1  # reference statistics cached
    # the saved statistics of SOURCE can serve as the reference: FID(a, a) = 0
    assert eval_(tmp_path / "a.npz", "--metric", "fid", "--ref", tmp_path / "a_stats.npz",
                 "--inception", toy_inception, "--log", log) == 0
    assert abs(last_log(log)["value"]) < 1e-6
    assert eval_(tmp_path / "a.npz", "--metric", "kid", *common, "--kid-subsets", 5,
                 "--kid-subset-size", 10, "--seed", 3) == 0
    rec = last_log(log)
    mean, se = kid(fa, fb, 5, 10, seed=3)
    assert rec["value"] == pytest.approx(mean, rel=1e-5) and rec["std_error"] == pytest.approx(se, rel=1e-4)
    with pytest.raises(UserError, match="KID needs reference images"):
        eval_(tmp_path / "a.npz", "--metric", "kid", "--ref", tmp_path / "a_stats.npz",
              "--inception", toy_inception)


def test_mnist_fid_command_with_the_shipped_classifier(tmp_path, images):
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"the MNIST classifier should ship at {DEFAULT_WEIGHTS}")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 64, size=(30, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", samples=x)
    np.savez(tmp_path / "y.npz", samples=y)
    log = tmp_path / "log.jsonl"
    assert eval_(tmp_path / "x.npz", "--metric", "mnist-fid", "--ref", tmp_path / "y.npz", "--log", log,
                 "--no-cache") == 0
    want = fid(mnist_features(torch.from_numpy(x)[:, None]), mnist_features(torch.from_numpy(y)[:, None]))
    assert last_log(log)["value"] == pytest.approx(want, rel=1e-6) and want > 0


def test_parzen_command(tmp_path):
    rng = np.random.default_rng(2)
    s, v, t = (rng.integers(0, 256, size=(n, 6, 6), dtype=np.uint8) for n in (40, 20, 10))
    np.savez(tmp_path / "s.npz", samples=s)
    np.savez(tmp_path / "data.npz", x_train=np.concatenate([v, v]), x_test=t)
    log = tmp_path / "log.jsonl"
    assert eval_(tmp_path / "s.npz", "--metric", "parzen", "--validation", tmp_path / "data.npz",
                 "--validation-subset", "20:40", "--ref", tmp_path / "data.npz", "--ref-key", "x_test",
                 "--sigmas", "0.1,0.2,0.5", "--log", log) == 0
    rec = last_log(log)
    want = parzen_score(s, v, t, [0.1, 0.2, 0.5])
    assert rec["value"] == pytest.approx(want["mean"]) and rec["sigma"] == want["sigma"]
    assert rec["ref_count"] == 10 and rec["validation_count"] == 20


def test_is_command_with_a_torchscript_classifier(tmp_path, images):
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 5))
    torch.jit.save(torch.jit.script(clf), str(tmp_path / "clf.pt"))
    log = tmp_path / "log.jsonl"
    assert eval_(tmp_path / "a.npz", "--metric", "is", "--classifier", tmp_path / "clf.pt", "--splits", 2,
                 "--log", log) == 0
    rec = last_log(log)
    assert 1.0 <= rec["value"] <= 5.0 and rec["splits"] == 2


def test_a_run_source_is_sampled_and_logged_in_the_run(tmp_path, images, monkeypatch):
    run = tmp_path / "runs" / "00001-coop-test"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    a, b = images
    calls = {}

    def fake_generate(src, n, mode="gen", seed=0, batch_size=100, device="auto", **kw):
        calls.update(n=n, mode=mode, seed=seed)
        return torch.from_numpy(b[:n, None]).float() / 127.5 - 1  # exactly b after rounding

    monkeypatch.setattr("coopnets.sampling.generate", fake_generate)
    assert eval_(run, "--metric", "psnr", "--ref", tmp_path / "b.npz", "--num-samples", 12,
                 "--seed", 7, "--mode", "gen") == 0
    assert calls == {"n": 12, "mode": "gen", "seed": 7}
    rec = last_log(run / "metrics.jsonl")
    assert rec["value"] == "inf"  # identical images: infinite PSNR, logged as a string
    assert rec["seed"] == 7 and rec["mode"] == "gen" and rec["source"] == str(run.resolve())

    def broken(*args, **kw):
        return torch.full((12, 1, 16, 16), float("nan"))

    monkeypatch.setattr("coopnets.sampling.generate", broken)
    with pytest.raises(UserError, match="diverged"):
        eval_(run, "--metric", "ssim", "--ref", tmp_path / "b.npz", "--num-samples", 12)


def test_bad_inputs_are_one_line_user_errors(tmp_path, images, capsys):
    rgb = np.zeros((12, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "rgb.npz", samples=rgb)
    np.savez(tmp_path / "nan.npz", samples=np.full((4, 16, 16), np.nan))
    a = tmp_path / "a.npz"
    cases = [
        ([a, "--metric", "ssim", "--ref", tmp_path / "rgb.npz"], "channels"),
        ([a, "--metric", "psnr", "--ref", tmp_path / "b.npz", "--ref-subset", "0:5"], "one to one"),
        ([a, "--metric", "fid"], "needs --ref"),
        ([a, "--metric", "fid", "--ref", a, "--inception", tmp_path / "none.pt"], "Inception weights not found"),
        ([a, "--metric", "mnist-fid", "--ref", a, "--classifier", tmp_path / "none.pt"], "not found"),
        ([a, "--metric", "is"], "--classifier"),
        ([a, "--metric", "parzen", "--ref", a], "--validation"),
        ([tmp_path / "nan.npz", "--metric", "psnr", "--ref", a], "finite"),
        ([tmp_path / "missing.npz", "--metric", "psnr", "--ref", a], "does not exist"),
        ([a, "--metric", "psnr", "--ref", a, "--num-samples", 100], "holds only"),
    ]
    for argv, msg in cases:
        with pytest.raises(UserError, match=msg) as e:
            eval_(*argv)
        assert "\n" not in str(e.value)


def test_cli_registers_eval_and_exits_2_on_user_errors(tmp_path, images, capsys):
    from coopnets import commands as cli
    code = cli.main(["eval", str(tmp_path / "a.npz"), "--metric", "ssim", "--ref", str(tmp_path / "zzz.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_library_evaluate_without_the_cli(images):
    """coopnets.evaluate is a plain call: arrays in, the same numbers as the metric functions."""
    a, b = images
    r = evaluate.evaluate(a[:, None], "psnr", ref=b[:, None])
    assert r["value"] == pytest.approx(psnr(a[:, None], b[:, None])) and r["ref_count"] == 12
    with pytest.raises(UserError, match="unknown metric 'fud'"):
        evaluate.evaluate(a[:, None], "fud", ref=b[:, None])
    assert eval_command.METRICS == evaluate.METRICS  # the CLI offers what the library computes
