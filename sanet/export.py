"""ONNX export for TensorRT 8.5 (Jetson) and newer: classic exporter, opset 17, static shapes.

The exported graph optionally carries its own preprocessing (uint8 NHWC in, normalisation inside)
and postprocessing (argmax out), and its ``metadata_props`` say what it is, so every runner and
the engine builder can check an ONNX file before trusting it.
"""
import dataclasses
import inspect
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from . import __version__
from .constants import INPUT_LAYOUTS, Preprocess
from .errors import SanetError, require
from .fileio import atomic_path
from .model import check_input_size, enable_dla_friendly, enable_dynamic_shapes, fold_batchnorm

OUTPUTS = ("logits", "argmax")
MAX_OPSET_TENSORRT_85 = 17
INPUT_NAME = "images"


@dataclass
class ExportConfig:
    height: int = 1024
    width: int = 2048
    opset: int = MAX_OPSET_TENSORRT_85
    batch: int = 1
    dynamic: bool = False
    input_layout: str = "float-nchw"
    output: str = "logits"
    simplify: bool = True
    dynamic_batch: bool = False  # batch axis named "batch" (Triton dynamic batching); H and W stay fixed
    dla_friendly: bool = False  # SCE/SFF from ops Jetson DLAs run (model.enable_dla_friendly); static H x W only
    tolerance: float = 1e-3  # max |logit diff| ORT vs PyTorch, relative to the logit range

    def __post_init__(self):
        check_input_size(self.height, self.width)
        if self.input_layout not in INPUT_LAYOUTS:
            raise SanetError("unknown input layout {!r}: use {}".format(self.input_layout, " or ".join(INPUT_LAYOUTS)))
        if self.output not in OUTPUTS:
            raise SanetError("unknown output {!r}: use {}".format(self.output, " or ".join(OUTPUTS)))
        if self.batch < 1:
            raise SanetError("--batch must be >= 1")
        if self.dla_friendly and self.dynamic:
            raise SanetError("--dla-friendly needs a static H x W (DLA has no dynamic shapes): drop --dynamic")

    @property
    def output_name(self):
        return "classes" if self.output == "argmax" else "logits"

    def dynamic_axes(self):
        """ONNX dynamic axes: batch for Triton, H and W for --dynamic (their positions depend on the layout)."""
        axes = {}
        if self.dynamic_batch:
            axes[0] = "batch"
        if self.dynamic:
            spatial = (1, 2) if self.input_layout == "uint8-nhwc" else (2, 3)
            axes.update({spatial[0]: "height", spatial[1]: "width"})
        output_spatial = (1, 2) if self.output == "argmax" else (2, 3)
        output = {k: v for k, v in axes.items() if k == 0}
        if self.dynamic:
            output.update({output_spatial[0]: "height", output_spatial[1]: "width"})
        return {INPUT_NAME: axes, self.output_name: output} if axes else {}


class DeployGraph(nn.Module):
    """SANet plus the in-graph pre/post-processing an export asks for."""

    def __init__(self, model, config: ExportConfig):
        super().__init__()
        self.model = model
        self.config = config
        mean, std = Preprocess(tuple(model.config.mean), tuple(model.config.std)).scale  # (3,) each, 0..255 scale
        self.register_buffer("mean", torch.from_numpy(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.from_numpy(std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        if self.config.input_layout == "uint8-nhwc":
            # (B, H, W, 3) uint8 RGB -> float first: TensorRT takes UINT8 only as a network input cast to
            # float before any other op (8.5's Cast rule; 10/11 have no UINT8 Transpose), then (B, 3, H, W).
            images = (images.float().permute(0, 3, 1, 2) - self.mean) / self.std
        logits = self.model(images)  # (B, classes, H, W)
        if self.config.output == "argmax":
            # (B, H, W) INT32: TensorRT's ArgMax yields INT32 on every release, and 8.5 cannot cast it to
            # UINT8 (its UINT8 casts need a float input), so the class map leaves the graph as INT32.
            return logits.argmax(dim=1).to(torch.int32)
        return logits


def example_input(model_config, config: ExportConfig, seed=0):
    """Deterministic test input in the export's input layout (a smooth random image, not noise)."""
    generator = np.random.default_rng(seed)
    coarse = generator.integers(0, 256, size=(config.batch, config.height // 32 + 1, config.width // 32 + 1, 3))
    image = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)[:, :config.height, :config.width].astype(np.uint8)
    return Preprocess(tuple(model_config.mean), tuple(model_config.std), config.input_layout).to_input(image)


def _metadata(model, config, source_sha256):
    cfg = model.config
    return {
        "sanet.variant": cfg.variant,
        "sanet.classes": str(cfg.num_classes),
        "sanet.class_names": ",".join(cfg.class_names),
        "sanet.mean": ",".join(str(v) for v in cfg.mean),
        "sanet.std": ",".join(str(v) for v in cfg.std),
        "sanet.input_layout": config.input_layout,
        "sanet.output": config.output,
        "sanet.precision": "fp32",
        "sanet.resolution": "dynamic" if config.dynamic else "{}x{}".format(config.height, config.width),
        "sanet.batch": "dynamic" if config.dynamic_batch else str(config.batch),
        "sanet.opset": str(config.opset),
        "sanet.source_sha256": source_sha256 or "random-init",
        "sanet.version": __version__,
        **({"sanet.dla_friendly": "1"} if config.dla_friendly else {}),
    }


def read_metadata(path, required=False):
    """metadata_props of an exported ONNX file as a dict (empty for foreign files, an error if ``required``)."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:
        raise SanetError("cannot read ONNX file {}: {}".format(path, exc)) from exc
    meta = {prop.key: prop.value for prop in model.metadata_props}
    if required and "sanet.classes" not in meta:
        raise SanetError("{} has no sanet metadata: export it with sanet-export".format(path))
    return meta


def set_metadata(proto, meta):
    """Replace the metadata_props of an ONNX ModelProto with ``meta`` (sorted, so files are reproducible)."""
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_nodes(path):
    """Node names of an ONNX graph, in order."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    return [node.name for node in onnx.load(os.fspath(path), load_external_data=False).graph.node]


def export_onnx(model, path, config: ExportConfig, source_sha256=None, verify=True, verify_sizes=()):
    """Export ``model`` to ``path`` atomically; return the max |diff| vs PyTorch (None if not verified).

    BatchNorm is folded first. With ``verify``, ONNX Runtime runs the file on a test input; above
    tolerance the export fails and no file is kept.
    """
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    folded = fold_batchnorm(model)
    if config.dla_friendly:
        enable_dla_friendly(folded)
    graph = DeployGraph(enable_dynamic_shapes(folded) if config.dynamic else folded, config).eval()
    dummy = torch.from_numpy(example_input(model.config, config))
    # torch >= 2.9 defaults to the dynamo exporter (opset 18+); torch 2.0/2.1 on Jetson lack the keyword.
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the classic exporter's deprecation notice is expected
            if config.dynamic_axes():
                kwargs["dynamic_axes"] = config.dynamic_axes()
            torch.onnx.export(graph, (dummy,), tmp, opset_version=config.opset, input_names=[INPUT_NAME],
                              output_names=[config.output_name], do_constant_folding=True, **kwargs)
        proto = onnx.load(tmp)
        if config.simplify:
            proto = _simplify(proto)
        set_metadata(proto, _metadata(model, config, source_sha256))
        # The oldest IR version that carries this opset (8 for opset 17): onnx >= 1.16 writes IR 10, which
        # ONNX Runtime 1.16 (JetPack 5) refuses ("max supported IR version: 9") and TensorRT 8.5 predates.
        proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        max_diff = verify_onnx(tmp, graph, dummy, config) if verify else None
        for height, width in verify_sizes if verify else ():  # dynamic H x W: check other sizes too
            other = dataclasses.replace(config, height=height, width=width)  # validates the size
            max_diff = max(max_diff, verify_onnx(tmp, graph, torch.from_numpy(example_input(model.config, other)), other))
    return max_diff


def trt_check(path, releases=("8.5", "10", "11")):
    """Parser-rule lint of an ONNX file per TensorRT release: {release: [one line per violation]} (empty: parses)."""
    from .trtlint import lint

    return {release: [str(violation) for violation in lint(path, release)] for release in releases}


def _simplify(proto):
    try:
        import onnxslim
    except ImportError:
        return proto
    return onnxslim.slim(proto)


def verify_onnx(path, graph, dummy, config):
    """Run ``path`` in ONNX Runtime CPU and compare with the PyTorch graph; raise above tolerance."""
    ort = require("onnxruntime", "pip install 'sanet[onnx]'")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: dummy.numpy()})[0]
    with torch.no_grad():
        want = graph(dummy).numpy()
    if config.output == "argmax":
        disagreement = float(np.mean(got != want))
        if disagreement > 1e-3:
            raise SanetError("ONNX argmax disagrees with PyTorch on {:.3%} of pixels: export discarded".format(disagreement))
        return disagreement
    max_diff = float(np.abs(got - want).max())
    if max_diff > config.tolerance * max(1.0, float(np.abs(want).max())):
        raise SanetError("ONNX output differs from PyTorch by {:.2e} (> tolerance): export discarded".format(max_diff))
    return max_diff


# Triton Inference Server model repository

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


def io_signature(path):
    """[(name, numpy dtype name, dims with str for symbolic axes)] for the inputs and outputs of an ONNX file."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    graph = onnx.load(os.fspath(path), load_external_data=False).graph

    def describe(values):
        result = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
            result.append((value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, dims))
        return result

    return describe(graph.input), describe(graph.output)


def triton_config(name, platform, inputs, outputs, max_batch_size):
    """config.pbtxt text. With max_batch_size > 0 dims exclude the batch axis and requests are batched."""
    def tensors(kind, values):
        entries = []
        for tensor_name, dtype, dims in values:
            if dtype not in TRITON_TYPES:
                raise SanetError("tensor {} has dtype {}, which this Triton config writer does not map".format(tensor_name, dtype))
            shown = dims[1:] if max_batch_size > 0 else dims
            entries.append('  {{\n    name: "{}"\n    data_type: {}\n    dims: [ {} ]\n  }}'.format(
                tensor_name, TRITON_TYPES[dtype], ", ".join(str(d) for d in shown)))
        return "{} [\n{}\n]".format(kind, ",\n".join(entries))

    lines = ['name: "{}"'.format(name), 'platform: "{}"'.format(platform), "max_batch_size: {}".format(max_batch_size),
             tensors("input", inputs), tensors("output", outputs)]
    if max_batch_size > 0:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}")
    lines.append("instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]")
    return "\n".join(lines) + "\n"


def write_triton_model(repo, name, model_file, platform, inputs, outputs, max_batch_size):
    """REPO/NAME/config.pbtxt and REPO/NAME/1/model.{onnx,plan}, each written atomically; returns the model dir."""
    import shutil

    from .fileio import write_text_atomic

    folder = os.path.join(repo, name)
    target = os.path.join(folder, "1", "model.plan" if platform == "tensorrt_plan" else "model.onnx")
    with atomic_path(target) as tmp:
        shutil.copyfile(model_file, tmp)
    write_text_atomic(os.path.join(folder, "config.pbtxt"), triton_config(name, platform, inputs, outputs, max_batch_size))
    return folder
