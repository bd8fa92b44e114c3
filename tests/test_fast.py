"""The fast path (coopnets.fast) computes the same algorithm as the eager one."""
import pytest
import torch

from coopnets import fast
from coopnets.algorithms import Batch, Nets, coop_step
from coopnets.checkpoint import load_checkpoint
from coopnets.config import resolve
from coopnets.langevin import revise
from coopnets.models import build_nets
from coopnets.training import build_session, step_nets, train


def _des():
    torch.manual_seed(0)
    return build_nets(resolve("smoke", data="-"), 1)[0]


def test_revision_body_with_predrawn_noise_equals_revise_bit_for_bit():
    """What a CUDA graph captures (the loop over pre-drawn noise) is the eager loop exactly:
    the noise is drawn in the same order from the same generator."""
    des, x = _des(), torch.rand(6, 1, 28, 28) * 2 - 1
    kw = dict(ref_std=0.016, step_size=0.002)
    eager = revise(des, x, steps=4, rng=torch.Generator().manual_seed(3), **kw)
    noise = fast.draw_noise(4, x.shape, torch.Generator().manual_seed(3), x.device)
    x0 = x.clone()
    body = fast.revision_body(des, x, noise, **kw)
    assert torch.equal(body, eager)
    assert torch.equal(x, x0)  # the static input is not modified
    assert not torch.equal(eager, x)


def test_graphed_revision_off_cuda_is_the_eager_revision():
    des, x = _des(), torch.rand(5, 1, 28, 28) * 2 - 1
    g = fast.GraphedRevision(des, ref_std=0.016, steps=3, step_size=0.002)
    a = g(x, torch.Generator().manual_seed(1))
    b = revise(des, x, ref_std=0.016, steps=3, step_size=0.002, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not g.graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_revision_on_cuda_equals_eager():
    des, x = _des().cuda(), (torch.rand(8, 1, 28, 28) * 2 - 1).cuda()
    g = fast.GraphedRevision(des, ref_std=0.016, steps=5, step_size=0.002)
    for seed in (0, 1):  # the second call replays the captured graph
        rng = torch.Generator("cuda").manual_seed(seed)
        a = g(x, rng)
        b = revise(des, x, ref_std=0.016, steps=5, step_size=0.002,
                   rng=torch.Generator("cuda").manual_seed(seed))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert len(g.graphs) == 1


def test_compiled_coop_step_equals_eager(smoke_data):
    """torch.compile (aot_eager: the same autograd graph capture as inductor, no code
    generation) through step_nets: the same samples and updates as the eager step."""
    from coopnets.data import load_images
    cfg_e = resolve("smoke", data=str(smoke_data), des_steps=3)
    cfg_c = resolve("smoke", data=str(smoke_data), des_steps=3, compile="aot_eager")
    images = load_images(str(smoke_data), "auto", 0, False, 0, "", "")
    x = images[:8].float() / 127.5 - 1
    out = []
    for cfg in (cfg_e, cfg_c):
        s = build_session(cfg, images, torch.device("cpu"))
        nets = step_nets(s)
        r = coop_step(nets, Batch(x), {}, cfg, torch.Generator().manual_seed(5))
        out.append((r, [p.detach().clone() for p in s.modules[0].parameters()]))
    (re, pe), (rc, pc) = out
    torch.testing.assert_close(rc.samples["x_rev"], re.samples["x_rev"], rtol=1e-4, atol=1e-5)
    for a, b in zip(pe, pc):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_run_checkpoints_plain_module_names(smoke_data, tmp_path):
    run = train(resolve("smoke", data=str(smoke_data), outdir=str(tmp_path), compile="aot_eager",
                        progress=False))
    ckpt = load_checkpoint(run)
    assert not any("_orig_mod" in k for k in ckpt["descriptor"]), "compiled names leaked"
    assert "fast path: networks compiled (aot_eager)" in (run / "log.txt").read_text()
    des, gen = build_nets(resolve("smoke", data="-"), 1)
    des.load_state_dict(ckpt["descriptor"])  # loads into an uncompiled network


def test_fast_options_do_not_split_runs(smoke_data, tmp_path):
    """--compile and --cuda-graphs change how, not what: the same command with them resumes."""
    from coopnets.config import same_run
    from coopnets.checkpoint import config_dict
    a = config_dict(resolve("smoke", data=str(smoke_data)))
    b = config_dict(resolve("smoke", data=str(smoke_data), compile="inductor", cuda_graphs=True))
    assert same_run(a, b)
    with pytest.raises(Exception, match="--compile must be"):
        resolve("smoke", data="-", compile="fast")


def _one_step(smoke_data, reviser=None, **overrides):
    """One CoopNets step of the smoke preset on 8 digits, l_G = 0: its result and the
    parameters after it."""
    import dataclasses
    from coopnets.data import load_images
    cfg = resolve("smoke", data=str(smoke_data), des_steps=3, gen_steps=0, **overrides)
    images = load_images(str(smoke_data), "auto", 0, False, 0, "", "")
    s = build_session(cfg, images, torch.device("cpu"))
    nets = dataclasses.replace(step_nets(s), reviser=reviser)
    x = images[:8].float() / 127.5 - 1
    r = coop_step(nets, Batch(x), {}, cfg, torch.Generator().manual_seed(5))
    return r, [p.detach().clone() for m in s.modules for p in m.parameters()]


def test_bf16_langevin_casts_the_chains_and_keeps_the_updates_float32(smoke_data):
    """--amp bf16-langevin: the revised samples come from bf16 chains (near fp32's, not equal),
    and both updates are the float32 updates on those samples, bit for bit (l_G = 0, as in the
    paper's presets: the G2 update then reuses the fp32 generation, and no G1 chain draws noise)."""
    def step(cfg_amp=None, reviser=None):
        return _one_step(smoke_data, reviser, **({"amp": cfg_amp} if cfg_amp else {}))

    low, p_low = step("bf16-langevin")
    fp32, _ = step()
    move = (fp32.samples["x_rev"] - fp32.samples["x_gen"]).pow(2).mean().sqrt()
    err = (low.samples["x_rev"] - fp32.samples["x_rev"]).pow(2).mean().sqrt()
    assert 0 < err < 0.05 * move  # the chains ran in bf16, and stayed near the fp32 chains
    torch.testing.assert_close(low.samples["x_gen"], fp32.samples["x_gen"], rtol=0, atol=0)
    # The same fp32 step, its chains replaced by the bf16 chains' result: the same parameters.
    _, p_replayed = step(reviser=lambda x0, rng: low.samples["x_rev"])
    for a, b in zip(p_low, p_replayed):
        assert torch.equal(a, b)


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_chains_where_the_device_has_bf16_kernels_and_float32_elsewhere(
        smoke_data, monkeypatch, native):
    """--amp auto computes the bf16-langevin step where the device has bf16 kernels and the
    float32 step where it would emulate them (an AVX2-only CPU, 9x slower in bf16), bit for bit.
    Which of the two the step differs from shows that "auto" did choose."""
    monkeypatch.setattr(fast, "bf16_is_native", lambda device: native)
    auto, p_auto = _one_step(smoke_data, amp="auto")
    chosen, p_chosen = _one_step(smoke_data, amp="bf16-langevin" if native else "none")
    other, _ = _one_step(smoke_data, amp="none" if native else "bf16-langevin")
    assert torch.equal(auto.samples["x_rev"], chosen.samples["x_rev"])
    assert not torch.equal(auto.samples["x_rev"], other.samples["x_rev"])
    for a, b in zip(p_auto, p_chosen):
        assert torch.equal(a, b)


def test_bf16_kernels_are_asked_of_the_runs_own_gpu_and_an_emulating_gpu_has_none(monkeypatch):
    """A GPU has bf16 kernels from compute capability 8 (Ampere) on; PyTorch's
    is_bf16_supported() also counts older GPUs that emulate it, and asks the current GPU, not
    the run's. CUDA stubbed: GPU 0 a V100 (7.0), GPU 1 an A100 (8.0)."""
    if torch.version.hip:
        pytest.skip("ROCm: PyTorch's own bf16 check is used")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: {0: (7, 0), 1: (8, 0)}[torch.device(d).index or 0])
    fast._bf16_is_native.cache_clear()
    try:
        assert not fast.bf16_is_native("cuda:0") and not fast.bf16_is_native(torch.device("cuda"))
        assert fast.bf16_is_native("cuda:1")
        cfg = resolve("smoke", data="-", amp="auto")
        assert (fast.run_amp(cfg, "cuda:0"), fast.run_amp(cfg, "cuda:1")) == ("none", "bf16-langevin")
    finally:
        fast._bf16_is_native.cache_clear()


@pytest.mark.parametrize("amp, native, line", [
    ("auto", True, "--amp auto: bf16 Langevin chains (this cpu has bf16 kernels)"),
    ("auto", False, "--amp auto: float32 (this cpu has no bf16 kernels)"),
    ("bf16-langevin", False, "warning: --amp bf16-langevin on a cpu without bf16 kernels is emulated"),
    ("bf16", True, None),
    ("none", False, None)])
def test_the_run_log_says_which_precision_runs_and_warns_of_emulated_bf16(
        tmp_path, smoke_data, monkeypatch, capsys, amp, native, line):
    monkeypatch.setattr(fast, "bf16_is_native", lambda device: native)
    run = train(resolve("smoke", data=str(smoke_data), amp=amp, steps=1, outdir=str(tmp_path),
                        progress=False))
    text, err = (run / "log.txt").read_text(), capsys.readouterr().err
    said = [t for t in text.splitlines() if "--amp" in t]
    assert said == ([] if line is None else [said[0]]) and (line is None or said[0].startswith(line))
    assert ("warning: --amp" in err) == (line is not None and line.startswith("warning"))


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_false_means_float32_convolutions_too(tf32):
    """``--tf32 false`` turns TF32 off where this model computes, in cuDNN's convolutions as well
    as in matrix multiplies (PyTorch leaves convolutions in TF32 unless told). Only the process
    flags are set, so a CPU build checks them; a CPU run leaves them alone."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = not tf32
        fast.configure_device(resolve("smoke", data="-", tf32=tf32), torch.device("cuda"))
        assert [f.allow_tf32 for f in flags] == [tf32, tf32]
        fast.configure_device(resolve("smoke", data="-", tf32=not tf32), torch.device("cpu"))
        assert [f.allow_tf32 for f in flags] == [tf32, tf32]
    finally:
        for f, b in zip(flags, before):
            f.allow_tf32 = b
