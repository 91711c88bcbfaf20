"""The packaged model: manifest and weights read from inside the archive, the device, the timed call.

``Segmenter`` is the timed part of the run: uint8 RGB batches in, uint8 masks at the scored size
out, with everything in between on the device (upload, normalisation, forward pass, upsampling,
argmax, small-class removal; ``postprocess.segment``). CUDA is synchronised around each batch, so
the summed seconds are the work done, not the work queued.

Device-side code: Python 3.6 syntax, the torch 1.10 API; numpy and torch only.

Example (skipped as a doctest: the manifest and weights are files inside a built package):
    >>> manifest = load_manifest()  # doctest: +SKIP
    >>> device, half, described = choose_device(manifest)  # doctest: +SKIP
    >>> segmenter = Segmenter(build_model(manifest), manifest, device, half)  # doctest: +SKIP
    >>> segmenter(np.zeros((1, 64, 64, 3), np.uint8)).shape  # doctest: +SKIP
    (1, 512, 512)
"""
import io
import json
import os
import pkgutil
import time

import numpy as np
import torch

from .foldbn import fold_for_inference
from .postprocess import segment

PACKAGE = __name__.rpartition('.')[0] or 'solution'
THREADS_ENV = 'LOWPOWER_THREADS'


def load_manifest():
    """manifest.json from inside the package (written by the packager; see README.md)."""
    return json.loads(pkgutil.get_data(PACKAGE, 'manifest.json').decode('utf-8'))


def load_weights():
    """The state dict from weights.npz: plain arrays, no pickle."""
    data = pkgutil.get_data(PACKAGE, 'weights.npz')
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return dict((key, torch.from_numpy(arrays[key])) for key in arrays.files)


def build_model(manifest):
    """Rebuild the network from the shipped ``networks`` source and load the weights.

    fp16 weights are cast to the model's fp32 parameters here; on CUDA the
    model is halved again when the manifest asks for fp16. A ``backend`` tensorrt package returns
    ``tensorrt.EngineModel`` (called like the network) when TensorRT and CUDA work, else this model.
    A float model has its BatchNorm folded into the convolutions (``build_float_model``).
    """
    if manifest.get('backend') == 'tensorrt':  # the shipped ONNX file as an engine, or None (warned)
        from .tensorrt import load_engine_model
        engine = load_engine_model(manifest, lambda: pkgutil.get_data(PACKAGE, manifest['tensorrt']['onnx']))
        if engine is not None:
            return engine
    if manifest.get('precision') == 'int8':  # quantized tensors stored as plain arrays (int8.py)
        from .int8 import build_int8_model
        return build_int8_model(manifest, load_weights())
    return build_float_model(manifest, load_weights())


def build_float_model(manifest, weights):
    """The float network of ``manifest`` with ``weights`` loaded, in eval mode, BatchNorm folded.

    Folding (``foldbn.py``) happens here, in fp32 and before ``Segmenter`` moves the model to its
    device and halves it, so fp16 rounds the folded weights once. ``LOWPOWER_FOLD_BN=0`` keeps BN;
    a network without ``fuse_model`` always keeps it.

    Args:
        manifest: ``arch`` and ``arch_kwargs``.
        weights: the state dict (``load_weights()``); loaded strictly, before any folding.

    Example (skipped as a doctest: the manifest and weights are files inside a built package):
        >>> model = build_float_model(load_manifest(), load_weights())  # doctest: +SKIP
    """
    import networks  # the generated registry of the one shipped model

    def rebuild():
        model = networks.create_model(manifest['arch'], **manifest['arch_kwargs'])
        model.load_state_dict(weights, strict=True)
        return model.eval()

    return fold_for_inference(rebuild(), rebuild)


def choose_device(manifest):
    """(device, half, description). CUDA when present, else the CPU with every core.

    On a CPU an fp16 package computes in fp32 (half is False): CPUs have no fast fp16 kernels, and
    the weights, rounded to fp16 by the packager, are cast back to fp32 by ``build_model``.

    Args:
        manifest: the package's manifest (``precision``).
    """
    fp16 = manifest.get('precision') == 'fp16'
    int8 = manifest.get('precision') == 'int8'  # torch's int8 kernels are CPU-only
    if torch.cuda.is_available() and not int8:
        torch.backends.cudnn.benchmark = True  # one input shape for the whole run
        return torch.device('cuda'), fp16, 'cuda ({})'.format('fp16' if fp16 else 'fp32')
    threads = int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.device('cpu'), False, 'cpu ({} threads, {})'.format(torch.get_num_threads(),
                                                                     'int8' if int8 else 'fp32')


class Segmenter(object):
    """uint8 RGB batches in, uint8 512x512 masks out; sums the model seconds.

    The timed part is everything done on the device: upload of the uint8
    batch, normalisation, forward pass, bilinear upsampling of the logits to
    the output size, argmax, small-class removal. CUDA is synchronised before and after.

    Args:
        model: the rebuilt network (returns logits, a dict with 'out', or a list whose first
            item is the logits).
        manifest: ``mean``, ``std`` and ``referee_classes`` (the ids the referee scores; only
            those channels are scored, since a larger id crashes the referee), and optionally
            ``output_size`` (512), ``min_class_area`` (0) and ``batch_size`` (1).
        device: a torch.device.
        half: run the model and its inputs in fp16.
    """

    def __init__(self, model, manifest, device, half):
        self.device = device
        self.half = half
        self.model = model.to(device)
        if half:
            self.model.half()
        self.output_size = int(manifest.get('output_size', 512))
        self.min_class_area = float(manifest.get('min_class_area', 0.0))
        self.batch_size = int(manifest.get('batch_size', 1))
        self.classes = int(manifest['referee_classes'])  # the packager writes contract.NUM_CLASSES
        self.mean = torch.tensor(manifest['mean'], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(manifest['std'], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.cuda = device.type == 'cuda'
        self.seconds = 0.0
        self.input_seconds = 0.0  # the upload and normalisation's share of seconds
        self.post_seconds = 0.0  # the post-processing's share of seconds

    def synchronize(self):
        if self.cuda:
            torch.cuda.synchronize()

    def inputs(self, batch):
        """(N, H, W, 3) uint8 numpy -> the network's normalised (N, 3, H, W) input on the device."""
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).contiguous()
        # as torchvision's ToDtype(float32, scale=True) + Normalize at train time
        x = x.float().mul_(1.0 / 255).sub_(self.mean).div_(self.std)
        return x.half() if self.half else x

    def logits(self, x):
        """The network's (N, C, h, w) scores of the input ``x``."""
        logits = self.model(x)
        if isinstance(logits, dict):
            logits = logits['out']
        elif isinstance(logits, (list, tuple)):
            logits = logits[0]
        return logits

    def postprocess(self, logits):
        """(N, C, h, w) scores -> (N, S, S) uint8 class ids of the referee's channels."""
        return segment(logits[:, :self.classes], self.output_size, self.min_class_area)

    def __call__(self, batch):
        """(N, H, W, 3) uint8 numpy -> (N, S, S) uint8 numpy; adds the device seconds."""
        count = len(batch)
        if self.cuda and count < self.batch_size:  # keep one shape for cudnn.benchmark
            padding = np.zeros((self.batch_size - count,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, padding])
        with torch.no_grad():
            self.synchronize()
            begin = time.perf_counter()
            x = self.inputs(batch)
            self.synchronize()  # the input, the network and the post-processing are timed apart
            ready = time.perf_counter()
            logits = self.logits(x)
            self.synchronize()
            middle = time.perf_counter()
            masks = self.postprocess(logits)
            self.synchronize()
            end = time.perf_counter()
            self.seconds += end - begin
            self.input_seconds += ready - begin
            self.post_seconds += end - middle
        return masks[:count].cpu().numpy()

    def warm_up(self, input_size, rounds):
        """Run ``rounds`` zero batches (cudnn picks its kernels, caches fill), then reset the clock."""
        batch = np.zeros((self.batch_size, input_size, input_size, 3), np.uint8)
        for _ in range(rounds):
            self(batch)
        self.seconds = self.input_seconds = self.post_seconds = 0.0
