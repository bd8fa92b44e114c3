"""Sharing a run: safe checkpoint loading, safetensors export, the HTML report, their commands."""
import argparse
import base64
import builtins
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import coopnets
from coopnets import commands as cli
from coopnets.checkpoint import find_checkpoint, load_checkpoint, load_run, source_dir
from coopnets.commands import export as export_cmd
from coopnets.commands import report as report_cmd
from coopnets.errors import UserError
from coopnets.export import export_run
from coopnets.report import progress_grids, write_report
from coopnets.sampling import generate

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(smoke_run) -> Path:
    """The conftest smoke run (shared by the session); tests that change it copy it."""
    return smoke_run


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


# ---- 2. export --------------------------------------------------------------------------------

@pytest.fixture
def exported(run_copy, tmp_path) -> tuple[Path, Path]:
    line = {"metric": "parzen", "value": 123.456, "std": 1.5, "num_samples": 4, "seed": 0,
            "mode": "revise", "time": "2026-01-01T00:00:00+00:00"}
    (run_copy / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    return run_copy, export_run(run_copy, tmp_path / "export")


def test_export_folder_contents(exported):
    from safetensors.torch import load_file
    run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "descriptor.safetensors", "generator.safetensors"]
    ck = load_checkpoint(run)
    gen = load_file(out / "generator.safetensors")
    assert set(gen) == set(ck["generator"])  # BatchNorm running stats and counters included
    assert any(k.endswith("running_var") for k in gen) and any(k.endswith("num_batches_tracked") for k in gen)
    assert all(torch.equal(gen[k], ck["generator"][k]) for k in gen)
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"] == {"channels": 1, "image_size": 28, "arch_version": ck["arch_version"], "step": 2}
    assert {k: v for k, v in meta.items() if k != "model"} == ck["config"]


def test_model_card(exported):
    run, out = exported
    card = (out / "README.md").read_text()
    cfg = json.loads((run / "config.json").read_text())
    last = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert f"`{cfg['data']}`" in card and "preset: `smoke`" in card and "algorithm: `coop`" in card
    assert "steps trained: 2" in card
    for k in ("f_gap", "langevin_move", "gen_loss"):
        assert f"{k} = {last[k]:.6g}" in card
    assert "| parzen | 123.456 | 1.5 | revise | 4 | 0 |" in card
    assert f"coopnets sample {out} -n 64 --out samples.png" in card


def test_model_card_without_metrics(run, tmp_path):
    card = (export_run(run, tmp_path / "e") / "README.md").read_text()
    assert "Evaluations" not in card and "f_gap = " in card


@pytest.mark.parametrize("mode", ["revise", "gen"])
def test_export_round_trip_samples_equal(exported, mode):
    run, out = exported
    a = generate(run, 4, mode, seed=0, device="cpu", progress=False)
    b = generate(out, 4, mode, seed=0, device="cpu", progress=False)
    assert torch.equal(a, b)


def test_load_export_folder(exported):
    run, out = exported
    cfg, des, gen, ck = coopnets.load(out)
    cfg0, des0, gen0, ck0 = load_run(run)
    assert cfg == cfg0 and not gen.training and ck["step"] == 2
    assert {"config", "channels", "image_size", "step", "descriptor", "generator"} <= set(ck)
    z, x = torch.randn(3, 8), torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(gen(z), gen0(z)) and torch.equal(des(x), des0(x))
    assert source_dir(out) == out and source_dir(run) == run
    assert find_checkpoint(out) == out / "config.json"
    assert coopnets.export_run is export_run


def test_sample_command_writes_into_export_folder(exported, capsys):
    _, out = exported
    assert cli.main(["sample", str(out), "-n", "2", "--device", "cpu"]) == 0
    assert (out / "sample-revise-seed0.png").read_bytes().startswith(PNG_MAGIC)


def test_broken_export_folders_are_user_errors(exported):
    _, out = exported
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["arch_version"] = 1
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="architecture version 1"):
        load_run(out)
    (out / "descriptor.safetensors").unlink()
    with pytest.raises(UserError, match="lacks descriptor.safetensors"):
        load_run(out)


def test_export_refuses_to_write_into_a_run_folder(run):
    with pytest.raises(UserError, match="is a run folder"):
        export_run(run, run)


# ---- 3. report --------------------------------------------------------------------------------

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.cells = [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self._cell = None


def _png(src: str) -> bytes:
    head, _, data = src.partition(",")
    assert head == "data:image/png;base64"
    return base64.b64decode(data)


def test_report(run_copy):
    (run_copy / "metrics.jsonl").write_text(json.dumps({"metric": "fid", "value": 42.5}) + "\n")
    path = write_report(run_copy)
    assert path == run_copy / "report.html"
    text = path.read_text()
    page = Page()
    page.feed(text)
    assert f"<h1>Run {run_copy.name}</h1>" in text
    curves = {i["alt"]: _png(i["src"]) for i in page.imgs if i.get("class") != "grid"}
    assert set(curves) == {"f_gap", "langevin_move", "gen_loss", "gen_spread", "sec_per_it"}
    assert all(png.startswith(PNG_MAGIC) and b"http" not in png for png in curves.values())
    grids = [_png(i["src"]) for i in page.imgs if i.get("class") == "grid"]
    for name in ("samples-gen-000001.png", "samples-gen-000002.png", "samples-rev-000002.png"):
        assert (run_copy / name).read_bytes() in grids
    cfg = json.loads((run_copy / "config.json").read_text())
    for key in ("preset", "data", "des_steps", "z_dim"):
        assert key in page.cells and str(cfg[key]) in page.cells
    assert "fid" in page.cells and "42.5" in page.cells
    # no link out of the page; base64 payloads are left out, where "http" in any case is chance
    assert "http" not in re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]*", "", text).lower()


def test_report_without_matplotlib(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(UserError, match=r"needs matplotlib: pip install 'coopnets\[report\]'"):
        write_report(run, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_progress_grids_are_evenly_spaced(tmp_path):
    for step in range(10, 110, 10):
        (tmp_path / f"samples-gen-{step:06d}.png").write_bytes(PNG_MAGIC)
    (tmp_path / "samples-rev-000050.png").write_bytes(PNG_MAGIC)
    grids = progress_grids(tmp_path, per_kind=4)
    assert [s for s, _ in grids["gen"]] == [10, 40, 70, 100]
    assert [s for s, _ in grids["rev"]] == [50]


# ---- 4. commands ------------------------------------------------------------------------------

def _command(module, argv):
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return module.run(p.parse_args(argv))


def test_export_command(run, tmp_path, capsys):
    assert _command(export_cmd, [str(run), "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "generator.safetensors").is_file()
    assert str(tmp_path / "e") in capsys.readouterr().out


def test_report_command(run, tmp_path):
    out = tmp_path / "sub" / "r.html"
    assert _command(report_cmd, [str(run), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("module,extra", [(export_cmd, ["--out", "x"]), (report_cmd, [])])
def test_commands_bad_input_is_one_line_user_error(tmp_path, module, extra):
    for bad in (tmp_path / "missing", tmp_path):  # absent, and a folder that is not a run
        with pytest.raises(UserError) as e:
            _command(module, [str(bad), *extra])
        assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_the_command_line_builds_without_importing_torch():
    """Every command's options are defined without torch or numpy, so `coopnets --help` and
    `coopnets CMD --help` answer at once (benchmarks/bench_cli.py times them)."""
    code = ("import sys\n"
            "from coopnets.commands import COMMANDS, build_parser\n"
            "build_parser()\n"
            "assert all(m.__doc__ for m, _ in COMMANDS.values())\n"
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'scipy') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
