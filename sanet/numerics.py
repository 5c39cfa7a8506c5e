"""Engine numerics on CPU: what FP16 and INT8 engines will compute, checked before there is a device.

- :func:`fp16_model`: the exported graph with every weight and tensor rounded to half precision (and inf above
  65504) and float32 inputs/outputs, as a TensorRT FP16 engine stores them; ONNX Runtime CPU runs it.
- :class:`EmulatedRunner`: a runner over that FP16 graph, or over a Q/DQ INT8 file as is, reporting the
  emulated precision so parity applies that precision's budget.
- :func:`fp16_range_audit`: every intermediate tensor's max |x| over a set of images, flagged against FP16's
  largest finite value, so an overflow is found on the host instead of as inf/NaN on the device.
"""
import hashlib
import math
import os

import numpy as np

from .constants import PRECISIONS
from .errors import SanetError, require
from .runners import OrtRunner

FP16_MAX = 65504.0  # largest finite IEEE half
FP16_TINY = 2.0 ** -14  # smallest normal IEEE half (6.1e-5): below it FP16 keeps fewer significant bits
QDQ_FP16_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19 on
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
    """An FP32 SANet ONNX (path or ModelProto) -> the emulation (:func:`emulate_fp16`) of its all-FP16 twin
    (:func:`to_fp16` with no float32 island): what a weakly typed TensorRT build with the FP16 flag computes when
    it picks FP16 for every layer."""
    source = _load(model_or_path)
    precision = _precision(source)
    if precision != "fp32":
        raise SanetError("FP16 emulation needs the FP32 export, this model is {}: pass the file sanet-export wrote "
                         "without --qdq".format(precision))
    return emulate_fp16(to_fp16(source))


def _half_slots(onnx, node, opset):
    """(input indices, output indices) of ``node`` whose formal type is a type variable that admits float16: the
    slots that follow the node's precision. Fixed float32 slots (Resize's scales) and integer ones stay as they are."""
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    follows = {c.type_param_str for c in schema.type_constraints if "tensor(float16)" in c.allowed_type_strs}

    def formal(params, index):
        if index < len(params):
            return params[index].type_str
        variadic = params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
        return params[-1].type_str if variadic else None

    return ([i for i in range(len(node.input)) if formal(schema.inputs, i) in follows],
            [i for i in range(len(node.output)) if formal(schema.outputs, i) in follows])


def to_fp16(model_or_path, fp32_nodes=()):
    """A SANet ONNX (FP32 export or its Q/DQ INT8 file) -> a new ModelProto typed for a strongly typed TensorRT
    build: float16 weights and activations, float32 network input and output (the runner contract and the Triton
    config do not change with the precision: one Cast after the input, one before the output). Nodes named in
    ``fp32_nodes`` (see :func:`fp32_islands`) compute in float32, with Casts at the borders of each island.

    Which inputs and outputs of a node follow its precision comes from the ONNX operator schema (type variables
    admitting float16), so fixed float32 inputs such as Resize's scales keep their type. A Q/DQ file is first
    converted to opset 19, where QuantizeLinear/DequantizeLinear take float16 scales.
    """
    onnx = require("onnx", _ORT_HINT)
    from onnx import helper, numpy_helper, version_converter

    from .export import set_metadata
    from .trtlint import default_opset

    source = _load(model_or_path)
    meta = {prop.key: prop.value for prop in source.metadata_props}
    if meta.get("sanet.float_precision", "fp32") != "fp32" or _precision(source) == "fp16":
        raise SanetError("to_fp16 converts the FP32 export or its Q/DQ file; this model is already FP16")
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    if is_qdq(proto) and default_opset(proto) < QDQ_FP16_OPSET:
        proto = version_converter.convert_version(proto, QDQ_FP16_OPSET)
    opset = default_opset(proto)
    graph = proto.graph
    _constants_to_initializers(graph)  # constants then take whichever type each consumer needs
    names = {node.name for node in graph.node}
    unknown = sorted(set(fp32_nodes) - names)
    if unknown:
        raise SanetError("no node named {} in the model: the FP32 islands belong to another export".format(unknown[0]))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = _elem_types(proto)
    initializers = {init.name: init for init in graph.initializer}
    fp32_nodes = _with_qdq_neighbours(graph, set(fp32_nodes), initializers)
    halves = {}  # float32 initializer -> its float16 copy
    supplied = {value.name: types.get(value.name) for value in graph.input if value.name not in initializers}
    casts, nodes = {}, []
    outputs = {value.name for value in graph.output}
    renamed = {}  # graph output computed in float16 -> the tensor holding it before the final Cast to float32

    def provide(name, want):
        """``name`` as element type ``want`` for a consumer: an initializer copy, the tensor itself or a Cast."""
        name = renamed.get(name, name)
        if name in initializers and initializers[name].data_type == float32:
            if want != float16:
                return name
            if name not in halves:
                halves[name] = name + "_fp16"
                array = numpy_helper.to_array(initializers[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(array, halves[name]))
            return halves[name]
        if supplied.get(name) not in (float32, float16) or supplied[name] == want:
            return name
        key = (name, want)
        if key not in casts:
            casts[key] = "{}_{}".format(name, "fp16" if want == float16 else "fp32")
            nodes.append(helper.make_node("Cast", [name], [casts[key]], name=casts[key], to=want))
        return casts[key]

    for node in graph.node:
        precision = float32 if node.name in fp32_nodes else float16
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if node.op_type == "Cast":  # its input is taken as it comes; a cast to float casts to the node's precision
            to = next(attribute for attribute in copy.attribute if attribute.name == "to")
            if to.i in (float32, float16):
                to.i = precision
            supplied[node.output[0]] = to.i
        else:
            slots_in, slots_out = _half_slots(onnx, node, opset)
            for index in slots_in:
                name = node.input[index]
                if name and types.get(name) in (float32, float16):
                    copy.input[index] = provide(name, precision)
            for index, name in enumerate(node.output):
                floating = index in slots_out and types.get(name) in (float32, float16)
                supplied[name] = precision if floating else types.get(name)
        for index, name in enumerate(node.output):
            if name in outputs and supplied[name] == float16:  # the network output stays float32
                renamed[name] = copy.output[index] = name + "_fp16"
                supplied[renamed[name]] = float16
        nodes.append(copy)
        for name in node.output:
            if name in renamed:
                nodes.append(helper.make_node("Cast", [renamed[name]], [name], name=name + "_fp32", to=float32))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale: the types changed; shape inference below fills them in again
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    quantized = _precision(source) == "int8"
    meta.update({"sanet.float_precision": "fp16", "sanet.fp32_nodes": ",".join(sorted(fp32_nodes)),
                 "sanet.precision": "int8" if quantized else "fp16", "sanet.opset": str(opset)})
    set_metadata(proto, meta)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        onnx.checker.check_model(proto)
    except Exception as exc:  # a converter bug, not a user error: name the node ONNX complains about
        raise SanetError("the FP16 conversion produced an invalid graph: {}".format(str(exc).splitlines()[0][:200])) from exc
    return proto


def _with_qdq_neighbours(graph, fp32_nodes, initializers):
    """Extend the float32 nodes of a Q/DQ graph so TensorRT can still fuse each Q/DQ pair with its layer (a Cast
    between a DequantizeLinear and its convolution would leave that convolution unquantized): a DequantizeLinear
    feeding a float32 node and a QuantizeLinear fed by one join it. A Q/DQ node whose constant scale would fall
    below FP16's smallest normal keeps a float32 scale (onnx-tensorrt refuses a scale that rounds to 0: "Scale
    coefficients must all be positive", QuantDequantLinearHelper), and with it the node its output feeds."""
    from onnx import numpy_helper

    producer, consumers = _links(graph)
    by_name = {}
    for node in graph.node:
        by_name.setdefault(node.name, node)
    grown = set(fp32_nodes)
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in initializers:
            scale = numpy_helper.to_array(initializers[node.input[1]])
            if float(np.abs(scale).min()) < FP16_TINY:
                grown.add(node.name)
                grown.update(c.name for c in consumers.get(node.output[0], []))
    for name in list(grown):
        node = by_name.get(name)
        for tensor in node.input if node is not None else ():
            source = producer.get(tensor)
            if source is not None and source.op_type == "DequantizeLinear":
                grown.add(source.name)
        for tensor in node.output if node is not None else ():
            grown.update(c.name for c in consumers.get(tensor, []) if c.op_type == "QuantizeLinear")
    return grown


def _links(graph):
    """({tensor: the node writing it}, {tensor: [nodes reading it]}) of an ONNX graph."""
    producer = {name: node for node in graph.node for name in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def emulate_fp16(model_or_path):
    """An FP16-typed ONNX (from :func:`to_fp16`) -> a float32 graph that rounds every float16 tensor it computes
    through FP16 (Cast(FLOAT16) -> Cast(FLOAT), so values above 65504 become inf), as a TensorRT engine stores
    them; arithmetic between those points is float32, as TensorRT's FP16 kernels accumulate. Float32 islands stay
    unrounded. Not run as float16 in ONNX Runtime: its CPU provider computes most half ops in float32 and drops the
    casts between consecutive ones, so x^3 = 1e6 stayed finite there (measured)."""
    onnx = require("onnx", _ORT_HINT)
    from onnx import helper, numpy_helper

    source = _load(model_or_path)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = _elem_types(source)
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    graph = proto.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == float16:  # float16 values are exact in float32
            graph.initializer[index].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for node in source.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        tail = []
        for index, name in enumerate(node.output):
            if types.get(name) != float16:
                continue
            raw = copy.output[index] = name + "_raw"
            if node.op_type == "Cast":  # the cast itself rounds; only the way back to float32 is added
                tail.append(helper.make_node("Cast", [raw], [name], name=name + "_back", to=float32))
            else:
                tail.extend([helper.make_node("Cast", [raw], [name + "_half"], name=name + "_half", to=float16),
                             helper.make_node("Cast", [name + "_half"], [name], name=name + "_back", to=float32)])
        nodes.append(copy)
        nodes.extend(tail)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale after renaming; ONNX Runtime infers shapes itself
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == float16:
            value.type.tensor_type.elem_type = float32
    return proto


def _constants_to_initializers(graph):
    """Move Constant nodes holding a tensor into the initializers (same names), in place."""
    nodes = []
    for node in graph.node:
        values = [attribute.t for attribute in node.attribute if attribute.name == "value"]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and values:
            tensor = graph.initializer.add()
            tensor.CopyFrom(values[0])
            tensor.name = node.output[0]
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _elem_types(proto):
    """{tensor name: ONNX element type} after shape inference (initializers included)."""
    onnx = require("onnx", _ORT_HINT)
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {value.name: value.type.tensor_type.elem_type
             for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update((init.name, init.data_type) for init in proto.graph.initializer)
    return types


def is_qdq(proto):
    """True when the graph holds QuantizeLinear/DequantizeLinear pairs (an explicit-quantization INT8 model)."""
    ops = {node.op_type for node in proto.graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


class EmulatedRunner(OrtRunner):
    """ONNX Runtime CPU emulating an engine's precision. ``fp16``: an FP32 export as an all-FP16 engine
    (:func:`fp16_model`), or an FP16 ONNX (:func:`to_fp16`) as typed, float32 islands included; ``int8``: a Q/DQ file,
    its FP16 float parts rounded (:func:`emulate_fp16`) when it has them. ``info.precision`` is the emulated precision
    (parity budgets follow it)."""

    def __init__(self, onnx_path, mode="fp16", threads=None):
        if mode not in EMULATED_MODES:
            raise SanetError("unknown emulation {!r}: use {}".format(mode, " or ".join(EMULATED_MODES)))
        super().__init__(onnx_path, precision=mode, threads=threads)
        meta = self.info.extra["metadata"]
        file_precision = meta.get("sanet.precision", "fp32")
        if mode == "fp16" and file_precision not in ("fp32", "fp16"):
            raise SanetError("--emulate fp16 needs the FP32 export or the FP16 ONNX, {} is {}: pass the ONNX written "
                             "without --qdq".format(self.path, file_precision))
        if mode == "int8" and file_precision != "int8":
            raise SanetError("--emulate int8 needs a Q/DQ INT8 ONNX, {} is {}: write one with sanet-export --qdq".format(
                self.path, file_precision))
        self.mode, self.typed = mode, meta.get("sanet.float_precision") == "fp16" or file_precision == "fp16"
        self.info.backend, self.info.device = "emulated", "cpu"
        graph = "Q/DQ graph" if mode == "int8" else "float16 graph"
        self.info.extra["emulation"] = "onnxruntime-cpu {}{}, float32 I/O".format(
            graph, ", float parts rounded to FP16" if mode == "int8" and self.typed else "")

    def open_session(self, ort, options):
        proto = _load(self.path)
        if self.mode == "int8" and not is_qdq(proto):
            raise SanetError("{} has no QuantizeLinear/DequantizeLinear nodes: --emulate int8 needs the Q/DQ file "
                             "from sanet-export --qdq".format(self.path))
        if self.typed:
            model = emulate_fp16(proto)
        else:
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
    lows = np.full(len(tensors), np.inf)
    count, digest = 0, hashlib.sha256()
    cv2 = import_cv2()
    for image in _audit_images(images, limit):
        digest.update(np.ascontiguousarray(image).tobytes())
        if size and image.shape[:2] != size:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        outputs = session.run(None, {INPUT_NAME: info.preprocess.to_input(image[None])})  # 2 scalars per tensor
        pairs = np.asarray(outputs, np.float64).reshape(len(tensors), 2)  # (min, max) of each tensor
        extremes = np.abs(pairs).max(axis=1)
        peaks = np.fmax(peaks, np.where(np.isfinite(extremes), extremes, np.inf))
        lows = np.fmin(lows, pairs[:, 0])
        count += 1
        if report:
            report("fp16 audit: image {} max |x| {:.4g}".format(count, float(extremes.max())))
    if not count:
        raise SanetError("the FP16 range audit got no images: give a folder with images")
    return dict(audit_summary(tensors, peaks, count, warn_fraction, lows), digest=digest.hexdigest())


class _ImageFiles:
    """Re-iterable uint8 RGB images read one at a time (each resolution's audit walks them again)."""

    def __init__(self, root, names):
        self.root, self.names = root, names
        self.description = "calibration image(s) of {}".format(root)

    def __iter__(self):
        from .data import read_image

        return (read_image(os.path.join(self.root, name)) for name in self.names)


class _GeneratedFrames:
    """Street scenes drawn by sanet.synth, for an FP16 range audit when no image was given: street-like statistics,
    not real ones (give --calib or --parity-data for those)."""

    description = "generated street scene(s) (sanet.synth; give --calib for real images)"

    def __init__(self, count=4, size=(256, 512)):
        self.count, self.size = count, size

    def __iter__(self):
        from .synth import draw_scene, frame_rng

        return (draw_scene(self.size[0], self.size[1], frame_rng(0, "val", index))[0] for index in range(self.count))


class _Dataset:
    """A labelled dataset as audit images (its load(i) gives the image first)."""

    def __init__(self, dataset):
        self.dataset, self.description = dataset, "parity image(s)"

    def __len__(self):
        return len(self.dataset)

    def load(self, index):
        return self.dataset.load(index)


def audit_images(calib, limit=16):
    """Images for the FP16 range audit from a pipeline.CalibSettings (or None): its parity dataset, else its
    calibration images, else generated street scenes (the FP16 ONNX needs an audit even when no image was given).
    Each source has a ``description`` for the export table."""
    if calib is not None and calib.parity_dataset is not None:
        return _Dataset(calib.parity_dataset)
    if calib is not None:
        from .calibration import find_calibration_images

        return _ImageFiles(calib.root, find_calibration_images(calib.root)[:limit])
    return _GeneratedFrames()


def images_digest(images, limit=None):
    """sha256 of the images an audit of ``images`` (same ``limit``) would read: what its verdict depends on."""
    digest = hashlib.sha256()
    for image in _audit_images(images, limit):
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def audit_summary(tensors, peaks, images, warn_fraction=WARN_FRACTION, lows=None):
    """The audit's dict from [(name, op)], their max |x| (inf for a non-finite tensor) and smallest value."""
    def number(value):
        return float(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")

    lows = np.zeros(len(tensors)) if lows is None else lows

    order = np.argsort(-peaks, kind="stable")
    warn = warn_fraction * FP16_MAX
    return {
        "images": images,
        "fp16_max": FP16_MAX,
        "warn_above": warn,
        "max_abs": number(float(peaks.max())) if len(peaks) else 0.0,
        "tensors": {name: {"op": op, "max_abs": number(float(peak)), "min": number(float(low))}
                    for (name, op), peak, low in zip(tensors, peaks, lows)},
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


# Reductions that sum or average: their output is a new value FP16 may not hold (a selection such as ReduceMax
# returns one of its inputs, already representable).
AVERAGING = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
                       "GlobalAveragePool", "ReduceProd"})


def fp32_islands(audit, model_or_path):
    """{node name: reason} of the FP32 export's nodes that must compute in float32 in the FP16 ONNX, read from a
    :func:`fp16_range_audit` of it (not guessed per op):

    - range: a tensor above the audit's warn level (half of 65504) or non-finite: its producer computes it in
      float32 and its consumers read it in float32;
    - underflow: an averaging reduction (GeM's mean of (x / max)^3) whose result stayed positive but below
      FP16's smallest normal 6.1e-5 on some image: the reduction, the node feeding it (whose values are smaller
      still) and its consumers compute in float32.

    Empty when FP16 holds every tensor, which is the verdict for SANet's GeM written as max * mean((x / max)^3)^(1/3).
    """
    proto = _load(model_or_path)
    producer, consumers = _links(proto.graph)
    islands = {}

    def add(node, reason):
        if node is not None:
            islands.setdefault(node.name, reason)

    for name, entry in audit["tensors"].items():
        peak, low = entry["max_abs"], entry.get("min", 0.0)
        peak = float("inf") if isinstance(peak, str) else peak
        if peak > audit["warn_above"]:
            reason = "max |x| {:.4g} of {} is above {:g} (FP16 holds 65504)".format(peak, name, audit["warn_above"])
            add(producer.get(name), reason)
            for node in consumers.get(name, []):
                add(node, reason)
            continue
        node = producer.get(name)
        if node is not None and node.op_type in AVERAGING and not isinstance(low, str) and 0 < low < FP16_TINY:
            reason = "{} of {} fell to {:.3g}, below FP16's smallest normal {:.3g}".format(node.op_type, name, low, FP16_TINY)
            add(node, reason)
            add(producer.get(node.input[0]), reason)
            for consumer in consumers.get(name, []):
                add(consumer, reason)
    return islands
