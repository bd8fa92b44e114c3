"""--gen-ema: the moving average of the generator's weights, kept beside the trained one,
checkpointed and resumed exactly, and the generator every sampling path uses."""
from __future__ import annotations

import torch
from torch import nn

from coopnets.checkpoint import load_checkpoint, load_run
from coopnets.config import resolve
from coopnets.sampling import generate
from coopnets.training import train, update_ema


def test_update_ema_is_the_geometric_average():
    """With the trained weights held at p, k updates take e₀ to p + dᵏ(e₀ − p)."""
    torch.manual_seed(0)
    gen, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    e0 = [q.detach().clone() for q in ema.parameters()]
    for _ in range(5):
        update_ema(ema, gen, 0.9)
    for e, start, p in zip(ema.parameters(), e0, gen.parameters()):
        torch.testing.assert_close(e, p + 0.9 ** 5 * (start - p))


def _cfg(data, outdir, **kw):
    return resolve("smoke", data=str(data), outdir=str(outdir), progress=False, gen_ema=0.5,
                   **kw)


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
    avg = generate(straight, 4, mode="gen", seed=3, progress=False)
    live = generate(straight, 4, mode="gen", seed=3, progress=False, ema=False)
    assert not torch.allclose(avg, live)
    _, _, gen_live, _ = load_run(straight, ema=False)
    torch.testing.assert_close(live, gen_live(_latents(gen_live, 3, 4)).float(), atol=1e-6, rtol=0)


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


def test_without_gen_ema_nothing_changes(smoke_run):
    ckpt = load_checkpoint(smoke_run)
    assert ckpt["generator_ema"] is None
    torch.testing.assert_close(generate(smoke_run, 3, mode="gen", progress=False),
                               generate(smoke_run, 3, mode="gen", progress=False, ema=False),
                               atol=0, rtol=0)


def test_gen_ema_is_refused_where_no_generator_is_trained(capsys):
    from coopnets.commands import main
    assert main(["train", "--preset", "smoke", "--algorithm", "descriptor", "--gen-ema", "0.9"]) == 2
    assert "trains none" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--gen-ema", "1"]) == 2
    assert "[0, 1)" in capsys.readouterr().err
