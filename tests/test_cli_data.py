"""Data loaders and the command line: every bad input exits non-zero with one line."""
import dataclasses
import gzip
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from coopnets.commands import main
from coopnets.data import Batches, load_images
from coopnets.errors import UserError


def write_pngs(folder, n, size=(12, 10), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrs = []
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i:03d}.png")
        arrs.append(a)
    return np.stack(arrs)


def test_folder_zip_npz_and_idx_round_trip(tmp_path):
    arrs = write_pngs(tmp_path / "imgs" / "sub", 3)
    x = load_images(tmp_path / "imgs")
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 10, 12)
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), arrs)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for p in sorted((tmp_path / "imgs" / "sub").iterdir()):
            zf.write(p, f"class/{p.name}")
    assert torch.equal(load_images(tmp_path / "imgs.zip"), x)
    np.save(tmp_path / "a.npy", arrs)
    assert torch.equal(load_images(tmp_path / "a.npy"), x)
    grey = arrs[..., 0]
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in grey.shape) + grey.tobytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    idx = load_images(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert idx.shape == (3, 1, 10, 12) and np.array_equal(idx[:, 0].numpy(), grey)
    assert load_images(tmp_path / "imgs", channels=1).shape[1] == 1
    assert load_images(tmp_path / "imgs", image_size=8, center_crop=True).shape == (3, 3, 8, 8)
    assert len(load_images(tmp_path / "a.npy", subset="1:")) == 2


def test_batches_are_a_pure_function_of_the_step():
    imgs = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    b = Batches(imgs, 4, seed=1)
    assert torch.equal(b.batch(3), Batches(imgs, 4, seed=1).batch(3))
    epoch0 = torch.cat([b.indices(0), b.indices(1)])
    assert len(set(epoch0.tolist())) == 8  # no repeats within an epoch
    b2 = Batches(imgs, 2, seed=1)  # 2 ranks x 2 = global batch 4: two global batches an epoch
    epoch = [b2.indices(s, rank=r, world=2) for s in (0, 1) for r in (0, 1)]
    assert len(set(torch.cat(epoch).tolist())) == 8  # ranks and steps take disjoint shares
    crops = Batches(imgs, 3, seed=0, crop=2).batch(0)
    assert crops.shape == (3, 1, 2, 2) and crops.min() >= -1 and crops.max() <= 1


def error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("coopnets: error:") and "\n" not in err, err
    return err


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    base = ["train", "--preset", "smoke", "--outdir", str(tmp_path / "runs"), "--progress", "false"]
    assert "does not exist" in error_line(capsys, base + ["--data", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "no images" in error_line(capsys, base + ["--data", str(tmp_path / "empty")])
    bad = tmp_path / "bad"
    write_pngs(bad, 2)
    (bad / "broken.jpg").write_bytes(b"not a jpeg at all")
    assert "broken.jpg" in error_line(capsys, base + ["--data", str(bad)])
    mixed = tmp_path / "mixed"
    write_pngs(mixed / "a", 2, size=(28, 28))
    write_pngs(mixed / "b", 1, size=(30, 28))
    assert "--image-size" in error_line(capsys, base + ["--data", str(mixed)])
    ok = tmp_path / "ok"
    write_pngs(ok, 2, size=(28, 28), mode="L")
    assert "--des-steps must be >= 0" in error_line(capsys, base + ["--data", str(ok), "--des-steps", "-1"])
    assert "takes a float" in error_line(capsys, base + ["--data", str(ok), "--des-lr", "fast"])
    assert "--gen-steps" in error_line(capsys, base + ["--data", str(ok), "--algorithm", "abp",
                                                       "--gen-steps", "0"])
    assert "unknown preset" in error_line(capsys, ["train", "--preset", "nope", "--data", str(ok)])
    assert "takes 28x28" in error_line(capsys, base + ["--data", str(ok), "--image-size", "32",
                                                       "--batch-size", "2"])
    (tmp_path / "junk.zip").write_bytes(b"PK nope")
    assert "zip" in error_line(capsys, base + ["--data", str(tmp_path / "junk.zip")])
    assert "neither a run folder" in error_line(capsys, ["sample", str(tmp_path / "none")])


def test_cli_train_then_sample(tmp_path, digits_npz, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--preset", "smoke", "--data", str(digits_npz), "--outdir", str(runs),
                 "--progress", "false"]) == 0
    run = next(runs.iterdir())
    assert main(["sample", str(run), "-n", "6", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 28
    assert main(["sample", str(run), "-n", "3", "--mode", "gen", "--out", str(tmp_path / "pngs")]) == 0
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 3
    assert main(["sample", str(run / "latest.pt"), "-n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (4, 28, 28, 1)
    # --config repeats the run: the same folder is found and resumed (already complete)
    assert main(["train", "--config", str(run / "config.json"), "--progress", "false"]) == 0
    assert len(list(runs.iterdir())) == 1


def test_user_errors_print_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "coopnets", "train", "--preset", "smoke", "--data",
                        str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_load_images_rejects_bad_arrays(tmp_path):
    np.save(tmp_path / "f.npy", np.full((2, 4, 4), 2.0))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        load_images(tmp_path / "f.npy")
    np.save(tmp_path / "s.npy", np.zeros((2, 5, 4, 4, 4), np.uint8))
    with pytest.raises(UserError, match="shape"):
        load_images(tmp_path / "s.npy")


def test_a_run_saved_before_a_field_existed_still_resumes():
    from coopnets.config import Config, same_run
    now = dataclasses.asdict(Config(preset="smoke"))
    old = {k: v for k, v in now.items() if k != "lr_final"}  # saved before lr_final existed
    assert same_run(old, now) and same_run(now, old)
    assert not same_run(old, dict(now, lr_final=0.1))  # a non-default value is a different run
    assert same_run(now, dict(now, steps=99))  # steps may grow on resume


def test_progress_off_a_terminal_is_plain_lines(tmp_path, digits_npz):
    """In a log file (no terminal) training prints one plain line per log step, no \\r bars."""
    r = subprocess.run([sys.executable, "-m", "coopnets", "train", "--preset", "smoke", "--data",
                        str(digits_npz), "--outdir", str(tmp_path), "--steps", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if " step " in ln]
    assert [ln.split()[2] for ln in lines] == ["1/3", "2/3", "3/3"] and "move" in lines[0]
    assert "\r" not in r.stderr and "run folder:" in r.stdout
