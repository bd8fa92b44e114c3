"""Training loop: run folders, checkpoints, resume, divergence, sampling."""
import copy
import dataclasses
import json

import pytest
import torch

from conftest import scripted_steps
from coopnets import training as train_mod
from coopnets.checkpoint import LATEST, load_checkpoint, load_run, save_checkpoint
from coopnets.config import PRESETS, resolve
from coopnets.errors import TrainingDiverged, UserError
from coopnets.sampling import generate
from coopnets.training import train


def cfg_for(data, out, **kw):
    return resolve("smoke", data=str(data), outdir=str(out), progress=False, **kw)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_a_valid_config(name):
    cfg = resolve(name)
    assert cfg.preset == name and cfg.steps > 0


def assert_preset_is(name, base, **flags):
    """Preset ``name`` is preset ``base`` with ``flags``, field for field (the preset's name aside)."""
    preset = dataclasses.asdict(resolve(name))
    measured = dataclasses.asdict(resolve(base, **flags))
    assert preset.pop("preset") == name and measured.pop("preset") == base
    assert preset == measured


def test_the_table2_preset_is_the_measured_mnist_cpu_run():
    """docs/results.md's Table 2 row was trained as mnist-cpu with these flags (amp "auto" ran
    bf16 chains on that CPU, float32 on one without bf16 kernels); the preset must stay that
    configuration, so its one command repeats the row on such a machine."""
    assert_preset_is("mnist-table2-cpu", "mnist-cpu", gen_lr=2e-3, gen_ema=0.9998,
                     amp="auto", des_gap_shape="wall", steps=24000, snapshot_every=3000)


def test_the_224_texture_preset_is_texture_cpu_with_the_nets_scaled_and_synthesizes_twice_its_size(
        tmp_path):
    """docs/results.md's 224x224 sheets were trained as texture-cpu with these flags; the preset
    must stay that configuration. Two steps on the bundled brick, then a 448x448 synthesis."""
    from coopnets import asset
    assert_preset_is("texture-224-cpu", "texture-cpu", image_size=224, crop_size=128,
                     des_net="texture-deep5", gen_net="texture-k4-32", des_gap_limit=0.1,
                     des_grad_clip=2.0, steps=1000, snapshot_every=500)
    cfg = resolve("texture-224-cpu", data=str(asset("brick.png")), steps=2, outdir=str(tmp_path),
                  progress=False)
    run = train(cfg)
    x = generate(run, 1, "revise", seed=0, size=448, des_steps=2, progress=False)
    assert x.shape == (1, 1, 448, 448) and x.abs().max() <= 1 and x.std() > 0


def test_run_folder_contents(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    assert {"config.json", "log.txt", "stats.jsonl", LATEST} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert {"samples-gen-000002.png", "samples-rev-000002.png"} <= names
    rows = [json.loads(line) for line in (smoke_run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"f_gap", "gen_loss", "langevin_move", "sec_per_it"} <= set(rows[0])
    assert json.loads((smoke_run / "config.json").read_text())["preset"] == "smoke"


def test_checkpoint_round_trip_reproduces_outputs(smoke_run, tmp_path):
    cfg, des, gen, ckpt = load_run(smoke_run)
    save_checkpoint(ckpt, tmp_path / "copy.pt")
    _, des2, gen2, _ = load_run(tmp_path / "copy.pt")
    z, x = torch.randn(3, 8), torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.equal(gen(z), gen2(z)) and torch.equal(des(x), des2(x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_checkpoint_of_another_architecture_is_refused(smoke_run, tmp_path):
    ckpt = load_checkpoint(smoke_run)
    ckpt["arch_version"] = 1
    save_checkpoint(ckpt, tmp_path / "old.pt")
    with pytest.raises(UserError, match="architecture version 1"):
        load_run(tmp_path / "old.pt")


def _params(run):
    """The step, and every tensor a resumed run must match: the weights and the step state
    (chains, latents, the pool, the gradient clip's running norm)."""
    ck = load_checkpoint(run)
    state = {"state." + k: v for k, v in ck["state"].items() if v is not None}
    return ck["step"], {**ck["descriptor"], **{"g." + k: v for k, v in ck["generator"].items()},
                        **state}


@pytest.mark.parametrize("algorithm,extra", [("coop", {}), ("descriptor", {"des_init": "persistent"}),
                                             ("abp", {}),
                                             ("coop", {"coop_pool": 3, "coop_pool_renew": 0.5}),
                                             ("coop", {"des_grad_clip": 1.0}),
                                             ("descriptor", {"des_grad_clip": 1.0})])
def test_train_four_equals_two_then_resume_two(tmp_path, digits_npz, algorithm, extra):
    straight = train(cfg_for(digits_npz, tmp_path / "a", steps=4, algorithm=algorithm, **extra))
    first = train(cfg_for(digits_npz, tmp_path / "b", steps=2, algorithm=algorithm, **extra))
    again = train(cfg_for(digits_npz, tmp_path / "b", steps=4, algorithm=algorithm, **extra))
    assert again == first  # the same command (more steps) continues the same run folder
    s1, p1 = _params(straight)
    s2, p2 = _params(again)
    assert s1 == s2 == 4 and p1.keys() == p2.keys()
    for k in p1:
        assert torch.equal(p1[k], p2[k]), k
    assert "resumed at step 2" in (again / "log.txt").read_text()


def test_a_different_config_starts_a_new_numbered_run(tmp_path, digits_npz):
    a = train(cfg_for(digits_npz, tmp_path, steps=1))
    b = train(cfg_for(digits_npz, tmp_path, steps=1, des_steps=3))
    assert a.name.startswith("00000-") and b.name.startswith("00001-")


def test_a_new_run_beside_the_same_preset_with_other_settings_says_how_to_resume_it(
        tmp_path, digits_npz, capsys):
    """A preset that changed since a run began (or other flags) starts a new run; the note names
    the run left behind and the flags that resume it, and those flags do resume it."""
    a = train(cfg_for(digits_npz, tmp_path, steps=1, des_steps=3, des_noise=False))
    capsys.readouterr()
    b = train(cfg_for(digits_npz, tmp_path, steps=1))
    note = capsys.readouterr().err
    assert b != a and f"note: {a} holds smoke" in note
    flags = note.split("add ")[-1].split()
    assert flags == ["--des-steps", "3", "--des-noise", "false"]
    again = train(cfg_for(digits_npz, tmp_path, steps=2, des_steps=3, des_noise=False))
    assert again == a and "note:" not in capsys.readouterr().err


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, digits_npz, monkeypatch):
    run = train(cfg_for(digits_npz, tmp_path, steps=2))
    real = train_mod.STEPS["coop"]

    def nan_step(*a, **k):
        r = real(*a, **k)
        return r._replace(stats={**r.stats, "f_gap": float("nan")})

    monkeypatch.setitem(train_mod.STEPS, "coop", nan_step)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 3 .*step 2"):
        train(cfg_for(digits_npz, tmp_path, steps=4))
    step, params = _params(run)
    assert step == 2 and all(torch.isfinite(v.float()).all() for v in params.values())


def test_sampling_is_seeded_per_example(smoke_run):
    # on the CPU: a GPU may pick other convolution kernels (TF32 ones) for other batch sizes
    kw = dict(device="cpu", progress=False)
    a = generate(smoke_run, 5, "revise", seed=3, batch_size=5, **kw)
    b = generate(smoke_run, 5, "revise", seed=3, batch_size=2, **kw)
    c = generate(smoke_run, 2, "revise", seed=3, batch_size=2, start=3, **kw)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[3:], c)
    assert a.shape == (5, 1, 28, 28) and a.abs().max() <= 1.5
    d = generate(smoke_run, 2, "des", seed=0, des_steps=3, progress=False)
    assert torch.isfinite(d).all()


def test_move_watch_holds_back_during_a_spike_only():
    watch = train_mod.MoveWatch(window=5, factor=4.0)
    for _ in range(3):
        watch.add({"langevin_move": 0.1})
    watch.add({"langevin_move": 5.0})
    assert watch.verdict() == ""  # window not yet full: early training is never gated
    watch.add({"langevin_move": 0.1})
    assert watch.verdict() == ""  # the peak was reset by the previous verdict
    watch.add({"langevin_move": 0.5})
    assert "0.5, 5.0x its median 0.1" in watch.verdict()
    watch.add({"langevin_move": 0.12, "f_gap": 1.0})
    watch.add({"gen_loss": 1.0})  # Algorithm G: no move, nothing gated
    assert watch.verdict() == ""


def test_a_blow_up_does_not_overwrite_the_last_healthy_checkpoint(tmp_path, digits_npz, monkeypatch):
    # a spike, a calm step, then the blow-up
    scripted_steps(monkeypatch, {7: 1.0, 8: 0.1, 9: 0.8, 10: float("nan")})
    with pytest.raises(TrainingDiverged, match=r"diverged at step 10 .*step 8"):
        train(cfg_for(digits_npz, tmp_path, steps=12))
    run = next(tmp_path.glob("0000*"))
    assert load_checkpoint(run)["step"] == 8  # 7 and 9 were held back, 8 was calm
    log = (run / "log.txt").read_text()
    assert "step 7: checkpoint held back" in log and "step 9: checkpoint held back" in log


def test_a_slope_penalty_run_logs_the_slope_and_resumes_only_with_it(tmp_path, digits_npz):
    run = train(cfg_for(digits_npz, tmp_path, steps=3, des_slope_penalty=0.1))
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(r["des_slope"] > 0 for r in rows)
    assert json.loads((run / "config.json").read_text())["des_slope_penalty"] == 0.1
    with pytest.raises(UserError, match=r"des_slope_penalty 0.1 -> 0.0"):
        train(cfg_for(digits_npz, tmp_path, steps=4), run_dir=run)


def test_an_energy_penalty_run_logs_the_rms_score_and_resumes_only_with_it(tmp_path, digits_npz):
    """des_energy is the RMS of f over the step's data and samples, so with as many of each
    (smoke: 8 and 8) at least half the gap between their means (|ā − b̄| ≤ |ā| + |b̄| ≤
    √(2(ā² + b̄²)) ≤ 2 RMS over both); a
    different λ or weight decay is another run, the same flags resume it."""
    run = train(cfg_for(digits_npz, tmp_path, steps=3, des_energy_reg=1.0, des_weight_decay=0.1))
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(r["des_energy"] >= abs(r["f_gap"]) / 2 > 0 for r in rows)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["des_energy_reg"], saved["des_weight_decay"]) == (1.0, 0.1)
    with pytest.raises(UserError, match=r"des_energy_reg 1.0 -> 0.0"):
        train(cfg_for(digits_npz, tmp_path, steps=4, des_weight_decay=0.1), run_dir=run)
    with pytest.raises(UserError, match=r"des_weight_decay 0.1 -> 0.0"):
        train(cfg_for(digits_npz, tmp_path, steps=4, des_energy_reg=1.0), run_dir=run)
    assert len(train(cfg_for(digits_npz, tmp_path, steps=4, des_energy_reg=1.0,
                             des_weight_decay=0.1), run_dir=run).joinpath("stats.jsonl")
               .read_text().splitlines()) == 4  # the same flags resume it


def test_a_blow_up_just_after_a_resume_is_held_back_too(tmp_path, digits_npz, monkeypatch):
    """The window the move is judged by is saved in the checkpoint: a run resumed one step
    before a blow-up holds the blown-up step back, as the uninterrupted run would (before,
    the steps after a restart were ungated and latest.pt took the spike)."""
    calls = scripted_steps(monkeypatch, {9: 1.0, 10: float("nan")})
    run = train(cfg_for(digits_npz, tmp_path, steps=8))  # eight calm steps, then a restart
    saved = load_checkpoint(run)["watch"]
    assert saved["langevin_move"] == pytest.approx([0.1] * 6) and saved["f_gap"] == [1.0] * 6
    with pytest.raises(TrainingDiverged, match=r"diverged at step 10 .*step 8"):
        train(cfg_for(digits_npz, tmp_path, steps=12))
    assert load_checkpoint(run)["step"] == 8  # step 9, the spike, was held back
    assert "step 9: checkpoint held back" in (run / "log.txt").read_text()
    # a checkpoint written before the window was saved resumes as before: ungated at first
    ckpt = load_checkpoint(run)
    del ckpt["watch"]
    save_checkpoint(ckpt, run / LATEST)
    calls.clear()
    calls.extend([None] * 8)  # the next call is step 9: the spike again, then the NaN
    with pytest.raises(TrainingDiverged, match=r"diverged at step 10 .*step 9"):
        train(cfg_for(digits_npz, tmp_path, steps=12))


def test_runs_saved_with_the_old_field_names_still_load_and_resume(tmp_path, digits_npz):
    """des_refsig/gen_refsig became ref_std (s) and residual_std (σ): an old config.json and an
    old checkpoint still load, resume and sample."""
    run = train(cfg_for(digits_npz, tmp_path, steps=2))
    ckpt = load_checkpoint(run)
    old = {("des_refsig" if k == "ref_std" else "gen_refsig" if k == "residual_std" else k): v
           for k, v in ckpt["config"].items()}
    assert "des_refsig" in old and "ref_std" not in old
    ckpt["config"] = old
    save_checkpoint(ckpt, run / LATEST)
    (run / "config.json").write_text(json.dumps(old))
    cfg, _, _, _ = load_run(run)
    assert (cfg.ref_std, cfg.residual_std) == (old["des_refsig"], old["gen_refsig"])
    assert train(cfg_for(digits_npz, tmp_path, steps=3)) == run  # the same run resumes
    assert load_checkpoint(run)["step"] == 3
    assert resolve(None, config_file=str(run / "config.json")).ref_std == old["des_refsig"]


def test_checkpoints_load_on_the_cpu_and_resume_across_devices(tmp_path, digits_npz):
    """What a checkpoint holds is read onto the CPU whatever wrote it (the CUDA resume crash
    was an RNG state moved to the GPU); a run whose noise generator was a CUDA one resumes on
    a CPU with a fresh stream of (seed, step), and says so in its log. (On the CPU wherever the
    tests run: a CUDA machine checks the other direction below.)"""
    run = train(cfg_for(digits_npz, tmp_path, steps=2, device="cpu"))
    ckpt = load_checkpoint(run)
    assert all(t.device.type == "cpu" and t.dtype == torch.uint8 for t in ckpt["rng"])
    assert ckpt["rng_device"] == "cpu"
    ckpt["rng"] = [torch.zeros(16, dtype=torch.uint8)]  # the size of a CUDA Philox state
    ckpt["rng_device"] = "cuda"
    save_checkpoint(ckpt, run / LATEST)
    assert train(cfg_for(digits_npz, tmp_path, steps=3, device="cpu")) == run
    assert load_checkpoint(run)["step"] == 3
    assert "noise generator was a cuda one" in (run / "log.txt").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="resuming on a GPU needs a CUDA device")
def test_a_cpu_run_resumes_on_a_gpu_with_the_gpus_adam(tmp_path, digits_npz):
    """The same command with --device cuda continues a run begun on a CPU (the device is not
    part of a run's identity): a fresh noise stream, said in the log, and the GPU's fused Adam."""
    run = train(cfg_for(digits_npz, tmp_path, steps=2, device="cpu"))
    assert train(cfg_for(digits_npz, tmp_path, steps=4, device="cuda")) == run
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and ckpt["rng_device"] == "cuda"
    assert ckpt["opt_des"]["param_groups"][0]["fused"] is True
    assert "noise generator was a cpu one" in (run / "log.txt").read_text()
    assert all(torch.isfinite(v.float()).all() for v in ckpt["descriptor"].values())


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4),
                    reason="fused Adam on the CPU needs torch 2.4")
@pytest.mark.parametrize("saved_fused,run_fused", [(False, True), (True, False)])
def test_a_resumed_optimiser_keeps_the_devices_adam_and_the_checkpoints_moments(saved_fused, run_fused):
    """A checkpoint from a CPU run (unfused Adam) resumed on a GPU gets the GPU's fused Adam, and
    the reverse; its moments, step counts and rates load as saved. (CPU Adam has both kernels,
    so both directions run here.) ``Optimizer.load_state_dict`` alone takes the saved flag."""
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)

    def adam(fused, lr=0.1):
        w = torch.nn.Parameter(w0.clone())
        return w, torch.optim.Adam([w], lr, betas=(0.5, 0.999), fused=fused)

    w, saver = adam(saved_fused)
    for _ in range(3):
        w.grad = torch.sin(w.detach() * 3)
        saver.step()
    saved = saver.state_dict()  # its tensors are the optimiser's: each load gets a copy, as from disk
    w_run, run = adam(run_fused, lr=0.5)
    w_run.data.copy_(w.detach())
    train_mod.load_optimizer(run, copy.deepcopy(saved))
    assert run.param_groups[0]["fused"] is run_fused
    assert run.param_groups[0]["lr"] == 0.1 and run.state[w_run]["step"].item() == 3
    assert saved["param_groups"][0]["fused"] is saved_fused  # the checkpoint is left as it was
    w_ref, ref = adam(saved_fused)  # the saved optimiser, stepped on as it was
    w_ref.data.copy_(w.detach())
    ref.load_state_dict(copy.deepcopy(saved))
    for v in (w_run, w_ref):
        v.grad = torch.sin(w.detach() * 3)
    run.step()
    ref.step()
    torch.testing.assert_close(w_run.detach(), w_ref.detach())


def test_the_warm_up_rises_linearly_and_multiplies_the_decay():
    cfg = resolve(None, steps=101, lr_final=0.1, lr_warmup=10)
    decay = [1 - 0.9 * t / 100 for t in range(101)]  # 1 at step 0, 0.1 at step 100
    assert train_mod.lr_factor(cfg, 0) == pytest.approx(decay[0] / 10)
    assert train_mod.lr_factor(cfg, 4) == pytest.approx(decay[4] * 5 / 10)
    assert [train_mod.lr_factor(cfg, t) for t in (9, 50, 100)] == pytest.approx(
        [decay[9], decay[50], 0.1])  # warmed up from step 9 on
    plain = resolve(None, steps=101, lr_final=0.1)
    assert [train_mod.lr_factor(plain, t) for t in (0, 4, 100)] == pytest.approx(
        [1.0, decay[4], 0.1])
    with pytest.raises(UserError, match="--lr-warmup must be >= 0"):
        resolve(None, lr_warmup=-1)


def test_a_warm_up_run_starts_its_optimisers_at_a_fraction_of_the_rate(tmp_path, digits_npz):
    run = train(cfg_for(digits_npz, tmp_path, steps=2, lr_warmup=4, des_lr=0.004, gen_lr=0.002))
    ckpt = load_checkpoint(run)
    # the rates of the last step taken (step 1 of 2: warm-up 2/4; the decay is off)
    assert ckpt["opt_des"]["param_groups"][0]["lr"] == pytest.approx(0.004 * 2 / 4)
    assert ckpt["opt_gen"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 2 / 4)


@pytest.mark.parametrize("spread_after,held", [(0.2, True), (0.6, False)])
def test_after_a_blow_up_a_generator_whose_spread_fell_is_not_saved(tmp_path, digits_npz,
                                                                    monkeypatch, spread_after, held):
    """A blow-up can wreck the generator without a NaN: once the move calmed down, latest.pt
    used to take the wreck. After a move blow-up, a checkpoint waits until the generator's
    spread is at least half what it was at the last checkpoint written."""
    scripted_steps(monkeypatch, {8: 1.0})  # the move blows up at step 8, calm after
    monkeypatch.setattr(train_mod, "latent_spread",
                        lambda s, mon, step: 0.8 if step < 8 else spread_after)
    run = train(cfg_for(digits_npz, tmp_path, steps=11, ckpt_every=1, log_every=1))
    log = (run / "log.txt").read_text()
    assert "step 8: checkpoint held back because the Langevin move reached 1" in log
    wreck = "the generator's spread fell from 0.80 at step 7 to 0.20 after the Langevin move blew up at step 8"
    if held:
        assert f"step 9: checkpoint held back because {wreck}" in log
        assert f"step 10: checkpoint held back because {wreck}" in log
        assert f"warning: the final checkpoint is written although {wreck}" in log
    else:
        assert "step 9: checkpoint held back" not in log  # half the spread is not a wreck
    assert load_checkpoint(run)["step"] == 11  # the final one is always written


def test_a_spread_that_falls_after_a_gap_spike_alone_is_saved(tmp_path, digits_npz, monkeypatch):
    """Only a blow-up of the move (samples thrown out of the image) arms the spread check; gap
    spikes come and go in healthy runs."""
    scripted_steps(monkeypatch, gaps={8: 100.0})  # the gap spikes at step 8, the move calm
    monkeypatch.setattr(train_mod, "latent_spread", lambda s, mon, step: 0.8 if step < 8 else 0.2)
    run = train(cfg_for(digits_npz, tmp_path, steps=11, ckpt_every=1, log_every=1))
    log = (run / "log.txt").read_text()
    assert "step 8: checkpoint held back because |f(data) - f(syn)| reached 100" in log
    assert "step 9: checkpoint held back" not in log and "spread fell" not in log


def test_a_snapshot_held_back_with_its_checkpoint_is_taken_at_the_next_one_written(
        tmp_path, digits_npz, monkeypatch):
    """The snapshot due at step 8 goes to the next checkpoint written (10) when a blow-up holds
    step 8 back; before, a held-back snapshot step left no snapshot at all."""
    scripted_steps(monkeypatch, {8: 1.0})  # the move spikes at step 8 only
    run = train(cfg_for(digits_npz, tmp_path, steps=12, ckpt_every=2, snapshot_every=4))
    assert "step 8: checkpoint held back" in (run / "log.txt").read_text()
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-000004.pt", "ckpt-000010.pt",
                                                             "ckpt-000012.pt"]
    assert load_checkpoint(run / "ckpt-000010.pt")["step"] == 10

