"""A 2-process CPU (gloo) DDP CoopNets step equals the single-process step on the whole batch.

Each example draws its latent and Langevin noise from its own generator (ExampleRNG with
global indices), the generator has no BatchNorm (which would couple a rank's examples), and DDP
averages the ranks' gradients, so the updated parameters must agree to float tolerance.
"""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coopnets.algorithms import Batch, Nets, coop_step
from coopnets.config import resolve
from coopnets.seeding import ExampleRNG
from coopnets.models import build_descriptor, build_generator

M = 4  # chains (and observed examples) per rank


def setup():
    cfg = resolve(None, des_net="mnist", gen_net="mnist", des_width=4, gen_width=4, z_dim=8,
                  gen_norm="none", batch_size=M, num_chains=M, des_steps=3, gen_steps=0,
                  des_step_size=0.01, ref_std=1.0, des_lr=1e-3, gen_lr=1e-3)
    torch.manual_seed(0)
    des = build_descriptor("mnist", 1, 4)
    gen = build_generator("mnist", 1, 4, 8, "none")
    x = torch.rand(2 * M, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return cfg, des, gen, x


def step(cfg, des, gen, x, indices):
    opt_d = torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(0.5, 0.999))
    coop_step(Nets(des, gen, opt_d, opt_g, (8,)), Batch(x), {}, cfg, ExampleRNG(0, indices))


def step_part(rank, out):
    cfg, des, gen, x = setup()
    ddp_d = torch.nn.parallel.DistributedDataParallel(des)
    ddp_g = torch.nn.parallel.DistributedDataParallel(gen)
    cfg.num_chains = cfg.batch_size = M
    step(cfg, ddp_d, ddp_g, x[rank * M:(rank + 1) * M], range(rank * M, (rank + 1) * M))
    if rank == 0:
        torch.save(step_grads(des, gen), f"{out}/ddp.pt")


def step_grads(des, gen) -> dict:
    """The gradients the step left in each net's parameters (averaged over the ranks by DDP)."""
    return {name: [p.grad.clone() for p in net.parameters()] for name, net in
            (("des", des), ("gen", gen))}


def slope_grads(des, x_obs, x_syn, slope=0.1):
    """The descriptor's gradients of one D2 update with the slope penalty acting (s = 16 puts
    these nets' slope, RMS ∂f ≈ 0.011, at u ≈ 2.9); plain gradients, not Adam's steps, since
    Adam's first step is about lr·sign(g) and would blow the ranks' rounding up on tiny g."""
    from contextlib import nullcontext
    from coopnets.algorithms import unwrap, update_descriptor
    opt = torch.optim.SGD(des.parameters(), lr=0.0)
    update_descriptor(des, opt, x_obs, x_syn, nullcontext, slope=slope, ref_std=16.0)
    return [p.grad.clone() for p in unwrap(des).parameters()]


def slope_part(rank, out):
    _, des, _, x = setup()
    x_obs, x_syn = x[rank * M // 2:(rank + 1) * M // 2], x[M + rank * M // 2:M + (rank + 1) * M // 2] * 0.5
    grads = slope_grads(torch.nn.parallel.DistributedDataParallel(des), x_obs, x_syn)
    if rank == 0:
        torch.save(grads, f"{out}/ddp-slope.pt")


def train_part(rank, data, out):
    """train() itself under the group: 4 steps straight, and 2 + 2 resumed."""
    from coopnets.checkpoint import load_checkpoint
    from coopnets.training import train

    def cfg(outdir, steps):
        return resolve("smoke", data=data, outdir=outdir, steps=steps, progress=False, device="cpu")

    straight = train(cfg(f"{out}/a", 4))
    first = train(cfg(f"{out}/b", 2))
    again = train(cfg(f"{out}/b", 4))
    if rank == 0:
        torch.save({"same_folder": first == again, "straight": load_checkpoint(straight),
                    "resumed": load_checkpoint(again)}, f"{out}/train.pt")


def worker(rank, store, data, out):
    # a file store: no TCP port to race for; one spawn serves both tests (start-up is the cost)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    step_part(rank, out)
    dist.barrier()
    slope_part(rank, out)
    dist.barrier()
    train_part(rank, data, out)
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    data = out / "digits.npz"
    np.savez(data, x_train=np.random.default_rng(0).integers(0, 256, (32, 28, 28), dtype=np.uint8))
    mp.spawn(worker, args=(str(out / "store"), str(data), str(out)), nprocs=2, join=True)
    return out


def test_two_process_ddp_step_matches_single_process(ddp_out):
    """Both nets' gradients of the step, averaged over the ranks, are the whole batch's.
    Gradients, not the parameters after Adam's step: Adam's first step is about lr·sign(g), and
    the descriptor's top bias, whose gradient is 0 in exact arithmetic (f(data) and f(syn) share
    it), took a step of 7.5e-4 on one side from rounding alone on an AVX2 CPU."""
    cfg, des, gen, x = setup()
    cfg.num_chains = cfg.batch_size = 2 * M
    step(cfg, des, gen, x, range(2 * M))
    got, ref = torch.load(ddp_out / "ddp.pt"), step_grads(des, gen)
    for name in ("des", "gen"):
        scale = max(g.abs().max().item() for g in ref[name])
        assert scale > 0
        for a, b in zip(got[name], ref[name]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale)


def test_two_process_slope_penalty_gradients_match_single_process(ddp_out):
    """The penalty's second backward pass under DDP: the ranks' averaged gradients are the
    whole batch's (the mean of per-example penalties splits across equal shards)."""
    _, des, _, x = setup()
    ref = slope_grads(des, x[:M], x[M:] * 0.5)
    got = torch.load(ddp_out / "ddp-slope.pt")
    _, des, _, x = setup()
    plain = slope_grads(des, x[:M], x[M:] * 0.5, slope=0.0)
    scale = max(g.abs().max().item() for g in ref)
    assert max((a - b).abs().max().item() for a, b in zip(ref, plain)) > 0.3 * scale  # it acts
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale)


def test_two_process_train_resumes_bit_exactly(ddp_out):
    r = torch.load(ddp_out / "train.pt")
    assert r["same_folder"]
    a, b = r["straight"], r["resumed"]
    assert a["step"] == b["step"] == 4 and len(a["rng"]) == 2  # one noise state per process
    assert not torch.equal(a["rng"][0], a["rng"][1])  # the ranks draw different noise
    for part in ("descriptor", "generator"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    log = (next((ddp_out / "b").glob("0000*")) / "log.txt").read_text()
    assert "2 process(es)" in log and "resumed at step 2" in log
