"""torchrun support: process group set-up from the environment, rank helpers, metric reduction.

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
without them everything here degrades to a single process (rank 0 of 1).

Example:
    >>> info = init_distributed_mode("cpu")   # doctest: +SKIP
    >>> info.rank, info.world_size            # doctest: +SKIP
    (0, 1)
"""
import datetime
import os
from collections import namedtuple

import numpy as np
import torch
import torch.distributed as dist

DistInfo = namedtuple("DistInfo", "rank local_rank world_size device distributed")


def pick_device(requested):
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without one is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible; use train.device=cpu or auto")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def init_distributed_mode(requested_device="auto"):
    """Join the process group torchrun describes (NCCL on GPUs, gloo on the CPU), if any.

    Returns:
        DistInfo(rank, local_rank, world_size, device, distributed) with ``device`` a torch.device
        (``cuda:LOCAL_RANK`` under torchrun on GPUs).
    """
    kind = pick_device(requested_device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 0, 1, torch.device(kind), False)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, local_rank, world, device, world > 1)


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_arrays(arrays):
    """Sum a dict of numpy arrays over all processes (every rank gets the totals).

    float64 and int64 travel as float64 so one collective carries them all; counts stay exact
    below 2**53.
    """
    if not is_distributed():
        return arrays
    keys = sorted(arrays)
    flat = np.concatenate([np.asarray(arrays[key], np.float64).ravel() for key in keys])
    tensor = torch.from_numpy(flat)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    flat = tensor.cpu().numpy()
    out, start = {}, 0
    for key in keys:
        like = np.asarray(arrays[key])
        out[key] = flat[start:start + like.size].reshape(like.shape).round().astype(like.dtype) \
            if like.dtype.kind in "iu" else flat[start:start + like.size].reshape(like.shape)
        start += like.size
    return out


def all_reduce_mean(value):
    """Mean of a Python float over all processes."""
    if not is_distributed():
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def any_process(flag):
    """True on every rank when ``flag`` is true on at least one (e.g. a SIGTERM seen by one rank)."""
    if not is_distributed():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.item() > 0


def cleanup():
    if is_distributed():
        dist.destroy_process_group()


def all_gather_objects(value):
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in one process).

    Used for the per-rank random states a checkpoint keeps; the values travel pickled between
    the processes of one job, never into a file.
    """
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def wrap_ddp(model, info, find_unused=False):
    """``model`` in DistributedDataParallel for the process ``info`` describes (its GPU, or the CPU).

    Args:
        find_unused: let DDP look for parameters without a gradient in a step (heads left out).
    """
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)
