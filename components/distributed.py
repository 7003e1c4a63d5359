"""Several processes on one cycles stage (``compute.processes``): how they start, who does
which share of the sampling and scoring, and who writes.

``alignpipe stage cycles`` with ``compute.processes`` > 1 starts itself again under
``torchrun`` (the one place that decides the launch, whether DVC, the flow or a person runs
the stage). Every process then holds the whole policy; ``transformers.Trainer`` averages
their gradients (DDP: gloo on CPU, NCCL on GPUs). Work outside the Trainer is split by
:func:`share` and put back together in order by :func:`gather`, so every process holds the
same data; only process 0 writes files and logs to MLflow.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

LAUNCHED = "LOCAL_RANK"   # set by torchrun in each process it starts


def world() -> tuple[int, int]:
    """``(rank, processes)``; under torchrun, the first call joins the process group."""
    if LAUNCHED not in os.environ:
        return 0, 1
    if not torch.distributed.is_initialized():   # the Trainer joins this same group later
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_writer() -> bool:
    return world()[0] == 0


def share(items: list) -> list:
    """This process's share of ``items``: every n-th of them, from its rank on."""
    rank, n = world()
    return items[rank::n]


def gather(mine: list) -> list:
    """Every process's :func:`share` of some items, put back in the items' order. (Objects
    travel pickled, between this stage's own processes.)"""
    _, n = world()
    if n == 1:
        return mine
    parts = [None] * n
    torch.distributed.all_gather_object(parts, mine)
    return [parts[i % n][i // n] for i in range(sum(len(part) for part in parts))]


def mean_over_processes(value: float) -> float:
    _, n = world()
    if n == 1:
        return value
    total = torch.tensor(value, dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total) / n


def relaunch(processes: int) -> int | None:
    """With ``processes`` > 1, run this same command under ``torchrun`` and return its exit
    status; None when this process is already one of them, or should run alone."""
    if processes <= 1 or LAUNCHED in os.environ:
        return None
    print(f"alignpipe: {processes} processes under torchrun", flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "flows.cli", *sys.argv[1:]]
    return subprocess.run(command).returncode
