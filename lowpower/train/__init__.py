"""Training and testing: the trainer behind ``train.py`` (``trainer``), its loop (``engine``), the losses,
distillation, DDP under torchrun (``distributed``), starting from pretrained or earlier weights
(``pretrained``, ``init_from``), and the tester behind ``test.py`` (``tester``, with its prediction
``panels`` and the training ``plots``)."""
