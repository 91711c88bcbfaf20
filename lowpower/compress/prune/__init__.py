"""Structured channel pruning: the Torch-Pruning dependency graph and the width plan (``core``), the
command (``cli``) and the fine-tune that follows it (``finetune``). The pruned widths are stored in the
checkpoint's ``arch_kwargs``, so the device rebuilds the smaller network from source."""
