"""One runner contract for every backend: PyTorch, ONNX Runtime, TensorRT.

A runner is a context manager with ``infer(inputs) -> outputs`` on arrays in its own input layout and
``predict(images)`` on uint8 RGB images ``(B, H, W, 3)``, returning the class map ``(B, H, W)`` and the
logits ``(B, C, H, W)`` when the backend produces them. ``info`` says what it expects and yields.
Evaluation, parity and the benchmark only ever talk to this contract.
"""
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch

from .errors import SanetError, require
from .model import IMAGENET_MEAN, IMAGENET_STD, check_input_size


@dataclass
class RunnerInfo:
    backend: str  # "pytorch", "onnxruntime", "tensorrt"
    precision: str  # "fp32", "fp16", "int8"
    device: str  # "cpu", "cuda", provider name, GPU name
    num_classes: int
    input_size: Optional[Tuple[int, int]] = None  # fixed (H, W), or None for any multiple of 8
    batch: Optional[int] = None  # fixed batch, or None for any
    layout: str = "float-nchw"  # or "uint8-nhwc" (normalisation inside the model)
    output: str = "logits"  # or "argmax"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    @property
    def label(self):
        return "{}-{}-{}".format(self.backend, self.device, self.precision)

    @classmethod
    def from_metadata(cls, meta, backend, device, precision=None, input_size=None, batch=None, extra=None):
        """What an exported model expects and yields, from its sanet metadata (ONNX metadata_props or the
        ``model`` entry of an engine sidecar)."""
        def floats(text):
            return tuple(float(v) for v in text.split(","))

        return cls(backend, precision or meta.get("sanet.precision", "fp32"), device, int(meta["sanet.classes"]),
                   input_size=input_size, batch=batch, layout=meta.get("sanet.input_layout", "float-nchw"),
                   output=meta.get("sanet.output", "logits"), mean=floats(meta["sanet.mean"]),
                   std=floats(meta["sanet.std"]), extra=extra or {})


def to_input(images, info: RunnerInfo):
    """uint8 RGB (B, H, W, 3) -> the input array ``info`` describes: as is for uint8-nhwc, else normalised
    float32 (B, 3, H, W)."""
    if info.layout == "uint8-nhwc":
        return np.ascontiguousarray(images)
    mean = np.asarray(info.mean, np.float32) * 255.0
    std = np.asarray(info.std, np.float32) * 255.0
    return np.ascontiguousarray(((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


class Runner:
    """Base class: subclasses set ``info`` and implement ``infer``; ``activate``/``close`` are optional."""

    info: RunnerInfo

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def activate(self):
        pass

    def close(self):
        pass

    def infer(self, inputs):
        raise NotImplementedError

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
        outputs = self.infer(self.prepare(images))
        if self.info.output == "argmax":
            return outputs.astype(np.int64), None
        return outputs.argmax(axis=1), outputs


class TorchRunner(Runner):
    """PyTorch eager on CPU or CUDA, fp32 or fp16 (CUDA), optionally channels_last."""

    def __init__(self, model, device="cpu", precision="fp32", channels_last=False, cuda_graph=False):
        if precision not in ("fp32", "fp16"):
            raise SanetError("PyTorch runner supports fp32 and fp16, not {}".format(precision))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SanetError("CUDA device requested but torch.cuda is not available: use --device cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise SanetError("fp16 PyTorch inference needs a CUDA device (CPU half convolutions are not a fast path)")
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        if cuda_graph and self.device.type != "cuda":
            raise SanetError("CUDA graphs need a CUDA device")
        self.cuda_graph, self.graph = cuda_graph, None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        cfg = model.config
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.info = RunnerInfo("pytorch", precision, self.device.type, cfg.num_classes, mean=cfg.mean, std=cfg.std,
                               extra={"device_name": name, "channels_last": channels_last, "cuda_graph": cuda_graph})

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def infer(self, inputs):
        x = torch.from_numpy(np.asarray(inputs)).to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        if not self.cuda_graph:
            return self.model(x).float().cpu().numpy()
        if self.graph is None or self.static_input.shape != x.shape:
            self._capture(x)
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.float().cpu().numpy()

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


class OrtRunner(Runner):
    """ONNX Runtime on an exported SANet ONNX file; the file's metadata says its layout and classes."""

    def __init__(self, path, providers=None, precision=None, threads=None):
        from .export import INPUT_NAME, read_metadata

        ort = require("onnxruntime", "pip install 'sanet[onnx]'")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise SanetError("ONNX file not found: {}".format(path))
        meta = read_metadata(path)
        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise SanetError("ONNX Runtime provider {} is not available here (have: {}): install onnxruntime-gpu".format(
                missing[0], ", ".join(available)))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as exc:
            raise SanetError("ONNX Runtime cannot load {}: {}".format(path, str(exc).splitlines()[0][:160])) from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 4:
            raise SanetError("{} has inputs {} but a SANet export has one 4-D input named '{}': re-export it with sanet-export".format(
                path, [(i.name, i.shape) for i in inputs], INPUT_NAME))
        if "sanet.classes" not in meta:
            raise SanetError("{} has no sanet metadata: export it with sanet-export".format(path))
        self.input_name = INPUT_NAME
        shape = inputs[0].shape
        size = tuple(shape[1:3] if meta.get("sanet.input_layout") == "uint8-nhwc" else shape[2:4])
        fixed = all(isinstance(v, int) for v in size)
        self.info = RunnerInfo.from_metadata(
            meta, "onnxruntime", providers[0].replace("ExecutionProvider", "").lower(), precision,
            input_size=size if fixed else None, batch=shape[0] if isinstance(shape[0], int) else None,
            extra={"path": path, "metadata": meta})

    def infer(self, inputs):
        inputs = np.asarray(inputs)
        expected = np.uint8 if self.info.layout == "uint8-nhwc" else np.float32
        if inputs.dtype != expected or inputs.ndim != 4:
            raise SanetError("{} expects {} {} input, got {} {}".format(
                self.info.extra["path"], expected.__name__, self.info.layout, inputs.dtype, inputs.shape))
        return self.session.run(None, {self.input_name: inputs})[0]
