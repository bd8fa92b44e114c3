"""A 2-process CPU (gloo) DDP CoopNets step equals the single-process step on the whole batch.

Each example draws its latent and Langevin noise from its own generator (ExampleRNG with
global indices), the generator has no BatchNorm (which would couple a rank's examples), and DDP
averages the ranks' gradients, so the updated parameters must agree to float tolerance.
"""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coopnets.algorithms import coop_step
from coopnets.config import resolve
from coopnets.langevin import ExampleRNG
from coopnets.nets import build_descriptor, build_generator

M = 4  # chains (and observed examples) per rank


def setup():
    cfg = resolve(None, des_net="mnist", gen_net="mnist", des_width=4, gen_width=4, z_dim=8,
                  gen_norm="none", batch_size=M, num_chains=M, des_steps=3, gen_steps=0,
                  des_step_size=0.01, des_refsig=1.0, des_lr=1e-3, gen_lr=1e-3)
    torch.manual_seed(0)
    des = build_descriptor("mnist", 1, 4)
    gen = build_generator("mnist", 1, 4, 8, "none")
    x = torch.rand(2 * M, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return cfg, des, gen, x


def step(cfg, des, gen, x, indices):
    opt_d = torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(0.5, 0.999))
    coop_step(des, gen, opt_d, opt_g, x, cfg, (8,), ExampleRNG(0, indices))


def worker(rank, store, out):
    # a file store: no TCP port to race for
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    cfg, des, gen, x = setup()
    ddp_d = torch.nn.parallel.DistributedDataParallel(des)
    ddp_g = torch.nn.parallel.DistributedDataParallel(gen)
    cfg.num_chains = cfg.batch_size = M
    step(cfg, ddp_d, ddp_g, x[rank * M:(rank + 1) * M], range(rank * M, (rank + 1) * M))
    if rank == 0:
        torch.save({"des": des.state_dict(), "gen": gen.state_dict()}, out)
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def test_two_process_ddp_step_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    cfg, des, gen, x = setup()
    cfg.num_chains = cfg.batch_size = 2 * M
    step(cfg, des, gen, x, range(2 * M))
    got = torch.load(out)
    for k, v in des.state_dict().items():
        torch.testing.assert_close(got["des"][k], v, rtol=1e-4, atol=1e-6)
    for k, v in gen.state_dict().items():
        torch.testing.assert_close(got["gen"][k], v, rtol=1e-4, atol=1e-6)
