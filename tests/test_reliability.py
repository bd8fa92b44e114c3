"""Reliability (issue 13): a run is what it computes, signals save, resumes do not duplicate
logs, failed writes keep latest.pt, and collapse is caught. Each numbered case of the issue
has a test here that fails on the code before it."""
import errno
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import scripted_steps
from coopnets import checkpoint as ckpt_mod
from coopnets import training as train_mod
from coopnets.checkpoint import LATEST, load_checkpoint, save_checkpoint
from coopnets.config import resolve
from coopnets.errors import Interrupted, TrainingDiverged, UserError
from coopnets.training import MoveWatch, train


def cfg_for(data, out, **kw):
    """The smoke preset, checkpointing only at the end and without grids unless asked: BatchNorm
    recalibration at each checkpoint and grid is most of a smoke run's time."""
    kw = {"ckpt_every": 1000, "sample_every": 0, **kw}
    return resolve("smoke", data=str(data), outdir=str(out), progress=False, **kw)


def params(run):
    ck = load_checkpoint(run)
    return ck["step"], {**ck["descriptor"], **{"g." + k: v for k, v in ck["generator"].items()},
                        "opt_des.exp_avg": ck["opt_des"]["state"][0]["exp_avg"]}


def assert_same(a, b):
    (sa, pa), (sb, pb) = params(a), params(b)
    assert sa == sb
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def write_folder(folder, n=8, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(folder / f"{i}.png")
    return folder


def signal_at(monkeypatch, calls_before_signal: int, signum: int):
    """Make the coop step send ``signum`` to this process during its n-th call."""
    real, calls = train_mod.STEPS["coop"], []
    if signal.getsignal(signum) is signal.SIG_IGN:
        # pytest started in the background (`cmd &`) ignores SIGINT, and the loop rightly leaves an
        # ignored signal alone; give it the handler a foreground run has (as every other test sees)
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def step(*a, **k):
        calls.append(None)
        if len(calls) == calls_before_signal:
            os.kill(os.getpid(), signum)
        return real(*a, **k)

    monkeypatch.setitem(train_mod.STEPS, "coop", step)


# 1. runs are matched by what they compute, not by the --data string --------------------------
def test_one_data_set_however_spelled_is_one_run_and_other_data_are_not(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    write_folder(here / "good")
    write_folder(there / "good", seed=1)  # another data set under the same relative name
    out = tmp_path / "runs"
    monkeypatch.chdir(here)
    runs = [train(cfg_for(spelling, out, steps=i + 1))
            for i, spelling in enumerate(["good", "./good", "good/", str(here / "good")])]
    assert len(set(runs)) == 1 and load_checkpoint(runs[0])["step"] == 4
    assert json.loads((runs[0] / "config.json").read_text())["data"] == str(here / "good")
    assert json.loads((runs[0] / "data.json").read_text())["files"] == 8
    monkeypatch.chdir(there)  # the same command from elsewhere: other data, a new run
    other = train(cfg_for("good", out, steps=5))
    assert other != runs[0] and load_checkpoint(other)["step"] == 5
    assert load_checkpoint(runs[0])["step"] == 4  # the first run was not touched
    write_folder(there / "good" / "more", n=1, seed=2)  # same path, changed content
    with pytest.raises(UserError, match=r"not what the run was trained on \(8 file\(s\).*9 file"):
        train(cfg_for("good", out, steps=6))
    assert load_checkpoint(other)["step"] == 5
    assert train(cfg_for("good", out, steps=1), new_run=True) not in (other, runs[0])


def test_a_run_saved_before_fingerprints_still_resumes(tmp_path, digits_npz, monkeypatch):
    monkeypatch.chdir(digits_npz.parent)
    run = train(cfg_for("digits.npz", tmp_path / "runs", steps=1))
    (run / "data.json").unlink()  # as written before: no fingerprint, --data as typed
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "data": "digits.npz"}))
    assert train(cfg_for("digits.npz", tmp_path / "runs", steps=2)) == run
    assert load_checkpoint(run)["step"] == 2 and (run / "data.json").is_file()


# 2. --run-dir never continues or overwrites another run ---------------------------------------
def test_run_dir_with_another_config_is_refused_and_config_json_kept(tmp_path, digits_npz):
    run = tmp_path / "mine"
    train(cfg_for(digits_npz, tmp_path, steps=1), run_dir=run)
    before = (run / "config.json").read_bytes(), (run / LATEST).read_bytes()
    with pytest.raises(UserError, match=r"different configuration \(algorithm \"coop\" -> \"abp\"\); "
                                         r"it was left as it is: resume it as it ran with --algorithm \"coop\""):
        train(cfg_for(digits_npz, tmp_path, steps=2, algorithm="abp"), run_dir=run)
    other = tmp_path / "other.npz"
    np.savez(other, x_train=np.zeros((16, 28, 28), np.uint8))
    with pytest.raises(UserError, match=r"data .*other.npz"):
        train(cfg_for(other, tmp_path, steps=2), run_dir=run)
    with pytest.raises(UserError, match="is a file"):
        train(cfg_for(digits_npz, tmp_path, steps=2), run_dir=run / "config.json")
    assert ((run / "config.json").read_bytes(), (run / LATEST).read_bytes()) == before
    assert train(cfg_for(digits_npz, tmp_path, steps=2), run_dir=run) == run  # same config resumes


def test_a_run_saved_before_the_gap_limit_default_keeps_the_paper_loss(tmp_path, digits_npz):
    """A run whose config.json predates des_gap_limit ran the paper's loss: it loads with 0,
    the same command (today's default 0.1) is refused with the flag that resumes it as it ran,
    and that flag resumes it."""
    from coopnets.checkpoint import load_run
    run = tmp_path / "old"
    train(cfg_for(digits_npz, tmp_path, steps=1, des_gap_limit=0.0), run_dir=run)
    saved = json.loads((run / "config.json").read_text())  # as an older coopnets wrote it
    del saved["des_gap_limit"]
    (run / "config.json").write_text(json.dumps(saved))
    ck = load_checkpoint(run)
    del ck["config"]["des_gap_limit"]
    save_checkpoint(ck, run / LATEST)
    assert load_run(run)[0].des_gap_limit == 0.0
    with pytest.raises(UserError, match=r"before today's default \(des_gap_limit 0.0 -> 0.1\); "
                                         r"resume it as it ran with --des-gap-limit 0.0"):
        train(cfg_for(digits_npz, tmp_path, steps=2), run_dir=run)
    assert train(cfg_for(digits_npz, tmp_path, steps=2, des_gap_limit=0.0), run_dir=run) == run
    assert load_checkpoint(run)["step"] == 2


def test_a_table2_run_saved_with_bf16_chains_is_not_resumed_by_amp_auto_and_is_told_the_flag(
        tmp_path, digits_npz, capsys):
    """mnist-table2-cpu ran --amp bf16-langevin until it became --amp auto. With --run-dir the
    preset's command refuses such a run in one line naming the flag that resumes it as it ran,
    and that flag does; without it a new numbered run starts and a note names the same flag."""
    run = tmp_path / "table2"
    train(cfg_for(digits_npz, tmp_path, steps=1, amp="bf16-langevin"), run_dir=run)
    with pytest.raises(UserError, match=r'\(amp "bf16-langevin" -> "auto"\); it was left as it is: '
                                        r'resume it as it ran with --amp "bf16-langevin", or '):
        train(cfg_for(digits_npz, tmp_path, steps=2, amp="auto"), run_dir=run)
    assert train(cfg_for(digits_npz, tmp_path, steps=2, amp="bf16-langevin"), run_dir=run) == run
    assert load_checkpoint(run)["step"] == 2

    numbered = train(cfg_for(digits_npz, tmp_path / "runs", steps=1, amp="bf16-langevin"))
    capsys.readouterr()
    fresh = train(cfg_for(digits_npz, tmp_path / "runs", steps=1, amp="auto"))
    assert fresh != numbered and load_checkpoint(numbered)["step"] == 1
    assert capsys.readouterr().err.rstrip().endswith('To resume it instead, add --amp "bf16-langevin"')


def test_the_flags_that_resume_a_run_as_it_ran_use_todays_names_or_are_not_offered():
    """A field renamed since the run was saved is given under today's name; a field this
    version no longer has cannot be set by any flag, so none is offered."""
    from coopnets.runs import _resume_flags
    assert _resume_flags({"des_refsig": 0.5}, ["ref_std"]) == "--ref-std 0.5"
    assert _resume_flags({"amp": "bf16", "old_knob": 3}, ["amp", "old_knob"]) == ""
    assert _resume_flags({"amp": "bf16"}, ["amp", "des_steps"]) == '--amp "bf16" --des-steps 10'


def test_the_gap_shape_counts_for_resuming_only_where_the_gap_is_limited(tmp_path, digits_npz):
    """Without a limit the shape computes nothing: a run at --des-gap-limit 0 resumes whatever
    --des-gap-shape says. With one, a wall run is not resumed by the default (quadratic)."""
    unlimited, walled = tmp_path / "unlimited", tmp_path / "walled"
    train(cfg_for(digits_npz, tmp_path, steps=1, des_gap_limit=0.0, des_gap_shape="wall"),
          run_dir=unlimited)
    assert train(cfg_for(digits_npz, tmp_path, steps=2, des_gap_limit=0.0), run_dir=unlimited) == unlimited
    assert load_checkpoint(unlimited)["step"] == 2
    train(cfg_for(digits_npz, tmp_path, steps=1, des_gap_shape="wall"), run_dir=walled)
    with pytest.raises(UserError, match=r'different configuration \(des_gap_shape "wall" -> "quadratic"\)'):
        train(cfg_for(digits_npz, tmp_path, steps=2), run_dir=walled)


# 3. --steps and a decaying learning rate -----------------------------------------------------
def test_30_plus_30_steps_equal_60_and_a_changed_steps_is_refused(tmp_path, digits_npz, monkeypatch):
    kw = dict(steps=60, lr_final=0.1, ckpt_every=50, log_every=10, sample_every=0)
    straight = train(cfg_for(digits_npz, tmp_path / "a", **kw))
    signal_at(monkeypatch, 30, signal.SIGINT)  # Ctrl-C during step 30
    with pytest.raises(Interrupted) as stop:
        train(cfg_for(digits_npz, tmp_path / "b", **kw))
    assert stop.value.exit_code == 130 and "at step 30" in str(stop.value)
    monkeypatch.undo()
    run = next((tmp_path / "b").iterdir())
    assert load_checkpoint(run)["step"] == 30
    with pytest.raises(UserError, match=r"--steps 60 .*lr_final 0.1 < 1.*resume with --steps 60"):
        train(cfg_for(digits_npz, tmp_path / "b", **{**kw, "steps": 90}))
    assert train(cfg_for(digits_npz, tmp_path / "b", **kw)) == run
    assert_same(straight, run)


# 4. signals save at the current step; 9. every stop is logged -----------------------------------
def test_sigterm_saves_at_the_current_step_logs_it_and_resumes_bit_identically(tmp_path, digits_npz,
                                                                               monkeypatch):
    kw = dict(steps=12, ckpt_every=100, log_every=2, sample_every=0)
    straight = train(cfg_for(digits_npz, tmp_path / "a", **kw))
    signal_at(monkeypatch, 7, signal.SIGTERM)
    with pytest.raises(Interrupted) as stop:
        train(cfg_for(digits_npz, tmp_path / "b", **kw))
    assert stop.value.exit_code == 143
    monkeypatch.undo()
    run = next((tmp_path / "b").iterdir())
    assert load_checkpoint(run)["step"] == 7
    assert "stopped by SIGTERM at step 7; latest.pt saved at step 7" in (run / "log.txt").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    train(cfg_for(digits_npz, tmp_path / "b", **kw))
    assert_same(straight, run)
    log = (run / "log.txt").read_text()
    assert "resumed at step 7" in log and "finished: step 12 of 12" in log


def test_divergence_is_written_to_the_log(tmp_path, digits_npz, monkeypatch):
    real = train_mod.STEPS["coop"]
    monkeypatch.setitem(train_mod.STEPS, "coop", lambda *a, **k: real(*a, **k)._replace(
        stats={"f_gap": float("nan")}))
    with pytest.raises(TrainingDiverged):
        train(cfg_for(digits_npz, tmp_path, steps=2))
    log = (next(tmp_path.glob("0000*")) / "log.txt").read_text()
    assert "stopped: training diverged at step 1 (f_gap = nan)" in log


# 5. resuming does not log steps twice ----------------------------------------------------------
def test_resume_trims_stats_and_tensorboard_to_the_checkpoint(tmp_path, digits_npz):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    kw = dict(steps=10, ckpt_every=5, snapshot_every=5, log_every=1, sample_every=0)
    run = train(cfg_for(digits_npz, tmp_path, **kw))
    # as if killed at step 10 before its checkpoint: latest.pt is step 5's, logs run to 10
    os.replace(run / "ckpt-000005.pt", run / LATEST)
    (run / "ckpt-000010.pt").unlink()
    with open(run / "stats.jsonl", "a") as fh:
        fh.write('{"step": 11, "f_g')  # and a line torn by the kill
    train(cfg_for(digits_npz, tmp_path, **kw))
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("f_gap")] == list(range(1, 11))


# 6. temp files of killed or failed writes; a full disk keeps latest.pt ---------------------------
def test_a_torn_config_json_still_resumes_from_the_checkpoints_config(tmp_path, digits_npz):
    """A kill while config.json was rewritten leaves it unreadable; latest.pt carries the config,
    so the same command resumes (and the resume's log line reads the changes from there)."""
    def cfg(steps):
        return resolve("smoke", data=str(digits_npz), outdir=str(tmp_path), progress=False, steps=steps)
    run = train(cfg(2))
    (run / "config.json").write_text('{"preset": "smo')
    assert train(cfg(4)) == run
    log = (run / "log.txt").read_text()
    assert "resumed at step 2" in log and "changed at the resume: steps 2 -> 4" in log
    assert json.loads((run / "config.json").read_text())["steps"] == 4


def test_stale_temp_files_are_removed_on_resume(tmp_path, digits_npz):
    run = train(cfg_for(digits_npz, tmp_path, steps=1))
    (run / ".latest.pt.4242.tmp").write_bytes(b"partial")
    train(cfg_for(digits_npz, tmp_path, steps=2))
    assert not list(run.glob(".latest.pt.*.tmp"))
    assert "removed 1 temp file" in (run / "log.txt").read_text()


def test_a_full_disk_is_one_line_and_latest_pt_survives(tmp_path, digits_npz, monkeypatch):
    run = train(cfg_for(digits_npz, tmp_path, steps=2))
    good = (run / LATEST).read_bytes()
    real = ckpt_mod._Writes.write

    def fill_up(self, data):
        real(self, data[: len(data) // 2])  # part of it lands, then the disk is full
        self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise self.error

    monkeypatch.setattr(ckpt_mod._Writes, "write", fill_up)
    with pytest.raises(UserError, match=r"cannot write .*latest.pt: no space left on device; "
                                        r"latest.pt is unchanged"):
        train(cfg_for(digits_npz, tmp_path, steps=4))
    assert (run / LATEST).read_bytes() == good and not list(run.glob("*.tmp"))
    assert "no space left on device" in (run / "log.txt").read_text()
    monkeypatch.undo()
    assert load_checkpoint(run)["step"] == 2


def test_save_checkpoint_removes_its_temp_file_when_a_write_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS))))
    with pytest.raises(UserError, match="read-only file system; no checkpoint was written"):
        save_checkpoint({"x": torch.zeros(3)}, tmp_path / LATEST)
    assert list(tmp_path.iterdir()) == []


# 7. a collapsed generator stops the run before it is saved -------------------------------------
def test_a_collapsed_generator_exits_without_saving(tmp_path, digits_npz):
    with pytest.raises(TrainingDiverged, match=r"generator collapsed at step 1 \(a BatchNorm "
                                               r"running statistic is .*saturated"):
        train(cfg_for(digits_npz, tmp_path, steps=3, gen_lr=100.0, ckpt_every=1))
    run = next(tmp_path.glob("0000*"))
    assert not (run / LATEST).exists()
    assert "stopped: the generator collapsed" in (run / "log.txt").read_text()


def test_generator_health_measures_saturation_and_diversity():
    class Const(torch.nn.Module):
        def __init__(self, x):
            super().__init__()
            self.x = x

        def forward(self, z):
            return self.x.expand(len(z), -1)

    h = train_mod.generator_health(Const(torch.tensor([1.0, -1.0, 1.0, 0.5])), torch.zeros(5, 2))
    spread = h.pop("spread")
    assert h == {"bn_stat": 0.0, "saturation": 0.75, "diversity": 0.0}
    assert spread != spread  # NaN: a one-pixel "image" has no contrast to compare with


def test_the_spread_is_the_latents_share_of_a_samples_contrast():
    """Every latent j gives one picture p plus its own constant c_j: the std over latents at
    each pixel is std(c), the spatial std of each sample std(p), so the spread is their ratio,
    0 for a generator that ignores its latent."""
    class Shifted(torch.nn.Module):
        def forward(self, z):
            p = torch.tensor([[-0.3, 0.3], [0.3, -0.3]]).expand(len(z), 2, 2, 2)
            return p + 0.15 * z[:, :1, None, None]

    z = torch.tensor([[-1.0], [1.0], [-1.0], [1.0]])
    h = train_mod.generator_health(Shifted(), z)
    assert h["diversity"] == pytest.approx(0.15 * z.std().item())
    assert h["spread"] == pytest.approx(0.15 * z.std().item() / torch.tensor([-0.3, 0.3, 0.3, -0.3]).std().item())
    assert train_mod.generator_health(Shifted(), torch.zeros(4, 1))["spread"] == 0.0


def test_a_videos_spread_is_over_what_moves_not_over_its_fixed_layout():
    """A fixed-layout video generator: every latent draws the same strong static layout L, and
    a flicker ±0.1 over time whose sign is the latent's. The flicker differs between samples
    as much as it moves within one (std over latents 0.1·√(4/3) at each pixel, std over time
    0.1·√(4/3)), so the spread is 1, however strong L is; over the spatial contrast it would read
    0.21, a collapse. A generator that ignores its latent still gives 0."""
    class Flicker(torch.nn.Module):
        def forward(self, z):
            layout = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 1, 8, 8)
            m = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 4, 1, 1)
            return layout + 0.1 * z.sign().reshape(-1, 1, 1, 1, 1) * m

    z = torch.tensor([[-1.0], [1.0], [-1.0], [1.0]])
    h = train_mod.generator_health(Flicker(), z)
    assert h["diversity"] == pytest.approx(0.1 * (4 / 3) ** 0.5)
    assert h["spread"] == pytest.approx(1.0)
    assert train_mod.generator_health(Flicker(), torch.ones(4, 1))["spread"] == pytest.approx(0.0, abs=1e-6)


def test_a_generator_that_ignores_its_latent_is_reported_once_it_lasts():
    """collapsed(): the median spread of the checkpoints in the last tenth of the run under
    0.3, past half of it (young generators pass through such spreads and recover)."""
    from types import SimpleNamespace
    from coopnets.training import Monitor, collapsed

    s = SimpleNamespace(cfg=resolve("smoke", steps=1000))

    def check(step, readings):
        mon = Monitor(None)
        mon.spreads = readings
        return collapsed(s, mon, step)

    low = [(450, 0.12), (500, 0.08)]
    assert "samples from different latents differ by 0.11" in check(500, [(400, 0.11), *low])
    assert "median of the last 3 checkpoints" in check(500, [(400, 0.11), *low])
    assert check(400, [(300, 0.1), (350, 0.1), (400, 0.1)]) == ""  # too early in the run
    assert check(500, low) == ""  # fewer than 3 checkpoints so far
    assert check(500, [(400, 0.11), (450, 0.5), (500, 0.6)]) == ""  # recovered
    assert check(1000, [(100, 0.1), (200, 0.1), (300, 0.1), (950, 0.8), (1000, 0.8)]) == ""


def test_a_training_run_logs_its_spread_and_warns_of_a_collapse_once(digits_npz, tmp_path,
                                                                     monkeypatch):
    """The spread of the trained generator goes into stats.jsonl at each checkpoint; a spread
    that stays low gives one warning in log.txt, and the run goes on to its end."""
    run = train(cfg_for(digits_npz, tmp_path, steps=6, ckpt_every=2, log_every=2))
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "gen_spread" in r] == [2, 4, 6]
    assert all(0 < r["gen_spread"] < 2 for r in rows if "gen_spread" in r)
    assert "may have collapsed" not in (run / "log.txt").read_text()

    monkeypatch.setattr(train_mod, "latent_spread", lambda s, mon, step: 0.05)
    run = train(cfg_for(digits_npz, tmp_path / "b", steps=10, ckpt_every=1, log_every=1))
    log = (run / "log.txt").read_text()
    assert log.count("may have collapsed") == 1 and "warning: step 5: the generator" in log
    assert "finished: step 10 of 10" in log


# 8. a checkpoint is held back while the run is already drifting --------------------------------
def test_a_drifting_run_holds_its_checkpoint_back_on_f_gap_as_well_as_the_move():
    watch = MoveWatch(window=5, factor=4.0, gap_factor=10.0)
    for _ in range(5):
        watch.add({"langevin_move": 0.1, "f_gap": -1.0})
    assert watch.verdict() == ""
    watch.add({"langevin_move": 0.31, "f_gap": 20.0})  # move 3.1x its median, f_gap 20x
    why = watch.verdict()
    assert "|f(data) - f(syn)| reached 20, 20.0x its median 1" in why and "Langevin" not in why
    watch.add({"langevin_move": 0.1, "f_gap": 1.5})
    assert watch.verdict() == ""  # a passing spike only delays the next checkpoint


def test_a_blow_up_longer_than_half_the_window_is_still_held_back():
    """The move's median is of the intervals whose move passed: a blow-up that fills most of
    the window does not become the norm it is judged by (texture-224-cpu at 4,000 steps: its
    move sat at 2.4 from step 650 and, judged against a window full of itself, passed at 750)."""
    watch = MoveWatch(window=6, factor=4.0, gap_factor=10.0)
    for _ in range(6):
        watch.add({"langevin_move": 0.1, "f_gap": 1.0})
    assert watch.verdict() == ""
    for interval in range(4):  # 8 blown-up steps, more than the window of 6
        watch.add({"langevin_move": 2.4, "f_gap": 50.0})
        watch.add({"langevin_move": 2.3, "f_gap": 40.0})
        assert "2.4, 24.0x its median 0.1" in watch.verdict(), interval
    watch.add({"langevin_move": 0.12, "f_gap": 45.0})
    assert watch.verdict() == ""  # back to health: checkpoints resume
    assert max(watch.moves) == 0.12
    # The gap is judged against every step: one that settles at a new level (at the limit G,
    # with a normal move) holds checkpoints back only until the window has followed it.
    watch = MoveWatch(window=6, factor=4.0, gap_factor=10.0)
    for _ in range(6):
        watch.add({"langevin_move": 0.1, "f_gap": 1.0})
    assert watch.verdict() == ""
    verdicts = []
    for _ in range(4):
        watch.add({"langevin_move": 0.1, "f_gap": 60.0})
        watch.add({"langevin_move": 0.1, "f_gap": 60.0})
        verdicts.append(watch.verdict())
    assert "|f(data) - f(syn)| reached 60" in verdicts[0] and verdicts[-1] == ""


# bad input that used to crash --------------------------------------------------------------------
def test_config_values_of_the_wrong_type_are_one_line(tmp_path):
    for value, shown in (("abc", '"abc"'), (None, "null"), ([1], "[1]")):
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"steps": value}))
        with pytest.raises(UserError, match=rf"steps must be an integer, got {shown.replace('[', '.')}"):
            resolve(None, config_file=str(path))
    (tmp_path / "f.json").write_text(json.dumps({"des_lr": 1}))
    assert resolve(None, config_file=str(tmp_path / "f.json")).des_lr == 1  # an int is a float


def test_a_run_stalled_at_the_quadratic_limit_is_told_to_try_the_wall(tmp_path):
    """stall(): the median |gap| of the last window at G or above and every sample alike (the
    state of mnist-cpu --gen-lr 1e-3 under the quadratic) gives the warning; a diverse
    generator, a gap under G, or the wall shape give none."""
    from types import SimpleNamespace
    from coopnets.algorithms import gap_limit
    from coopnets.training import Monitor, stall

    class Fixed(torch.nn.Module):  # alike: every latent gives the same image, plus ``spread``
        def __init__(self, spread):
            super().__init__()
            self.spread = spread

        def forward(self, z):
            return 0.1 + self.spread * z[:, :1].reshape(len(z), 1, 1, 1).expand(len(z), 1, 28, 28)

    def check(gap_over_g, spread, **kw):
        cfg = resolve("smoke", **kw)
        limit = gap_limit(cfg, torch.zeros(1, 1, 28, 28))
        mon = Monitor(tmp_path)
        for _ in range(mon.watch.window):
            mon.watch.add({"f_gap": gap_over_g * limit, "langevin_move": 0.01})
        s = SimpleNamespace(cfg=cfg, channels=1, size=28, frames=0, modules=(None, Fixed(spread)),
                            fixed_z=torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
        return stall(s, mon)

    assert "try --des-gap-shape wall" in check(1.0, 0.01)
    assert "median 1.00 G" in check(1.0, 0.01)
    assert check(1.0, 0.3) == ""  # samples differ: the gap at G alone is no stall
    assert check(0.5, 0.01) == ""  # gap under the limit
    assert check(1.0, 0.01, des_gap_shape="wall") == ""
    assert check(1.0, 0.01, des_gap_limit=0.0) == ""


def test_a_stop_after_a_blow_up_keeps_the_checkpoint_from_before_it(tmp_path, digits_npz,
                                                                    monkeypatch):
    """SIGTERM once the move has calmed down but the generator's spread has not come back: the
    stop keeps latest.pt at the last checkpoint before the blow-up, as the checkpoints did."""
    scripted_steps(monkeypatch, {8: 1.0})  # the move blows up at step 8, calm after
    monkeypatch.setattr(train_mod, "latent_spread", lambda s, mon, step: 0.8 if step < 8 else 0.2)
    signal_at(monkeypatch, 10, signal.SIGTERM)
    with pytest.raises(Interrupted):
        train(cfg_for(digits_npz, tmp_path, steps=12, ckpt_every=3, log_every=1))
    run = next(tmp_path.glob("0000*"))
    assert load_checkpoint(run)["step"] == 6
    assert ("stopped by SIGTERM at step 10; checkpoint held back because the generator's spread "
            "fell from 0.80 at step 6 to 0.20 after the Langevin move blew up at step 9") in (
        run / "log.txt").read_text()
