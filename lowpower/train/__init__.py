"""Training and testing: the trainer behind ``train.py`` (``trainer``; where a run lives and which config
it runs with, ``run_config``), its loop (``engine``), the losses,
distillation, DDP under torchrun (``distributed``, ``sync_bn``), the weight average (``ema``), the
TensorBoard log (``tensorboard_log``), starting from pretrained or earlier weights
(``pretrained``, ``init_from``), and the tester behind ``test.py`` (``tester``, with its prediction
``panels`` and the training ``plots``)."""
