"""TensorRT backend of the packaged model: the shipped ONNX file -> an fp16 engine -> logits.

A package built with ``./compress.sh CKPT --backend tensorrt`` carries ``solution/model.onnx``
beside the usual ``weights.npz``. At start-up ``load_engine_model`` returns an ``EngineModel``
that the ``Segmenter`` calls like the network ((N, 3, H, W) CUDA tensor in, logits out), so the
logits go through the same ``postprocess.segment`` as the PyTorch path. The engine is read from
the cache file beside the package (``solution.pyz.engine``) when that file was built from the
same ONNX file, TensorRT version, GPU and precision; otherwise it is built (seconds to minutes
on a Jetson Nano, outside the model timer) and written there for the next run.

When tensorrt cannot be imported, CUDA is missing, or the engine cannot be built,
``load_engine_model`` prints one warning line on stderr and returns None: the PyTorch model
from ``weights.npz`` runs instead.

Two TensorRT APIs are detected by feature, never by version: 8.2 (the Jetson Nano's JetPack 4.6:
``build_engine``/``max_workspace_size``/binding indices/``execute_async_v2``) and 10
(``build_serialized_network``/``set_memory_pool_limit``/tensor names/``execute_async_v3``).
No pycuda: the engine reads and writes torch CUDA tensors through ``data_ptr()``, on torch's
current stream.

Device-side code: Python 3.6 syntax, the torch 1.10 API; tensorrt is imported only when asked.

Example (skipped as a doctest: it needs TensorRT and a CUDA device, the Jetson's):
    >>> model = load_engine_model(manifest, lambda: onnx_bytes)  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 128, 128, device='cuda')).shape  # doctest: +SKIP
    torch.Size([1, 14, 128, 128])
"""
import hashlib
import os
import sys
import time

import torch

CACHE_MAGIC = b'lowpower-tensorrt-engine 1\n'
WORKSPACE_BYTES = 1 << 28  # 256 MiB: the Nano's 4 GB are shared by the CPU and the GPU
TORCH_DTYPES = {'FLOAT': torch.float32, 'HALF': torch.float16, 'INT32': torch.int32,
                'INT8': torch.int8, 'BOOL': torch.bool}


class EngineError(Exception):
    """The engine cannot be built or run; the message is one line."""


def warn(message):
    """One line on stderr, as solution.main's warnings."""
    sys.stderr.write('solution: {}\n'.format(message))
    sys.stderr.flush()


# ----------------------------------------------------------------------------- the decision

def import_tensorrt():
    """(the tensorrt module, None), or (None, why it cannot be imported)."""
    try:
        import tensorrt
    except ImportError as error:  # a missing libnvinfer shared library is an ImportError too
        return None, 'tensorrt cannot be imported ({})'.format(error)
    return tensorrt, None


def fallback_reason(trt, import_problem, cuda_available):
    """None when the engine can be tried; else why the PyTorch path must run.

    Args:
        trt: the tensorrt module, or None.
        import_problem: ``import_tensorrt``'s reason, or None.
        cuda_available: ``torch.cuda.is_available()``.

    Example:
        >>> fallback_reason(None, 'tensorrt cannot be imported (no module)', True)
        'tensorrt cannot be imported (no module)'
    """
    if trt is None:
        return import_problem or 'tensorrt is not installed'
    if not cuda_available:
        return 'CUDA is not available to torch'
    return None


def fallback_warning(reason):
    """The one warning line of a TensorRT package that runs its PyTorch model instead."""
    return ('warning: TensorRT backend not used: {}; running the PyTorch model from weights.npz '
            'instead'.format(reason))


# ----------------------------------------------------------------------------- the cache

def package_path():
    """The pyz (or unpacked folder) this module was loaded from: the cache sits beside it."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine_cache_path(package):
    """``solution.pyz`` -> ``solution.pyz.engine`` (beside it, not inside: a zip is read-only)."""
    return package.rstrip('/\\') + '.engine'


def engine_key(onnx_bytes, trt_version, gpu_name, fp16):
    """sha256 hex of what an engine depends on: the ONNX file, TensorRT's version, the GPU, precision.

    Example:
        >>> len(engine_key(b'onnx', '8.2.1', 'NVIDIA Tegra X1', True))
        64
    """
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(onnx_bytes).hexdigest().encode('ascii'))
    for part in (trt_version, gpu_name, 'fp16' if fp16 else 'fp32'):
        digest.update(b'\n' + str(part).encode('utf-8'))
    return digest.hexdigest()


def read_cached_engine(path, key):
    """The serialized engine stored at ``path`` under ``key``; None when absent, foreign or stale."""
    header = CACHE_MAGIC + key.encode('ascii') + b'\n'
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError):
        return None
    if not data.startswith(header) or len(data) == len(header):
        return None
    return data[len(header):]


def write_cached_engine(path, key, blob):
    """Store ``blob`` at ``path`` under ``key`` (atomically); False when the folder is read-only."""
    partial = '{}.{}.partial'.format(path, os.getpid())
    try:
        with open(partial, 'wb') as handle:
            handle.write(CACHE_MAGIC + key.encode('ascii') + b'\n')
            handle.write(blob)
        os.rename(partial, path)  # atomic on POSIX: a reader sees the old file or the new one
    except (IOError, OSError):
        if os.path.exists(partial):
            os.remove(partial)
        return False
    return True


# ----------------------------------------------------------------------------- building

def create_network(trt, builder):
    """An explicit-batch network: 8.2 needs the flag, 10 ignores it, 11 no longer has it."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)
    return builder.create_network(0 if flag is None else 1 << int(flag))


def set_workspace(trt, config, size):
    """Workspace limit: ``set_memory_pool_limit`` (8.4+) or ``max_workspace_size`` (8.2)."""
    if hasattr(config, 'set_memory_pool_limit'):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
    else:
        config.max_workspace_size = size


def enable_fp16(trt, builder, config):
    """Allow fp16 kernels; True when set. Without a fast-fp16 GPU or the flag, the engine is fp32."""
    flag = getattr(trt.BuilderFlag, 'FP16', None)
    if flag is None or not getattr(builder, 'platform_has_fast_fp16', True):
        warn('warning: this TensorRT/GPU offers no fp16 build flag; the engine computes in fp32')
        return False
    config.set_flag(flag)
    return True


def serialize(builder, network, config):
    """The serialized engine: ``build_serialized_network`` (8.0+), else ``build_engine`` (7.x)."""
    if hasattr(builder, 'build_serialized_network'):
        blob = builder.build_serialized_network(network, config)
    else:
        engine = builder.build_engine(network, config)
        blob = engine.serialize() if engine is not None else None
    if blob is None:
        raise EngineError('TensorRT could not build an engine from model.onnx (its log is above)')
    return bytes(blob)


def build_engine_bytes(trt, logger, onnx_bytes, fp16):
    """Parse the ONNX file and build a serialized engine (fp16 kernels allowed when ``fp16``)."""
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError('TensorRT cannot parse model.onnx: {}'.format('; '.join(errors[:3]) or 'no reason given'))
    config = builder.create_builder_config()
    set_workspace(trt, config, WORKSPACE_BYTES)
    if fp16:
        enable_fp16(trt, builder, config)
    return serialize(builder, network, config)


# ----------------------------------------------------------------------------- running

def torch_dtype(trt_dtype):
    """torch dtype of a TensorRT ``DataType`` (``DataType.HALF`` -> ``torch.float16``)."""
    name = str(trt_dtype).rpartition('.')[2].upper()
    if name not in TORCH_DTYPES:
        raise EngineError('engine tensor of type {} has no torch buffer type here'.format(trt_dtype))
    return TORCH_DTYPES[name]


def engine_tensors(trt, engine):
    """[(name, is_input, shape, DataType)] in engine order: tensor names (8.5+) or bindings (8.2)."""
    if hasattr(engine, 'num_io_tensors'):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [(name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                 tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)) for name in names]
    return [(engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
             engine.get_binding_dtype(i)) for i in range(engine.num_bindings)]


class EngineModel(object):
    """The engine, called like the network: (N, 3, H, W) CUDA tensor -> (N, C, H, W) logits.

    One torch CUDA buffer per engine tensor, allocated once; a batch larger than the engine's
    (the shipped ONNX file has batch 1) runs in engine-sized chunks.

    Args:
        trt: the tensorrt module.
        logger: a ``trt.Logger``.
        blob: a serialized engine.
    """

    def __init__(self, trt, logger, blob):
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EngineError('TensorRT cannot deserialize the engine (built by another version or GPU?)')
        self.context = self.engine.create_execution_context()
        tensors = engine_tensors(trt, self.engine)
        inputs = [t for t in tensors if t[1]]
        outputs = [t for t in tensors if not t[1]]
        if len(inputs) != 1 or not outputs:
            raise EngineError('the engine has {} inputs and {} outputs; expected 1 image and logits'.format(
                len(inputs), len(outputs)))
        self.input_name = inputs[0][0]
        self.batch = int(inputs[0][2][0])
        named = [t[0] for t in outputs if t[0] == 'logits']
        self.output_name = named[0] if named else outputs[0][0]
        self.buffers = dict((name, torch.empty(shape, dtype=torch_dtype(dtype), device='cuda'))
                            for name, _, shape, dtype in tensors)
        self.tensor_api = hasattr(self.context, 'execute_async_v3')
        if self.tensor_api:
            for name, _, _, _ in tensors:
                self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.bindings = [self.buffers[name].data_ptr() for name, _, _, _ in tensors]

    def to(self, device):
        """The buffers live on CUDA already (the Segmenter's model interface)."""
        return self

    def half(self):
        """fp16 is the engine's choice; inputs are cast to its input type (the model interface)."""
        return self

    def eval(self):
        return self

    def execute(self):
        """Run the engine once on torch's current stream, so torch's later kernels follow it."""
        stream = torch.cuda.current_stream().cuda_stream
        if self.tensor_api:
            done = self.context.execute_async_v3(stream)
        else:
            done = self.context.execute_async_v2(self.bindings, stream)
        if not done:
            raise EngineError('TensorRT failed to execute the engine')

    def __call__(self, images):
        image_buffer, logits = self.buffers[self.input_name], self.buffers[self.output_name]
        chunks = []
        for start in range(0, images.shape[0], self.batch):
            chunk = images[start:start + self.batch]
            image_buffer[:chunk.shape[0]].copy_(chunk)  # casts an fp16 input to the engine's type
            self.execute()
            chunks.append(logits[:chunk.shape[0]])
            if images.shape[0] > self.batch:
                chunks[-1] = chunks[-1].clone()  # the next chunk overwrites the buffer
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


# ----------------------------------------------------------------------------- start-up

def engine_blob(trt, logger, onnx_bytes, fp16, cache_path):
    """(serialized engine, how it was obtained): read from ``cache_path`` or built and stored there."""
    key = engine_key(onnx_bytes, getattr(trt, '__version__', '?'), torch.cuda.get_device_name(0), fp16)
    cached = read_cached_engine(cache_path, key)
    if cached is not None:
        return cached, 'read from {}'.format(cache_path)
    begin = time.time()
    blob = build_engine_bytes(trt, logger, onnx_bytes, fp16)
    stored = write_cached_engine(cache_path, key, blob)
    return blob, 'built in {:.1f} s{}'.format(time.time() - begin, ', cached in {}'.format(cache_path)
                                              if stored else ' (its folder is read-only: not cached)')


def load_engine_model(manifest, read_onnx, cache_path=None):
    """An ``EngineModel`` for the package's ONNX file, or None after a one-line warning on stderr.

    Args:
        manifest: the package's manifest (``precision``: fp16 allows fp16 kernels).
        read_onnx: returns the shipped ``model.onnx``'s bytes; called only when the engine is tried,
            so a fallback run does not unzip it.
        cache_path: the engine cache file (default: beside the package).
    """
    trt, problem = import_tensorrt()
    reason = fallback_reason(trt, problem, torch.cuda.is_available())
    if reason is None:
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            blob, how = engine_blob(trt, logger, read_onnx(), manifest.get('precision') == 'fp16',
                                    cache_path or engine_cache_path(package_path()))
            model = EngineModel(trt, logger, blob)
            warn('TensorRT {} engine ({}), {} precision allowed'.format(
                getattr(trt, '__version__', '?'), how, manifest.get('precision')))
            return model
        except Exception as error:  # noqa: BLE001 -- any TensorRT failure leaves the PyTorch path
            reason = 'engine failed: {}: {}'.format(type(error).__name__, str(error).strip().split('\n')[0])
    warn(fallback_warning(reason))
    return None
