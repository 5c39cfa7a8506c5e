"""Engine numerics on CPU: what FP16 and INT8 engines will compute, checked before there is a device.

- :func:`fp16_model`: the exported graph with every weight and tensor rounded to half precision (and inf above
  65504) and float32 inputs/outputs, as a TensorRT FP16 engine stores them; ONNX Runtime CPU runs it.
- :class:`EmulatedRunner`: a runner over that FP16 graph, or over a Q/DQ INT8 file as is, reporting the
  emulated precision so parity applies that precision's budget.
- :func:`fp16_range_audit`: every intermediate tensor's max |x| over a set of images, flagged against FP16's
  largest finite value, so an overflow is found on the host instead of as inf/NaN on the device.
"""
import math
import os

import numpy as np

from .constants import PRECISIONS
from .errors import SanetError, require
from .runners import OrtRunner

FP16_MAX = 65504.0  # largest finite IEEE half
WARN_FRACTION = 0.5  # a tensor above half of FP16_MAX is one bad frame away from overflowing
EMULATED_MODES = ("fp16", "int8")
_ORT_HINT = "pip install 'sanet[onnx]'"


def _load(model_or_path):
    onnx = require("onnx", _ORT_HINT)
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise SanetError("ONNX file not found: {}".format(path))
    return onnx.load(path)


def _precision(proto):
    return {prop.key: prop.value for prop in proto.metadata_props}.get("sanet.precision", PRECISIONS[0])


def fp16_model(model_or_path):
    """An FP32 SANet ONNX (path or ModelProto) -> a new ModelProto that stores every tensor in half precision,
    with float32 inputs/outputs: float weights are rounded to FP16 values, and each float tensor a node
    produces (the input too) goes through Cast(FLOAT16) -> Cast(FLOAT), so it is rounded to FP16 and turns
    into inf above 65504, as in a TensorRT FP16 engine; arithmetic between those points is float32, as
    TensorRT's FP16 kernels accumulate. Not a float16-typed graph: ONNX Runtime CPU runs most half ops as
    float32 and drops the casts between consecutive ones, so x^3 = 1e6 stayed finite there (measured).
    """
    onnx = require("onnx", _ORT_HINT)
    from onnx import helper, numpy_helper

    from .export import set_metadata

    source = _load(model_or_path)
    precision = _precision(source)
    if precision != "fp32":
        raise SanetError("FP16 emulation needs the FP32 export, this model is {}: pass the file sanet-export wrote "
                         "without --qdq".format(precision))
    proto = onnx.ModelProto()
    proto.CopyFrom(source)  # the caller's model stays FP32
    graph = proto.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == onnx.TensorProto.FLOAT:
            rounded = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(rounded, init.name))
    floats = {name for name, _ in _float_tensors(source)}

    def rounding(name, raw):
        """raw (float32) -> name, rounded through FP16."""
        half = name + "_fp16"
        return [helper.make_node("Cast", [raw], [half], name=half, to=onnx.TensorProto.FLOAT16),
                helper.make_node("Cast", [half], [name], name=name + "_fp16_back", to=onnx.TensorProto.FLOAT)]

    renamed_inputs = {value.name: value.name + "_rounded" for value in graph.input if value.name in floats}
    nodes = [node for raw in renamed_inputs for node in rounding(renamed_inputs[raw], raw)]
    for node in source.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for position, name in enumerate(copy.input):
            copy.input[position] = renamed_inputs.get(name, name)
        tail = []
        for position, name in enumerate(copy.output):
            if name in floats:
                copy.output[position] = name + "_fp32"
                tail.extend(rounding(name, name + "_fp32"))
        nodes.append(copy)
        nodes.extend(tail)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale after renaming; ONNX Runtime infers shapes itself
    meta = {prop.key: prop.value for prop in source.metadata_props}
    meta["sanet.precision"] = "fp16"
    set_metadata(proto, meta)
    return proto


def is_qdq(proto):
    """True when the graph holds QuantizeLinear/DequantizeLinear pairs (an explicit-quantization INT8 model)."""
    ops = {node.op_type for node in proto.graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


class EmulatedRunner(OrtRunner):
    """ONNX Runtime CPU emulating an engine's precision: ``fp16`` runs :func:`fp16_model` of an FP32 export,
    ``int8`` runs a Q/DQ file as is. ``info.precision`` is the emulated precision (parity budgets follow it)."""

    def __init__(self, onnx_path, mode="fp16", threads=None):
        if mode not in EMULATED_MODES:
            raise SanetError("unknown emulation {!r}: use {}".format(mode, " or ".join(EMULATED_MODES)))
        super().__init__(onnx_path, precision=mode, threads=threads)
        file_precision = self.info.extra["metadata"].get("sanet.precision", "fp32")
        if mode == "fp16" and file_precision != "fp32":
            raise SanetError("--emulate fp16 needs the FP32 export, {} is {}: pass the ONNX written without --qdq".format(
                self.path, file_precision))
        if mode == "int8" and file_precision != "int8":
            raise SanetError("--emulate int8 needs a Q/DQ INT8 ONNX, {} is {}: write one with sanet-export --qdq".format(
                self.path, file_precision))
        self.mode = mode
        self.info.backend, self.info.device = "emulated", "cpu"
        self.info.extra["emulation"] = "onnxruntime-cpu " + ("float16 graph, float32 I/O" if mode == "fp16" else "Q/DQ graph")

    def open_session(self, ort, options):
        proto = _load(self.path)
        if self.mode == "int8" and not is_qdq(proto):
            raise SanetError("{} has no QuantizeLinear/DequantizeLinear nodes: --emulate int8 needs the Q/DQ file "
                             "from sanet-export --qdq".format(self.path))
        model = fp16_model(proto) if self.mode == "fp16" else proto
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=self.providers)
        except Exception as exc:
            raise SanetError("ONNX Runtime cannot run the {} emulation of {}: {}".format(
                self.mode, self.path, str(exc).splitlines()[0][:160])) from exc


# ----------------------------------------------------------------------------------------------
# FP16 range audit


def _float_tensors(proto):
    """[(tensor name, producing op type)] for every float32 tensor the graph computes (input included), in order."""
    onnx = require("onnx", _ORT_HINT)
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {value.name: value.type.tensor_type.elem_type
             for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    initializers = {init.name for init in proto.graph.initializer}
    found = [(value.name, "input") for value in proto.graph.input
             if value.name not in initializers and types.get(value.name) == onnx.TensorProto.FLOAT]
    for node in proto.graph.node:
        found.extend((name, node.op_type) for name in node.output if name and types.get(name) == onnx.TensorProto.FLOAT)
    return found


def _augmented(proto, tensors):
    """A copy of ``proto`` whose only outputs are ReduceMin and ReduceMax (all axes, scalar) of each tensor:
    one run yields every range while ONNX Runtime still frees each full-size tensor after its last use."""
    onnx = require("onnx", _ORT_HINT)
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    del model.graph.output[:]
    for index, (name, _) in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            out = "sanet_audit_{}_{}".format(index, op)
            model.graph.node.append(helper.make_node(op, [name], [out], name=out, keepdims=0))
            model.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, []))
    return model


def _audit_images(images, limit):
    """uint8 RGB images (H, W, 3) from a sanet dataset (``load(i)``) or an iterable of images / batches."""
    if hasattr(images, "load") and hasattr(images, "__len__"):
        count = len(images) if limit is None else min(limit, len(images))
        for index in range(count):
            yield images.load(index)[0]
        return
    seen = 0
    for item in images:
        batch = np.asarray(item)
        for image in (batch if batch.ndim == 4 else batch[None]):
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield image


def fp16_range_audit(onnx_path, images, limit=None, warn_fraction=WARN_FRACTION, report=None):
    """Max |x| of every float tensor of an FP32 export over ``images`` (a sanet dataset or an iterable of
    uint8 RGB (H, W, 3) images or (B, H, W, 3) batches), streamed one image at a time.

    Returns a JSON-serialisable dict: ``tensors`` {name: {"op", "max_abs"}}, ``warnings`` and ``overflows``
    (names above ``warn_fraction * 65504`` and above 65504, largest first), ``max_abs``, ``images``,
    ``passed`` (no overflow). Images are resized to a fixed-size model's input.
    """
    ort = require("onnxruntime", _ORT_HINT)
    from .data import import_cv2
    from .export import INPUT_NAME
    from .runners import RunnerInfo

    proto = _load(onnx_path)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    if "sanet.classes" not in meta:
        raise SanetError("{} has no sanet metadata: export it with sanet-export".format(onnx_path))
    if _precision(proto) != "fp32":
        raise SanetError("the FP16 range audit reads the FP32 export, {} is {}".format(onnx_path, _precision(proto)))
    info = RunnerInfo.from_metadata(meta, "onnxruntime", "cpu")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    spatial = dims[1:3] if info.layout == "uint8-nhwc" else dims[2:4]
    size = tuple(d.dim_value for d in spatial) if all(d.HasField("dim_value") for d in spatial) else None
    tensors = _float_tensors(proto)
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # give each image's buffers back: the audit may run at 1024x2048
    session = ort.InferenceSession(_augmented(proto, tensors).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    peaks = np.zeros(len(tensors), np.float64)
    count = 0
    cv2 = import_cv2()
    for image in _audit_images(images, limit):
        if size and image.shape[:2] != size:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        outputs = session.run(None, {INPUT_NAME: info.preprocess.to_input(image[None])})  # 2 scalars per tensor
        extremes = np.abs(np.asarray(outputs, np.float64)).reshape(len(tensors), 2).max(axis=1)
        peaks = np.fmax(peaks, np.where(np.isfinite(extremes), extremes, np.inf))
        count += 1
        if report:
            report("fp16 audit: image {} max |x| {:.4g}".format(count, float(extremes.max())))
    if not count:
        raise SanetError("the FP16 range audit got no images: give a folder with images")
    return audit_summary(tensors, peaks, count, warn_fraction)


def audit_summary(tensors, peaks, images, warn_fraction=WARN_FRACTION):
    """The audit's dict from [(name, op)] and their max |x| (inf for a non-finite tensor)."""
    def number(value):
        return float(value) if math.isfinite(value) else "inf"

    order = np.argsort(-peaks, kind="stable")
    warn = warn_fraction * FP16_MAX
    return {
        "images": images,
        "fp16_max": FP16_MAX,
        "warn_above": warn,
        "max_abs": number(float(peaks.max())) if len(peaks) else 0.0,
        "tensors": {name: {"op": op, "max_abs": number(float(peak))} for (name, op), peak in zip(tensors, peaks)},
        "overflows": [tensors[i][0] for i in order if peaks[i] > FP16_MAX],
        "warnings": [tensors[i][0] for i in order if warn < peaks[i] <= FP16_MAX],
        "passed": not bool((peaks > FP16_MAX).any()),
    }


def audit_lines(audit, top=5):
    """Console lines for export's summary: verdict, then the largest tensors with their op."""
    verdict = "OK" if audit["passed"] and not audit["warnings"] else ("WARN" if audit["passed"] else "OVERFLOW")
    lines = ["fp16 range audit over {} image(s): max |x| {} (FP16 max {:g}) -> {}: {} overflow(s), {} above {:g}".format(
        audit["images"], audit["max_abs"], audit["fp16_max"], verdict, len(audit["overflows"]), len(audit["warnings"]),
        audit["warn_above"])]
    ranked = sorted(audit["tensors"].items(), key=lambda item: -float(item[1]["max_abs"]))
    for name, entry in ranked[:top]:
        lines.append("  {:>10} {} ({})".format(entry["max_abs"] if isinstance(entry["max_abs"], str)
                                                else "{:.4g}".format(entry["max_abs"]), name, entry["op"]))
    return lines
