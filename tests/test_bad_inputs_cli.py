"""Every bad input of issue 13 through the real command line, in a subprocess: the exit code,
exactly one line on stderr, no traceback, and nothing already on disk changed (and, for
refusals, nothing new written). Read-only and full disks are simulated by tests/faults.py
(a real one needs root); a chmod-ed folder is used too where it binds (not as root)."""
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, smoke_run):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    np.savez(d / "forty.npz", x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    (d / "empty.npy").write_bytes(b"")
    np.save(d / "none.npy", np.zeros((0, 28, 28), np.uint8))
    with zipfile.ZipFile(d / "crc.zip", "w", zipfile.ZIP_STORED) as zf:
        for i in range(2):
            png = d / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(png)
            zf.write(png, png.name)
    raw = bytearray((d / "crc.zip").read_bytes())
    raw[60] ^= 0xFF  # a byte inside the first member's data: its CRC no longer matches
    (d / "crc.zip").write_bytes(bytes(raw))
    for name, value in (("str", "abc"), ("null", None), ("list", [1, 2])):
        (d / f"cfg-{name}.json").write_text(json.dumps({"preset": "smoke", "data": str(d / "forty.npz"),
                                                        "steps": value}))
    (d / "a-file").write_text("not a folder")
    (d / "ro").mkdir()
    (d / "full").mkdir()
    np.savez(d / "rgb32.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8))
    return d, smoke_run


def cases(d: Path, run: Path):
    train = ["train", "--preset", "smoke", "--progress", "false", "--outdir", str(d / "runs")]
    forty = ["--data", str(d / "forty.npz")]
    yield "bad zip CRC", train + ["--data", str(d / "crc.zip")], 2, "damaged"
    yield "zero-length .npy", train + ["--data", str(d / "empty.npy")], 2, "empty (0 bytes)"
    yield "no examples in .npy", train + ["--data", str(d / "none.npy")], 2, "holds no examples"
    yield "--device bogus", train + forty + ["--device", "bogus"], 2, "--device must be"
    for name in ("str", "null", "list"):
        yield f"--config {name}", ["train", "--config", str(d / f"cfg-{name}.json")], 2, \
            "steps must be an integer"
    yield "read-only outdir", [str(REPO / "tests" / "faults.py"), "erofs", str(d / "ro")] + \
        train[:-1] + [str(d / "ro" / "runs")] + forty, 2, "read-only file system"
    yield "full disk", [str(REPO / "tests" / "faults.py"), "enospc", str(d / "full")] + \
        train[:-1] + [str(d / "full" / "runs")] + forty, 2, "no space left on device"
    yield "--run-dir a file", train + forty + ["--run-dir", str(d / "a-file")], 2, "is a file"
    yield "--run-dir another run", train + forty + ["--run-dir", str(run), "--algorithm", "abp"], \
        2, "different configuration"
    yield "--des-noise-scale 0", train + forty + ["--des-noise-scale", "0"], 2, \
        "--des-noise-scale must be positive"
    yield "--amp fp16", train + forty + ["--amp", "fp16"], 2, "--amp must be one of none, bf16"
    yield "--des-slope-penalty -1", train + forty + ["--des-slope-penalty", "-1"], 2, \
        "--des-slope-penalty must be >= 0"
    yield "--des-slope-penalty with --compile", train + forty + ["--des-slope-penalty", "0.1",
                                                                 "--compile", "aot_eager"], 2, \
        "torch.compile does not support"
    yield "--des-slope-penalty with abp", train + forty + ["--des-slope-penalty", "0.1", "--algorithm",
                                                           "abp"], 2, "applies to --algorithm coop"
    yield "--des-energy-reg -1", train + forty + ["--des-energy-reg", "-1"], 2, \
        "--des-energy-reg must be >= 0"
    yield "--des-energy-reg with abp", train + forty + ["--des-energy-reg", "1", "--algorithm",
                                                        "abp"], 2, "applies to --algorithm coop"
    yield "--des-weight-decay -0.1", train + forty + ["--des-weight-decay", "-0.1"], 2, \
        "--des-weight-decay must be >= 0"
    yield "--des-weight-decay with abp", train + forty + ["--des-weight-decay", "0.1", "--algorithm",
                                                          "abp"], 2, "abp trains none"
    yield "--batch-size 1000 on 40", train + forty + ["--batch-size", "1000"], 2, \
        "more than the 40 training images"
    for flag, value, text in (("--nrow", "-2", "--nrow must be positive"),
                              ("--nrow", "0", "--nrow must be positive"),
                              ("--size", "-16", "--size must be positive"),
                              ("--size", "0", "--size must be positive"),
                              ("--des-steps", "-3", "--des-steps must be >= 0")):
        yield f"sample {flag} {value}", ["sample", str(run), flag, value, "--out",
                                         str(d / "s.png")], 2, text
    yield "demo --steps 0", ["demo", "--steps", "0", "--out", str(d / "demo")], 2, "--steps must be positive"
    yield "eval shapes before sampling", ["eval", str(run), "--metric", "psnr", "--ref",
                                          str(d / "rgb32.npz")], 2, "the run's samples are (1, 28, 28)"
    yield "--gen-lr 100 collapses", train + forty + ["--gen-lr", "100", "--outdir", str(d / "gen"),
                                                     "--sample-every", "0"], 3, "generator collapsed"


def run_cli(argv):
    cmd = [sys.executable] + (argv if argv[0].endswith(".py") else ["-m", "coopnets"] + argv)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_every_bad_input_is_one_line_and_changes_nothing(world):
    d, run = world
    table = list(cases(d, run))
    before = {"data": snapshot(d), "run": snapshot(run)}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: run_cli(c[1]), table))
    failures = []
    for (name, argv, code, text), r in zip(table, results):
        err = r.stderr.strip()
        ok = (r.returncode == code and len(err.splitlines()) == 1 and "Traceback" not in r.stderr
              and text in err)
        if not ok:
            failures.append(f"{name}: exit {r.returncode}, stderr {r.stderr[-400:]!r}")
    assert not failures, "\n".join(failures)
    after = snapshot(d)
    gen_run = {k: v for k, v in after.items() if k.startswith("gen/")}
    assert not any(k.endswith("latest.pt") for k in gen_run)  # the collapsed model was not saved
    assert {k: v for k, v in after.items() if not k.startswith("gen/")} == before["data"]
    assert snapshot(run) == before["run"]
    assert not (d / "runs").exists()  # no refused command left an (empty) run folder


def test_a_read_only_folder_is_refused_before_the_data_are_loaded(world):
    d, _ = world
    ro = d / "chmod"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions do not bind (the erofs case covers this)")
        r = run_cli(["train", "--preset", "smoke", "--data", str(d / "forty.npz"), "--outdir",
                     str(ro / "runs"), "--progress", "false"])
        assert r.returncode == 2 and "permission denied" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_sigterm_and_ctrl_c_through_the_cli(tmp_path, digits_npz):
    """A real signal to a real process: SIGTERM in the loop saves and exits 143; Ctrl-C during
    start-up is one line and exit 130."""
    import signal
    import time
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "coopnets", "train", "--preset", "smoke", "--data", str(digits_npz),
           "--outdir", str(tmp_path / "runs"), "--steps", "100000", "--ckpt-every", "100000",
           "--sample-every", "0", "--log-every", "1", "--progress", "false"]
    def popen():  # SIGINT as in a terminal, even when pytest runs as a background job (ignored)
        return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p = popen()
    maps = Path(f"/proc/{p.pid}/maps")
    for _ in range(300):  # until torch is being loaded: past the interpreter's own start-up,
        time.sleep(0.1)   # where no program can catch a Ctrl-C (a fixed sleep raced it on a
        try:              # fresh clone, whose first start compiles every .pyc)
            if "torch" in maps.read_text():
                break
        except OSError:  # no /proc (not Linux): fall back to the time it takes
            time.sleep(1.0)
            break
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    p = popen()
    log = None
    for _ in range(600):  # until the loop has logged a step
        time.sleep(0.1)
        logs = list((tmp_path / "runs").glob("*/stats.jsonl"))
        if logs and logs[0].read_text().strip():
            log = logs[0].parent / "log.txt"
            break
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("00000-")]  # progress lines
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0] and "Traceback" not in err
    from coopnets.checkpoint import load_checkpoint
    step = load_checkpoint(log.parent)["step"]
    assert f"stopped by SIGTERM at step {step}; latest.pt saved at step {step}" in log.read_text()
