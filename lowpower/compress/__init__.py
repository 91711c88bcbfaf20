"""Making a trained network cheaper: int8 quantization (post-training and quantization-aware) and the
fixed-point study in ``quantize``, structured pruning with Torch-Pruning in ``prune``, and
``import_sample``, which brings the official sample's FANet checkpoint into the toolkit. Each method
writes a checkpoint of its own kind (``lowpower.checkpoint.KINDS``) that the rest of the toolkit reads."""
