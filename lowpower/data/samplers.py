"""Samplers and the dataset wrapper that make training resume exactly and validation shard evenly.

Every sample's augmentation is a function of (seed, epoch, rank, position), so a run resumed half-way
through an epoch sees the same crops, flips and jitter as one that ran straight through.

Example:
    >>> sample_seed(0, 1, 0, 5) == sample_seed(0, 1, 0, 5)
    True
"""
import random

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


def sample_seed(seed, epoch, rank, position):
    """The augmentation seed of the ``position``-th sample that ``rank`` draws in ``epoch``.

    A pure function of its arguments (numpy's SeedSequence mixes them), so the same sample gets
    the same crop, flip and jitter whether the epoch ran straight through or was resumed half-way,
    and whichever DataLoader worker happens to load it.

    Example:
        >>> sample_seed(0, 1, 0, 5) == sample_seed(0, 1, 0, 5) != sample_seed(0, 1, 0, 6)
        True
    """
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, np.uint64)[0])


class EpochSampler(DistributedSampler):
    """A DistributedSampler (also for one process) that can skip the batches already trained.

    It yields ``(index, augmentation seed)`` pairs for :class:`SeededItems`. The order is a
    function of (seed, epoch, rank) and each seed of (seed, epoch, rank, position), so a run
    resumed mid-epoch sees the remaining batches of the very same order, augmented the same way.

    Args:
        dataset: the training set.
        num_replicas, rank: the process group (1 and 0 alone).
        seed: shuffling and augmentation seed.

    Example:
        >>> sampler = EpochSampler(list(range(6)), seed=0)
        >>> sampler.set_position(epoch=2, skip_samples=4)
        >>> [index for index, _ in sampler], len(sampler)
        ([4, 5], 2)
    """

    def __init__(self, dataset, num_replicas=1, rank=0, seed=0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.skip = 0

    def set_position(self, epoch, skip_samples=0):
        """Start ``epoch``'s order, leaving out its first ``skip_samples`` indices (this rank's)."""
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        indices = list(super().__iter__())
        return iter([(index, sample_seed(self.seed, self.epoch, self.rank, position))
                     for position, index in enumerate(indices) if position >= self.skip])

    def __len__(self):
        return max(0, self.num_samples - self.skip)


class SeededItems(torch.utils.data.Dataset):
    """A dataset indexed by ``(index, seed)`` pairs: each item is made under its own seed.

    Why: a DataLoader seeds each worker once, from a base seed drawn per epoch, so which random
    numbers a sample's augmentation gets depends on which worker loaded it and on everything that
    worker loaded before -- state no checkpoint can hold, and different after a mid-epoch resume.
    Seeding python ``random``, numpy and torch from the sampler's per-sample seed makes the
    augmentation a function of (seed, epoch, rank, position) alone. In the main process
    (``data.workers: 0``) the previous random states are put back afterwards, so loading never
    disturbs the training's own random numbers.

    Args:
        dataset: the training set, whose transforms draw from the global generators.

    Example:
        >>> items = SeededItems([10, 20, 30])
        >>> items[(2, 12345)]
        30
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2 ** 32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class ShardSampler(Sampler):
    """Every index exactly once across the processes (rank r takes r, r + world, ...).

    Unlike DistributedSampler it never pads with repeats, so summed confusion matrices count each
    validation image once.
    """

    def __init__(self, dataset, num_replicas=1, rank=0):
        self.indices = list(range(rank, len(dataset), num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
