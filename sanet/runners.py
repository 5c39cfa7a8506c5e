"""One runner contract for every backend: PyTorch, ONNX Runtime, TensorRT.

A runner is a context manager with ``infer(inputs) -> outputs`` on arrays in its own input layout and
``predict(images)`` on uint8 RGB images ``(B, H, W, 3)``, returning the class map ``(B, H, W)`` and the
logits ``(B, C, H, W)`` when the backend produces them. ``info`` says what it expects and yields.
Evaluation, parity and the benchmark only ever talk to this contract.

Lifecycle (as in Polygraphy): constructing a runner is cheap (argument checks, ``info``); ``activate()`` loads
the heavy state (a copy of the PyTorch model on its device/dtype/memory format, an ONNX Runtime session, an
engine); ``close()`` frees it and is idempotent; ``with runner:`` does both. ``infer`` before ``activate`` is an
error; ``predict`` activates on first use for one-shot callers (close it, or use ``with``, to free the state).
A runner never modifies what it is given: the caller's model keeps its device, dtype, memory format and weights.

Device phases (the benchmark's timing protocol, as trtexec splits it): ``stage(inputs)`` puts an input array where
the backend computes (H2D on a GPU), ``execute()`` runs the network there, ``fetch(class_map=False)`` returns the
logits, or with ``class_map=True`` the uint8 class map with the argmax done on the device, so only the map is
copied back. :class:`DeviceRunner` (PyTorch, ONNX Runtime, TensorRT) implements the three and derives ``infer``;
host runners (OpenVINO) implement ``infer`` and get the phases from it. ``device_resident`` is False where ``execute``
includes host<->device copies (ONNX Runtime on a GPU provider without torch CUDA to hold its tensors).
``cuda_stream`` is the torch stream ``execute`` runs on, for CUDA-event timing.
"""
import contextlib
import copy
import functools
import io
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch

from .constants import IMAGENET_MEAN, IMAGENET_STD, INPUT_LAYOUTS, Preprocess
from .errors import SanetError, require
from .model import check_input_size

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RunnerInfo:
    backend: str  # "pytorch", "onnxruntime", "tensorrt"
    precision: str  # "fp32", "fp16", "bf16" (PyTorch only), "int8"
    device: str  # "cpu", "cuda", provider name, GPU name
    num_classes: int
    input_size: Optional[Tuple[int, int]] = None  # fixed (H, W), or None for any multiple of 8
    batch: Optional[int] = None  # fixed batch, or None for any
    layout: str = INPUT_LAYOUTS[0]  # "float-nchw", or "uint8-nhwc" (normalisation inside the model)
    output: str = "logits"  # or "argmax"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    @property
    def label(self):
        return "{}-{}-{}".format(self.backend, self.device, self.precision)

    @property
    def preprocess(self):
        return Preprocess(tuple(self.mean), tuple(self.std), self.layout)

    @classmethod
    def from_metadata(cls, meta, backend, device, precision=None, input_size=None, batch=None, extra=None):
        """What an exported model expects and yields, from its sanet metadata (ONNX metadata_props or the
        ``model`` entry of an engine sidecar)."""
        def floats(text):
            return tuple(float(v) for v in text.split(","))

        return cls(backend, precision or meta.get("sanet.precision", "fp32"), device, int(meta["sanet.classes"]),
                   input_size=input_size, batch=batch, layout=meta.get("sanet.input_layout", INPUT_LAYOUTS[0]),
                   output=meta.get("sanet.output", "logits"), mean=floats(meta["sanet.mean"]),
                   std=floats(meta["sanet.std"]), extra=extra or {})


def to_input(images, info: RunnerInfo):
    """uint8 RGB (B, H, W, 3) -> the input array ``info`` describes: as is for uint8-nhwc, else normalised
    float32 (B, 3, H, W)."""
    return info.preprocess.to_input(images)


class Runner:
    """The runner contract every backend keeps (evaluation, parity, the bench and sanet-infer call only this).

    Use ``with runner:`` (activate, then close) or ``activate()``/``close()``; ``predict`` alone activates on first
    use. ``info`` (RunnerInfo, set at construction) says what the runner takes and returns: backend, precision,
    device, num_classes, ``input_size`` (H, W) and ``batch`` when fixed (None: any; H, W multiples of 8), ``layout``,
    ``output`` ("logits" or "argmax"), mean/std, and ``label`` ("backend-device-precision") for reports.

    ``predict(images)``: numpy uint8 RGB (B, H, W, 3) -> (class map (B, H, W) int64, logits (B, C, H, W) float32 or
    None for an argmax export). ``infer(inputs)``: an array already in ``info.layout`` (``prepare(images)`` makes
    it: float32 normalised (B, 3, H, W) for "float-nchw", the uint8 (B, H, W, 3) frame for "uint8-nhwc") -> the
    raw output, logits float32 (B, C, H, W) or int32 classes (B, H, W).

    Subclasses set ``info`` in ``__init__``, load in ``activate``, free in ``close`` (both calling this class's), and
    implement ``infer`` (calling ``check_active`` first)."""

    info: RunnerInfo
    active = False

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def activate(self):
        self.active = True
        return self

    def close(self):
        self.active = False
        self.release()

    def release(self):
        """Let go of the last input and output (a runner that stays activated need not hold 160 MB of logits)."""
        self.staged = self.outputs = None

    def check_active(self):
        if not self.active:
            raise SanetError("{} is not active: use `with runner:` or call runner.activate() before infer".format(
                self.info.label))

    def infer(self, inputs):
        """One forward pass on an array in ``info.layout``; returns the output array (see the class docstring)."""
        raise NotImplementedError

    device_resident = False  # execute() is free of host<->device copies (always so on the CPU)
    # May stay activated between a benchmark's visits (released, not closed): its activated state is small and holds
    # no memory pool, so a close and re-activation would only cost another warm-up iteration (PyTorch on the CPU), or
    # re-activating costs far more than what it holds (the TensorRT execution provider's engine).
    keeps_warm = False
    cuda_stream = None  # the torch.cuda.Stream execute() runs on, or None (time with the host clock)
    staged = outputs = None

    def stage(self, inputs):
        self.check_active()
        self.staged = inputs

    def execute(self):
        self.outputs = self.infer(self.staged)

    def fetch(self, class_map=False):
        return class_map_of(self.outputs, self.info) if class_map else self.outputs

    def prepare(self, images):
        """uint8 RGB (B, H, W, 3) -> this runner's input array."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise SanetError("expected uint8 RGB images of shape (B, H, W, 3), got {} {}".format(images.shape, images.dtype))
        self.check_size(images.shape[0], images.shape[1:3])
        return to_input(images, self.info)

    def check_size(self, batch, size):
        if self.info.input_size is not None and tuple(size) != tuple(self.info.input_size):
            raise SanetError("{} was built for {}x{} input, got {}x{}: resize the input or rebuild for this resolution".format(
                self.info.label, self.info.input_size[0], self.info.input_size[1], size[0], size[1]))
        if self.info.batch is not None and batch != self.info.batch:
            raise SanetError("{} was built for batch {}, got {}".format(self.info.label, self.info.batch, batch))
        check_input_size(*size)

    def predict(self, images):
        """uint8 RGB (B, H, W, 3) -> (class map (B, H, W) int64, logits (B, C, H, W) float32 or None)."""
        if not self.active:
            self.activate()
        outputs = self.infer(self.prepare(images))
        return class_map_of(outputs, self.info).astype(np.int64), None if self.info.output == "argmax" else outputs


def class_map_dtype(num_classes):
    """uint8 holds every class index of Cityscapes, CamVid and any model up to 256 classes."""
    return np.uint8 if num_classes <= 256 else np.int32


def class_map_tensor(logits):
    """(B, C, H, W) logits tensor -> (B, H, W) class map on its device (uint8 up to 256 classes), the first maximum
    winning as in argmax. On the CPU a running maximum over the classes: C contiguous passes instead of a reduction
    over the strided class axis (19x1024x2048 on 2 cores: 72 ms, vs 170 ms numpy argmax and 253 ms torch.argmax)."""
    dtype = torch.uint8 if class_map_dtype(logits.shape[1]) == np.uint8 else torch.int32
    if logits.device.type != "cpu":
        return logits.argmax(dim=1).to(dtype)
    best, classes = logits[:, 0].clone(), torch.zeros(logits[:, 0].shape, dtype=dtype)
    for index in range(1, logits.shape[1]):
        classes.masked_fill_(logits[:, index] > best, index)
        torch.maximum(best, logits[:, index], out=best)
    return classes


def class_map_of(outputs, info: RunnerInfo):
    """A host runner's output array (logits (B, C, H, W) or argmax (B, H, W)) -> the class map (B, H, W)."""
    if info.output == "argmax":
        return outputs.astype(class_map_dtype(info.num_classes))
    return class_map_tensor(torch.from_numpy(np.ascontiguousarray(outputs))).numpy()


class DeviceRunner(Runner):
    """A runner whose subclass implements stage/execute/fetch with the data resident on its device (``device``, a
    torch device, unless the subclass overrides ``synchronize``)."""

    device_resident = True
    device = torch.device("cpu")

    def synchronize(self):
        """Wait for the device: the host clock then covers what was queued there."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def infer(self, inputs):
        self.stage(inputs)
        self.execute()
        return self.fetch()


@contextlib.contextmanager
def activated(runner):
    """``with activated(runner):`` activates ``runner`` for the block unless the caller already did, and then
    closes only what it opened (library functions that take a runner use this)."""
    if runner.active:
        yield runner
        return
    with runner:
        yield runner


class TorchRunner(DeviceRunner):
    """PyTorch eager on a copy of the model: CPU or CUDA; fp32, fp16 (CUDA) or bf16; optionally channels_last.

    Args:
        model: a SANet (e.g. from ``sanet.checkpoints.load_model``); a deep copy runs, the caller's is untouched.
        device: "cpu", "cuda" or "cuda:N".
        precision: "fp32", "fp16" (CUDA only) or "bf16".
        channels_last: run in the channels_last memory format.
        cuda_graph: replay a CUDA graph captured once per input shape (CUDA only).
    The runner takes any batch and any H, W that are multiples of 8 (``info.input_size`` None), float-nchw input,
    and returns float32 logits (B, C, H, W) whatever the precision. Impossible combinations raise SanetError.
    """

    def __init__(self, model, device="cpu", precision="fp32", channels_last=False, cuda_graph=False):
        if precision not in TORCH_DTYPES:
            raise SanetError("PyTorch runner supports {}, not {}".format(", ".join(TORCH_DTYPES), precision))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SanetError("CUDA device requested but torch.cuda is not available: use --device cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise SanetError("fp16 PyTorch inference needs a CUDA device (CPU half convolutions are not a fast path)")
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise SanetError("CUDA graphs need a CUDA device")
        self.source, self.dtype, self.cuda_graph = model, TORCH_DTYPES[precision], cuda_graph
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.graph = None
        cfg = model.config
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.info = RunnerInfo("pytorch", precision, self.device.type, cfg.num_classes, mean=cfg.mean, std=cfg.std,
                               extra={"device_name": name, "channels_last": channels_last, "cuda_graph": cuda_graph})

    def activate(self):
        if not self.active:
            # A deep copy: .eval()/.to() act in place, and the caller's model must stay as it was given.
            model = copy.deepcopy(self.source).eval().to(self.device, self.dtype)
            self.model = model.to(memory_format=self.memory_format)
        return super().activate()

    def close(self):
        if self.active:
            self.model = self.graph = None
            self.static_input = self.static_output = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        super().close()

    @property
    def cuda_stream(self):
        return torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None

    @property
    def keeps_warm(self):
        return self.device.type == "cpu"  # a model copy (~50 MB for SANet); CPU tensors are freed after each call

    def stage(self, inputs):
        """(B, 3, H, W) float32 host array -> a tensor on the device in the runner's dtype and memory format."""
        self.check_active()
        x = torch.from_numpy(np.asarray(inputs)).to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        if self.cuda_graph and (self.graph is None or self.static_input.shape != x.shape):
            self._capture(x)
        if self.cuda_graph:
            self.static_input.copy_(x)
        self.staged = x

    @torch.no_grad()
    def execute(self):
        if self.cuda_graph:
            self.graph.replay()
            self.outputs = self.static_output
        else:
            self.outputs = self.model(self.staged)

    @torch.no_grad()
    def fetch(self, class_map=False):
        """Logits (B, C, H, W) float32, or the class map (B, H, W) argmaxed on the device and copied back alone."""
        if class_map:
            return class_map_tensor(self.outputs).cpu().numpy()
        return self.outputs.float().cpu().numpy()

    @torch.no_grad()
    def _capture(self, x):
        """Record the forward pass once per input shape; replays skip Python and kernel-launch overhead."""
        self.static_input = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN autotuning, allocations)
            for _ in range(3):
                self.model(self.static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = self.model(self.static_input)


def describe_onnx(path, backend, device, precision=None):
    """RunnerInfo of an exported SANet ONNX from its graph input and sanet metadata (the file is read without its
    weights' external data; no session); refuses files sanet-export did not write."""
    from .export import INPUT_NAME

    onnx = require("onnx", "pip install 'sanet[onnx]'")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SanetError("ONNX file not found: {}".format(path))
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises its own types for truncated or foreign files
        raise SanetError("cannot read ONNX file {}: {} (re-export it with sanet-export)".format(
            path, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__)) from exc
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    shape = [d.dim_value if d.HasField("dim_value") else None
             for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(shape) != 4:
        raise SanetError("{} has inputs {} but a SANet export has one 4-D input named '{}': re-export it with sanet-export".format(
            path, [i.name for i in inputs], INPUT_NAME))
    if "sanet.classes" not in meta:
        raise SanetError("{} has no sanet metadata: export it with sanet-export".format(path))
    size = tuple(shape[1:3] if meta.get("sanet.input_layout") == "uint8-nhwc" else shape[2:4])
    return RunnerInfo.from_metadata(meta, backend, device, precision, input_size=size if None not in size else None,
                                    batch=shape[0], extra={"path": path, "metadata": meta})


class OnnxFileRunner(Runner):
    """Shared by the runners of an exported ONNX file: checks each input array against the file's layout."""

    def check_inputs(self, inputs):
        self.check_active()
        inputs = np.asarray(inputs)
        expected = np.uint8 if self.info.layout == "uint8-nhwc" else np.float32
        if inputs.dtype != expected or inputs.ndim != 4:
            raise SanetError("{} expects {} {} input, got {} {}".format(
                self.path, expected.__name__, self.info.layout, inputs.dtype, inputs.shape))
        return inputs


CPU_PROVIDER, CUDA_PROVIDER, TRT_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA_PROVIDER, TRT_PROVIDER)
ORT_TENSOR_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32,
                    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}  # an ONNX output type -> its element type
# What the TensorRT execution provider makes of a file (its "sanet.precision"): an FP32 export runs as fp32 or
# (trt_fp16_enable) fp16, an FP16 export as fp16; a Q/DQ export runs int8 (trt_int8_enable; with FP16 allowed too, as
# the engines' classic INT8 route builds, so layers without an INT8 kernel fall back to FP16 and not FP32). ONNX
# Runtime's TensorRT EP options: onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html.
TRT_EP_PRECISIONS = {"fp32": ("fp32", "fp16"), "fp16": ("fp16",), "int8": ("int8",)}


def ort_device(providers):
    """Where an ONNX Runtime session with ``providers`` computes, as a torch device: CUDA for the GPU providers when
    torch can allocate there, else the CPU (a GPU provider then copies the host tensors inside every run)."""
    return torch.device("cuda" if providers[0] in GPU_PROVIDERS and torch.cuda.is_available() else "cpu")


def check_providers(requested, running, available, path, log=""):
    """Refuse a session that does not run every provider asked for: ONNX Runtime drops a provider missing from its
    build with a warning, and one that fails to load (a TensorRT EP without the TensorRT its build pins) with an
    "EP Error ... Falling back" print, and then runs on what is left, so a row labelled TensorRT would time CUDA or
    the CPU. ``log``: what ONNX Runtime printed while creating the session (its reason is quoted)."""
    missing = [name for name in requested if name not in running]
    if not missing:
        return
    name = missing[0]
    if name not in available:
        why = "{} is not in this onnxruntime build (it has {}): install onnxruntime-gpu (on a Jetson, the Jetson Zoo " \
              "wheel for its JetPack)".format(name, ", ".join(available))
    else:
        reason = next((line.strip() for line in log.splitlines() if line.startswith("EP Error")), "")
        why = "{} failed to load{}: install the TensorRT/CUDA version this onnxruntime build was made for (see " \
              "onnxruntime.ai, execution providers, requirements) or use the TensorRT engine rows".format(
                  name, " ({})".format(reason[:200]) if reason else "")
    raise SanetError("ONNX Runtime would run {} on {} instead of {}, so the row would not be what it says: {}".format(
        path, ", ".join(running), ", ".join(requested), why))


def trt_library_version():
    """The version number libnvinfer reports (e.g. 8502 for 8.5.2, 100300 for 10.3.0): the TensorRT the TensorRT EP
    loads, read without importing the Python bindings; None where no libnvinfer loads."""
    import ctypes

    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            return int(ctypes.CDLL(name).getInferLibVersion())
        except (OSError, AttributeError):
            continue
    return None


def trt_cache_key(onnx_path, options):
    """What a TensorRT EP engine cache depends on (ONNX Runtime reuses a cached engine without checking any of it,
    and its documentation asks to clear the cache when one changes): the ONNX file's content, the provider options,
    the ONNX Runtime and TensorRT versions, the GPU and the L4T release -> (key, facts)."""
    import hashlib
    import json

    import onnxruntime

    from .fileio import sha256_file
    from .power import l4t_release

    gpu = None
    if torch.cuda.is_available():
        gpu = "{} sm{}{}".format(torch.cuda.get_device_name(0), *torch.cuda.get_device_capability(0))
    facts = {"onnx_sha256": sha256_file(onnx_path), "options": options, "onnxruntime": onnxruntime.__version__,
             "tensorrt_library": trt_library_version(), "gpu": gpu, "l4t": l4t_release()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16], facts


class OrtRunner(OnnxFileRunner, DeviceRunner):
    """ONNX Runtime on an exported SANet ONNX file; the file's metadata says its layout and classes.

    Construction reads the file's graph inputs and metadata (no session); ``activate`` creates the session and refuses
    it when ONNX Runtime did not load every provider asked for (:func:`check_providers`). Input and output are torch
    tensors bound in place (I/O binding) on the device the provider computes on, so ``execute`` is the network alone
    and the class map is argmaxed there (as trtexec and our TensorRT runner time it).

    ``precision`` is what the row says: on the TensorRT provider it sets the provider's FP16/INT8 flags
    (:data:`TRT_EP_PRECISIONS`); the CUDA provider runs the file's own precision; a CPU session runs the file as
    written under the label given (numerics.EmulatedRunner names its emulated precision this way).
    ``cache_dir``: where the TensorRT provider keeps its engines, in a folder per :func:`trt_cache_key` (None: no cache,
    the engine is built at every activation).

    Args:
        path: an ONNX file written by sanet-export (or ``Pipeline.onnx``/``qdq``); other files are refused.
        providers: ONNX Runtime provider names, first preferred (default ``["CPUExecutionProvider"]``).
        precision: the row's precision (default: the file's ``sanet.precision``).
        threads: intra-op thread count (None: ONNX Runtime's default).
        cache_dir: see above.
    ``info`` comes from the file: its fixed (H, W) and batch, layout and output kind; ``infer`` returns a new host
    array, float32 logits (B, C, H, W) or int32 classes (B, H, W).
    """

    def __init__(self, path, providers=None, precision=None, threads=None, cache_dir=None):
        require("onnxruntime", "pip install 'sanet[onnx]'")
        from .export import INPUT_NAME

        self.providers = list(providers or [CPU_PROVIDER])
        self.info = describe_onnx(path, "onnxruntime", self.providers[0].replace("ExecutionProvider", "").lower(), precision)
        self.path, self.threads, self.session, self.input_name = os.fspath(path), threads, None, INPUT_NAME
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        stored = self.info.extra["metadata"].get("sanet.precision", "fp32")
        if self.providers[0] == TRT_PROVIDER:
            allowed = TRT_EP_PRECISIONS.get(stored, ())
            if self.info.precision not in allowed:
                raise SanetError("the TensorRT provider runs {} ({}) as {}, not {}".format(
                    self.path, stored, " or ".join(allowed) or "nothing", self.info.precision))
            if self.info.extra["metadata"].get("sanet.int8_activations") == "uint8":
                raise SanetError("{} quantizes activations as uint8 (the x86 CPU file); TensorRT reads signed INT8 Q/DQ "
                                 "only: use the int8-activation Q/DQ export".format(self.path))
        elif self.providers[0] == CUDA_PROVIDER and self.info.precision != stored:
            raise SanetError("the CUDA provider runs {} in its own precision ({}), not {}: use the TensorRT provider or "
                             "a TensorRT engine for {}".format(self.path, stored, self.info.precision, self.info.precision))
        self.device = ort_device(self.providers)
        self.device_resident = self.device.type == "cuda" or self.providers[0] not in GPU_PROVIDERS
        self.binding = self.output = self.output_name = self.output_type = None

    @property
    def keeps_warm(self):
        """The TensorRT provider's session holds the engine it built (minutes on a Jetson) or read from its cache:
        closing it between a benchmark's visits would pay that again every round."""
        return self.providers[0] == TRT_PROVIDER

    def provider_options(self):
        """[(provider, options)] for the session: the TensorRT provider gets the row's precision flags and, with a
        ``cache_dir``, an engine cache in a folder keyed by everything the engine depends on."""
        chosen = []
        for name in self.providers:
            options = {}
            if name == TRT_PROVIDER:
                options = {"trt_fp16_enable": self.info.precision in ("fp16", "int8"),
                           "trt_int8_enable": self.info.precision == "int8"}
                if self.cache_dir is not None:
                    from .fileio import write_json_atomic

                    key, facts = trt_cache_key(self.path, options)
                    folder = os.path.join(self.cache_dir, "{}_{}".format(os.path.splitext(os.path.basename(self.path))[0], key))
                    # what this folder's engines were built for (atomic_path makes the folder, or names why it cannot)
                    write_json_atomic(os.path.join(folder, "cache.json"), facts)
                    options = dict(options, trt_engine_cache_enable=True, trt_engine_cache_path=folder)
                self.info.extra["provider_options"] = options
            chosen.append((name, options))
        return chosen

    def activate(self):
        if not self.active:
            ort = require("onnxruntime", "pip install 'sanet[onnx]'")
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            # ONNX Runtime reports a dropped provider as a Python warning and a failed one as printed lines, then
            # carries on: both are captured here and the session is checked before it is kept.
            with warnings.catch_warnings(record=True), contextlib.redirect_stdout(io.StringIO()) as printed:
                warnings.simplefilter("always")
                session = self.open_session(ort, options)
            check_providers(self.providers, session.get_providers(), ort.get_available_providers(), self.path,
                            printed.getvalue())
            sys.stdout.write(printed.getvalue())  # anything else it printed, once the session is accepted
            self.session, self.binding = session, session.io_binding()
            output = session.get_outputs()[0]
            self.output_name, self.output_type = output.name, ORT_TENSOR_TYPES[output.type]
        return super().activate()

    def open_session(self, ort, options):
        providers = self.provider_options()  # outside the try: a cache folder that cannot be written says so itself
        try:
            return ort.InferenceSession(self.path, options, providers=providers)
        except Exception as exc:
            raise SanetError("ONNX Runtime cannot load {}: {}".format(self.path, str(exc).splitlines()[0][:160])) from exc

    def close(self):
        self.session = self.binding = self.output = None
        super().close()

    def release(self):
        """Also let go of the bound output (160 MB of logits at 1024x2048) of a session that stays warm."""
        super().release()
        self.output = None
        if self.binding is not None:
            self.binding.clear_binding_inputs()
            self.binding.clear_binding_outputs()

    def stage(self, inputs):
        """The input array -> a tensor on the session's device, bound as its input; the output is bound to a tensor
        there too, (B, C, H, W) logits or (B, H, W) classes, allocated once per input shape."""
        inputs = np.ascontiguousarray(self.check_inputs(inputs))
        x = torch.from_numpy(inputs).to(self.device)
        self.synchronize()  # ONNX Runtime computes on its own stream: the copy must be done before it reads
        batch, (height, width) = x.shape[0], x.shape[1:3] if self.info.layout == "uint8-nhwc" else x.shape[2:4]
        shape = (batch, height, width) if self.info.output == "argmax" else (batch, self.info.num_classes, height, width)
        if self.output is None or tuple(self.output.shape) != shape:
            dtype = getattr(torch, np.dtype(self.output_type).name)  # numpy and torch share these type names
            self.output = torch.empty(shape, dtype=dtype, device=self.device)
        for bind, name, tensor, dtype in ((self.binding.bind_input, self.input_name, x, inputs.dtype),
                                          (self.binding.bind_output, self.output_name, self.output, self.output_type)):
            bind(name, self.device.type, self.device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())
        self.staged = x  # bound by address: the tensor must outlive the run

    def execute(self):
        self.session.run_with_iobinding(self.binding)  # returns when the providers are done (ONNX Runtime syncs them)
        self.outputs = self.output

    def fetch(self, class_map=False):
        """The output (logits float32 or argmax classes) as a new host array, or the class map made on the device."""
        if not class_map:
            return self.outputs.to("cpu", copy=True).numpy()  # a copy: the bound tensor is overwritten by the next run
        classes = self.outputs if self.info.output == "argmax" else class_map_tensor(self.outputs)
        return classes.cpu().numpy().astype(class_map_dtype(self.info.num_classes))


OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # sanet precision -> OpenVINO INFERENCE_PRECISION_HINT


@functools.lru_cache(maxsize=None)
def openvino_bf16():
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), as OpenVINO reports it (asked once per process)."""
    ov = require("openvino", "pip install 'sanet[openvino]'")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner(OnnxFileRunner):
    """OpenVINO on the CPU, from the same exported ONNX: ``fp32``, or ``bf16`` where the CPU has it natively
    (the inference precision hint; weights stay as exported), or a Q/DQ INT8 export (its precision is int8).

    Args:
        path: an ONNX file written by sanet-export; ``info`` (fixed size, batch, layout, output) comes from it.
        precision: "fp32" or "bf16" (native bf16 CPUs only); a Q/DQ file takes "fp32" and runs as int8.
        threads: inference thread count (None: OpenVINO's default).
    ``infer`` returns a host array, float32 logits (B, C, H, W) or int32 classes (B, H, W).
    """

    def __init__(self, path, precision="fp32", threads=None):
        require("openvino", "pip install 'sanet[openvino]'")
        self.info = describe_onnx(path, "openvino", "cpu")
        quantized = self.info.precision == "int8"
        if precision not in OPENVINO_PRECISIONS or (quantized and precision != "fp32"):
            raise SanetError("OpenVINO runs fp32 or bf16 on an FP32 export, and int8 from a Q/DQ export; {} ({}) "
                             "cannot run as {}".format(path, self.info.precision, precision))
        if precision == "bf16" and not openvino_bf16():
            raise SanetError("this CPU has no native bf16 (AVX-512 BF16 or AMX): run OpenVINO in fp32")
        self.info.precision = "int8" if quantized else precision
        self.path, self.threads, self.request = os.fspath(path), threads, None
        self.hint = OPENVINO_PRECISIONS[precision]

    def activate(self):
        if not self.active:
            ov = require("openvino", "pip install 'sanet[openvino]'")
            config = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            try:
                compiled = ov.Core().compile_model(self.path, "CPU", config)
            except Exception as exc:
                raise SanetError("OpenVINO cannot load {}: {}".format(self.path, str(exc).splitlines()[0][:160])) from exc
            self.request = compiled.create_infer_request()
        return super().activate()

    def close(self):
        self.request = None
        super().close()

    def infer(self, inputs):
        inputs = self.check_inputs(inputs)
        self.request.infer({0: inputs})
        return self.request.get_output_tensor(0).data.copy()  # the request reuses its output buffer
