"""torch.distributed glue: launch with torchrun, rank/world helpers, rank-0-only writes.

Single-process runs never initialise a process group; every helper then degrades to a no-op, so
the same stage code runs alone, on several CPU processes (gloo) or on GPUs (NCCL).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op outside torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))


def local_device(device: torch.device) -> torch.device:
    """cuda -> this rank's GPU; anything else unchanged."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average tensors in place over the ranks (no-op alone): for parameters that live outside DDP."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world_size())


def broadcast_object(obj):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(module: str, argv: list[str], nproc: int) -> int:
    """Re-run `python -m module argv...` (the command line that called this) under torchrun, `nproc` processes.

    torchrun runs inside `python -m edgekd.pipeline.distributed` (torchrun_quietly below): a rank that ends
    with edgekd's own exit code (2 bad input, 3 gate failed, 130 interrupted) has printed its one line, and
    torchrun's ChildFailedError traceback would only bury it."""
    cmd = [
        sys.executable,
        "-m",
        "edgekd.pipeline.distributed",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *argv,
    ]
    env = dict(os.environ)
    # Each rank gets its share of the cores instead of all of them (oversubscription is slow).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)


EDGEKD_EXIT_CODES = (2, 3, 130)


def torchrun_quietly(argv: list[str]) -> int:
    """torch.distributed.run with the ranks' exit code as its own and no traceback for a rank that exited
    with an edgekd exit code (anything else, e.g. a crash, keeps torchrun's full report)."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(argv)
    # torchrun's agent logs each failed rank ("failed (exitcode: 3) local_rank: 0 ..."); the rank said why
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        codes = sorted({int(f.exitcode) for f in e.failures.values()})
        ours = [c for c in codes if c in EDGEKD_EXIT_CODES]
        if ours and all(c in EDGEKD_EXIT_CODES or c < 0 for c in codes):  # the rest: stopped by torchrun
            return max(ours, key=EDGEKD_EXIT_CODES.index)  # 130 over 3 over 2
        print(str(e), file=sys.stderr)  # a crash, not an edgekd answer: torchrun's full report
        return codes[-1] if codes and codes[-1] > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(torchrun_quietly(sys.argv[1:]))
