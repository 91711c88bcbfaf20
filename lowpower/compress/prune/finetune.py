"""Training data for pruning: gradients for Taylor importance and the short fine-tune between steps.

Both reuse the trainer's pieces (``lowpower.data.build``, ``lowpower.train.losses``, ``lowpower.train.engine``):
the checkpoint's own config gives the data, the loss and the optimiser; nothing here is a second
training loop.

Example:
    >>> tune = Tuner(state["config"], steps=20)   # doctest: +SKIP
    >>> tune.gradients(model); tune.finetune(model, step=1)  # doctest: +SKIP
"""
import itertools

import torch

from lowpower.data.build import build_dataset
from lowpower.train.engine import build_optimizer, train_one_epoch
from lowpower.train.losses import criterion_from_config


class Tuner:
    """Batches of the checkpoint's training split, its loss, and a short fine-tune.

    Args:
        cfg: the checkpoint's resolved run config (``data.root`` may be overridden first).
        steps: optimiser steps of each fine-tune between pruning steps (0: none).
        lr_scale: the fine-tune's learning rate is ``train.lr * lr_scale`` (pruned networks recover
            best with a smaller rate than the one they were trained with).
        progress: tqdm bars.
    """

    def __init__(self, cfg, steps=0, lr_scale=0.1, progress=True):
        self.cfg, self.steps, self.lr_scale, self.progress = cfg, steps, lr_scale, progress
        self.train_set = build_dataset(cfg, "train", progress=progress)
        if not len(self.train_set):
            raise ValueError("the training split of %s is empty; give --data" % cfg["data"]["root"])
        self.criterion = criterion_from_config(cfg, self.train_set, "cpu")
        self.generator = torch.Generator().manual_seed(cfg["train"]["seed"])

    def loader(self, batches):
        """``batches`` shuffled training batches (cycling through the split when it is short)."""
        size = self.cfg["train"]["batch_size"]
        order = torch.randperm(len(self.train_set), generator=self.generator).tolist()
        picks = list(itertools.islice(itertools.cycle(order), batches * size))
        subset = torch.utils.data.Subset(self.train_set, picks)
        return torch.utils.data.DataLoader(subset, batch_size=size, shuffle=False, num_workers=0, drop_last=True)

    def gradients(self, model):
        """Fill every parameter's ``.grad`` with the loss gradient of one training batch (Taylor importance)."""
        model.train()
        images, masks = next(iter(self.loader(1)))
        self.criterion(model(images), masks).backward()

    def finetune(self, model, step):
        """``self.steps`` optimiser steps at the reduced learning rate, through ``engine.train_one_epoch``;
        returns the mean loss (None when no steps are asked for)."""
        if not self.steps:
            return None
        train = dict(self.cfg["train"], lr=self.cfg["train"]["lr"] * self.lr_scale)
        optimizer = build_optimizer(model, train)  # new each time: pruning replaced the parameters
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss, _, _ = train_one_epoch(model, self.loader(self.steps), self.criterion, optimizer, scheduler, scaler,
                                     torch.device("cpu"), step - 1, clip_grad=train["clip_grad"], amp=False,
                                     progress=self.progress, total_steps=self.steps)
        model.zero_grad(set_to_none=True)
        return loss
