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


def broadcast_object(obj):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(module: str, argv: list[str], nproc: int) -> int:
    """Re-run `python -m module argv...` (the command line that called this) under torchrun, `nproc` processes."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
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
