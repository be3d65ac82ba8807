"""`datasets.map(num_proc > 1)` forks worker processes, and torch's OpenMP thread pool does not survive a fork:
a worker hangs in its first parallel operation when the parent had used several threads. Every nser map
function calls `single_thread_if_forked()` first, so a worker computes on one thread (the workers are the
parallelism) and the parent keeps its own setting."""

import os

import torch

_PARENT_PID = os.getpid()


def single_thread_if_forked():
    if os.getpid() != _PARENT_PID and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
