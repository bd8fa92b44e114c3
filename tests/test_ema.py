"""--gen-ema: the moving average of the generator's weights, kept beside the trained one,
checkpointed and resumed exactly, and the generator every sampling path uses."""
from __future__ import annotations

import json

import torch
from torch import nn

from coopnets.checkpoint import load_checkpoint, load_run
from coopnets.config import resolve
from coopnets.sampling import generate
from coopnets.training import ema_decay, train, update_ema


def test_update_ema_is_the_geometric_average():
    """With the trained weights held at p, k updates take e₀ to p + dᵏ(e₀ − p)."""
    torch.manual_seed(0)
    gen, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    e0 = [q.detach().clone() for q in ema.parameters()]
    for _ in range(5):
        update_ema(ema, gen, 0.9)
    for e, start, p in zip(ema.parameters(), e0, gen.parameters()):
        torch.testing.assert_close(e, p + 0.9 ** 5 * (start - p))


def test_the_decay_warms_up_then_holds():
    assert ema_decay(0.999, 0) == 0.1  # the first update keeps 10 % of the initial weights
    assert ema_decay(0.999, 90) == 0.91
    assert ema_decay(0.999, 10 ** 6) == 0.999


def _cfg(data, outdir, **kw):
    return resolve("smoke", data=str(data), outdir=str(outdir), progress=False,
                   **{"gen_ema": 0.5, **kw})


def test_gen_ema_resumes_bit_for_bit_and_is_what_a_run_samples(smoke_data, tmp_path):
    straight = train(_cfg(smoke_data, tmp_path / "a", steps=4))
    train(_cfg(smoke_data, tmp_path / "b", steps=2))
    resumed = train(_cfg(smoke_data, tmp_path / "b", steps=4))
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key in ("generator", "generator_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    # the average is not the trained weights, and sampling uses it unless asked otherwise
    assert any(not torch.equal(a["generator"][k], a["generator_ema"][k]) for k in a["generator"])
    _, _, gen, _ = load_run(straight)
    for name, value in gen.state_dict().items():
        assert torch.equal(value, a["generator_ema"][name])
    # sampled on the CPU, where load_run puts the reference below: the same arithmetic
    avg = generate(straight, 4, mode="gen", seed=3, device="cpu", progress=False)
    live = generate(straight, 4, mode="gen", seed=3, device="cpu", progress=False, ema=False)
    assert not torch.allclose(avg, live)
    _, _, gen_live, _ = load_run(straight, ema=False)
    torch.testing.assert_close(live, gen_live(_latents(gen_live, 3, 4)).float(), atol=1e-6, rtol=0)


def test_a_resume_may_slow_the_average_and_the_log_says_so(smoke_data, tmp_path):
    """--gen-ema changes nothing in training, so a resume may change it (docs/results.md,
    MNIST: 0.999 for 30,000 steps, then 0.9995): the trained weights stay those of the
    unchanged run, the average changes, and log.txt and config.json record the change."""
    # (decays under the warm-up's (1 + t)/(10 + t), 0.25 at step 2, so that the change counts)
    straight = load_checkpoint(train(_cfg(smoke_data, tmp_path / "a", steps=4, gen_ema=0.1)))
    train(_cfg(smoke_data, tmp_path / "b", steps=2, gen_ema=0.1))
    run = train(_cfg(smoke_data, tmp_path / "b", steps=4, gen_ema=0.2))
    slowed = load_checkpoint(run)
    for name, value in straight["generator"].items():
        assert torch.equal(value, slowed["generator"][name]), name
    assert any(not torch.equal(v, slowed["generator_ema"][k])
               for k, v in straight["generator_ema"].items() if v.is_floating_point())
    assert "changed at the resume: gen_ema 0.1 -> 0.2, steps 2 -> 4" in (run / "log.txt").read_text()
    assert json.loads((run / "config.json").read_text())["gen_ema"] == 0.2


def test_a_finished_run_asked_for_fewer_steps_is_left_as_it_is(smoke_data, tmp_path, capsys):
    """A preset that later asks for fewer steps or another average (mnist-table2-cpu: 30,000
    steps at 0.9995, then 24,000 at 0.9998) must not rewrite a finished run's config.json: it
    says so and touches nothing, and the run still resumes to more steps as it ran."""
    run = train(_cfg(smoke_data, tmp_path / "a", steps=4, gen_ema=0.1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert train(_cfg(smoke_data, tmp_path / "a", steps=2, gen_ema=0.2)) == run
    assert "run already at step 4 of 2; raise --steps to continue" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "config.json").unlink()  # a torn config.json: the checkpoint's config stands in
    before.pop("config.json")
    assert train(_cfg(smoke_data, tmp_path / "a", steps=3, gen_ema=0.1)) == run
    assert "run already at step 4 of 3" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert train(_cfg(smoke_data, tmp_path / "a", steps=5, gen_ema=0.1)) == run
    assert "resumed at step 4" in (run / "log.txt").read_text()
    assert load_checkpoint(run)["step"] == 5


def _latents(gen, seed, n):
    from coopnets.seeding import ExampleRNG
    return ExampleRNG(seed, range(n), "cpu").randn((n, *gen.latent_shape(28)))


def test_export_carries_the_average(smoke_data, tmp_path):
    from coopnets.export import export_run
    run = train(_cfg(smoke_data, tmp_path / "runs", steps=2))
    out = export_run(run, tmp_path / "export")
    torch.testing.assert_close(generate(out, 3, mode="revise", seed=1, progress=False),
                               generate(run, 3, mode="revise", seed=1, progress=False),
                               atol=0, rtol=0)


def test_without_gen_ema_the_trained_generator_is_sampled(smoke_run):
    ckpt = load_checkpoint(smoke_run)
    assert ckpt["generator_ema"] is None
    _, _, gen, _ = load_run(smoke_run)
    for name, value in gen.state_dict().items():
        assert torch.equal(value, ckpt["generator"][name])


def test_the_average_carries_its_own_batchnorm_statistics(smoke_data, tmp_path):
    """Checkpoints recalibrate the average's BatchNorm on the calibration latents, as they do
    the trained generator's (its running statistics are not the trained one's)."""
    from coopnets.models import recalibrate_batchnorm
    from coopnets.seeding import generator, stream_seed
    run = train(_cfg(smoke_data, tmp_path / "runs", steps=3, device="cpu"))  # recalibrated here too
    cfg, _, gen, ckpt = load_run(run)
    stats = {k: v for k, v in ckpt["generator_ema"].items() if "running" in k}
    assert stats
    calib = torch.randn((max(4 * cfg.num_chains, 256), *gen.latent_shape(28)),
                        generator=generator(stream_seed(cfg.seed, "bn_calibration")))
    recalibrate_batchnorm(gen, calib, cfg.num_chains)
    for k, v in stats.items():
        torch.testing.assert_close(gen.state_dict()[k], v)
        assert not torch.equal(v, ckpt["generator"][k]), k


def test_gen_ema_can_be_added_to_a_run_and_exports_refuse_the_trained_weights(smoke_data, tmp_path):
    from coopnets.errors import UserError
    from coopnets.export import export_run
    plain = dict(data=str(smoke_data), outdir=str(tmp_path / "runs"), progress=False)
    run = train(resolve("smoke", steps=2, **plain))
    before = load_checkpoint(run)["generator"]
    train(resolve("smoke", steps=3, gen_ema=0.999, **plain))  # resumes: the average starts now
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 3 and ckpt["generator_ema"] is not None
    out = export_run(run, tmp_path / "export")
    assert "moving average" in (out / "README.md").read_text()
    try:
        load_run(out, ema=False)
    except UserError as e:
        assert "only the moving average" in str(e)
    else:
        raise AssertionError("an export's missing trained weights were not refused")
    assert any(not torch.equal(before[k], ckpt["generator_ema"][k]) for k in before)


def test_gen_ema_is_refused_where_no_generator_is_trained(capsys):
    from coopnets.commands import main
    assert main(["train", "--preset", "smoke", "--algorithm", "descriptor", "--gen-ema", "0.9"]) == 2
    assert "trains none" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--gen-ema", "1"]) == 2
    assert "[0, 1)" in capsys.readouterr().err
