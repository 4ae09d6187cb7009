"""The DDP worker of tests/test_export.py: the demo program exported to torch,
trained by DistributedDataParallel on gloo, each process on its half of the
rows.  Importable by name (``torch.multiprocessing.spawn`` starts fresh
interpreters with the parent's ``sys.path``)."""
import os


def demo_lr(k):
    return 1.0 - 0.9 * k / 100


def worker(rank, world, init_file, out_dir, steps):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from _export_models import demo
    from fastgrad._export_torch import ordered_sum

    torch.set_num_threads(1)          # two processes on a shared machine
    # a rendezvous file in the test's temporary directory: no port to pick
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        prog, (X, y) = demo()
        net = prog.to_torch()
        ddp = DistributedDataParallel(net)
        opt = torch.optim.SGD(ddp.parameters(), lr=1.0)
        # equal halves: the mean of the two shard means is the full mean
        rows = slice(rank * len(y) // world, (rank + 1) * len(y) // world)
        Xs, ys = torch.from_numpy(X[rows]), torch.from_numpy(y[rows])
        losses = []
        for k in range(steps):
            for group in opt.param_groups:
                group["lr"] = demo_lr(k)
            opt.zero_grad()
            out = ddp(Xs, ys)
            local = ordered_sum(out[:, 0]) * (1.0 / out.shape[0]) + ddp.module.penalty()
            local.backward()          # DDP averages the gradients over the processes
            opt.step()
            total = local.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        if rank == 0:
            np.save(os.path.join(out_dir, "losses.npy"), np.array(losses))
            np.save(os.path.join(out_dir, "theta.npy"), net.parameter_vector().numpy())
        # every collective done on both sides before either leaves (as
        # examples/07_export_to_torch.py)
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # The results are on disk and both ranks are past their last collective.
    # Leave without gloo's teardown: it aborts now and then ("terminate called
    # without an active exception", SIGABRT) when the peer is tearing down at
    # the same moment -- seen once in CI on 2026-12-07 -- and the teardown is
    # torch's, not what this test checks.
    os._exit(0)
