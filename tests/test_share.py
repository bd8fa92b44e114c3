"""Sharing a run: safe checkpoint loading, safetensors export, the HTML report, their commands."""
import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coopnets import cli
from coopnets.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The conftest smoke run, trained once for this module; tests that change it copy it."""
    from coopnets.config import resolve
    from coopnets.training import train
    tmp = tmp_path_factory.mktemp("share")
    rng = np.random.default_rng(0)
    np.savez(tmp / "digits.npz", x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
    torch.set_num_threads(1)
    return train(resolve("smoke", data=str(tmp / "digits.npz"), outdir=str(tmp / "runs"),
                         progress=False))


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


# ---- 1. safe loading --------------------------------------------------------------------------

class ExecPayload:
    """Unpickling this calls builtins.exec, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


class SystemPayload(ExecPayload):
    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _evil(path: Path, payload, how: str) -> Path:
    obj = {"config": payload, "generator": {}, "arch_version": 2}
    if how == "torch.save":
        torch.save(obj, path)
    else:  # a bare pickle, the legacy format torch.load also accepts
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=int(how[-1]))
    return path


@pytest.mark.parametrize("payload,how,name", [
    (ExecPayload, "torch.save", "exec"), (SystemPayload, "torch.save", "system"),
    (ExecPayload, "pickle2", "exec"), (ExecPayload, "pickle4", None)])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, capsys, payload, how, name):
    marker = tmp_path / "MARKER"
    path = _evil(tmp_path / "evil.pt", payload(marker), how)
    assert cli.main(["sample", str(path), "-n", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path} is not a safe coopnets checkpoint" in err and "it was not loaded" in err
    if name:  # the refused global is named
        assert "it asks to run code on load (" in err and name in err.split("(")[1]
    assert not (tmp_path / "x.png").exists()


def test_malicious_checkpoint_cli_process_prints_one_line(tmp_path):
    """The real command: stderr is that one line, no torch warning, no traceback."""
    marker = tmp_path / "MARKER"
    path = _evil(tmp_path / "evil.pt", ExecPayload(marker), "pickle4")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "coopnets", "sample", str(path), "-n", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("coopnets: error: ")
    assert not marker.exists()


def test_ordinary_checkpoint_loads_weights_only(run, tmp_path, capsys):
    ck = load_checkpoint(run)
    assert ck["step"] == 2 and ck["config"]["preset"] == "smoke"
    assert all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in ck["rng"])
    assert ck["opt_des"]["state"] and set(ck["state"]) == {"chains", "latents"}
    assert cli.main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    torch.save(ck, tmp_path / "plain.pt")  # not written by save_checkpoint: still plain data
    assert load_checkpoint(tmp_path / "plain.pt")["step"] == 2


def test_resume_reads_optimiser_and_rng_states(run_copy):
    from coopnets.config import Config
    from coopnets.training import train
    cfg = Config(**{**json.loads((run_copy / "config.json").read_text()), "steps": 3})
    train(cfg, run_copy)
    assert load_checkpoint(run_copy)["step"] == 3
