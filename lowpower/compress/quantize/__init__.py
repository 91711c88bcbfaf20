"""Int8 and fixed-point quantization of trained checkpoints.

    lowpower quantize ptq runs/demo/best.pt            # post-training static int8
    lowpower quantize study runs/demo/best.pt ...      # the fixed-point n-bit study

- ``ptq``: fuse conv-bn(-relu), calibrate observers on training images, convert to int8 and write
  an int8 checkpoint (``lowpower.compress.quantize.ptq``); ``test.py`` scores it, ``compress.sh`` packages it.
- ``study``: fixed-point weight/activation bit sweep (``lowpower.compress.quantize.study``); its
  --out files, keyed rows and output checks are ``lowpower.compress.quantize.study_files``.

The int8 machinery itself (fusion, qconfigs, engines) lives in ``networks/quant.py`` because the
device rebuilds int8 models with it.
"""
