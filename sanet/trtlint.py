"""Parser-rule lint: will this ONNX graph parse on a given TensorRT release?

Each node is checked against what the onnx-tensorrt importer of that release documents: the operator
table (supported ops and the data types of their main input), attribute restrictions (Resize modes,
pooling dilations, ...), inputs that must be build-time constants, the Q/DQ and UINT8 type rules and the
opset range. The rules are data: one ``Rules`` table per release below, every entry citing where it
comes from, so a failure on the device can be predicted (and tested) on a CPU without TensorRT.

Releases: "8.5" (TensorRT 8.5/8.6, JetPack 5 on Xavier), "10" (10.x), "11" (11.x). For "10" the 10.0/10.1
table is used: it is the subset every 10.x parser accepts. Only the main graph is checked, not the
bodies of If/Loop/Scan.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Tuple

from .errors import SanetError, require
from .routes import tensorrt_version

RELEASES = ("8.5", "10", "11")

# Where each rule comes from (onnx-tensorrt is github.com/onnx/onnx-tensorrt; NVIDIA release notes at
# docs.nvidia.com/deeplearning/tensorrt and github.com/NVIDIA/TensorRT/releases).
OPS_85 = "onnx-tensorrt 8.5-GA docs/operators.md"
CAST_85 = "onnx-tensorrt 8.5-GA builtin_op_importers.cpp Cast importer"
TYPES_85 = "onnx-tensorrt 8.5-GA onnx2trt_utils.cpp convertDtype"
QUINT8_85 = "onnx-tensorrt 8.5-GA commit 'Check that QuantizeLinear is not UINT8 type'"
SCALE_85 = "onnx-tensorrt 8.5-GA builtin_op_importers.cpp QuantDequantLinearHelper (reads scales as float)"
AUTOPAD_85 = "onnx-tensorrt 8.5-GA onnx2trt_utils.cpp getKernelParams auto_pad"
OPS_10 = "onnx-tensorrt release/10.x (10.0-GA, 10.1-GA) docs/operators.md"
UINT8_10 = "onnx-tensorrt 10.1-GA docs/operators.md note + ModelImporter.cpp UINT8 check"
QDQ_10 = "onnx-tensorrt 10.1-GA onnxOpImporters.cpp QuantizeLinear/DequantizeLinear helper"
SCALE_10 = "onnx-tensorrt 10.1-GA onnxOpImporters.cpp QuantDequantLinearHelper (float, half or bfloat16 scales)"
POSITIVE = "onnx-tensorrt QuantDequantLinearHelper (8.5-GA, 10.1-GA): 'Scale coefficients must all be positive'"
OPS_11 = "onnx-tensorrt release/10.15 docs/operators.md (the table 11.x continues) + TensorRT 11.0/11.2 release notes"
OPSET_11 = "TensorRT 11.5 release notes: opset 25 added in 11.5, so 11.0-11.4 parse up to opset 24"

FLOATS = frozenset({"FLOAT", "FLOAT16"})
FP8 = frozenset({"FLOAT8E4M3FN", "FLOAT8E5M2"})


def _types(*names):
    """'F' = FLOAT and FLOAT16, 'BF' = BFLOAT16, 'I8'/'I32'/'I64'/'U8' = ints, 'B' = BOOL, 'FP8'."""
    short = {"F": FLOATS, "F32": {"FLOAT"}, "BF": {"BFLOAT16"}, "I8": {"INT8"}, "I32": {"INT32"}, "I64": {"INT64"},
             "U8": {"UINT8"}, "B": {"BOOL"}, "FP8": FP8, "I4": {"INT4"}, "FP4": {"FLOAT4E2M1"}}
    result = set()
    for name in names:
        result |= short[name]
    return frozenset(result)


def _table(groups):
    """{('F', 'I32'): 'Abs Add ...'} -> {op: allowed types of its main input}."""
    table = {}
    for type_names, ops in groups.items():
        for op in ops.split():
            table[op] = _types(*type_names)
    return table


REDUCE_OPS = "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare"
SEQUENCE_OPS = "SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap"

# Operator tables, written from the "Supported Types" column (types after TensorRT's own conversions:
# on 8.5 INT64 counts as INT32 and DOUBLE as FLOAT).
TYPES_TABLE_85 = _table({
    ("F",): "Acos Acosh ArgMax ArgMin Asin Asinh Atan Atanh BatchNormalization Ceil Celu Cos Cosh CumSum Dropout "
            "Einsum Erf Exp Floor GridSample GRU ImageScaler InstanceNormalization Log LogSoftmax LRN LSTM "
            "LpNormalization MatMul MeanVarianceNormalization NonMaxSuppression NonZero Pow QuantizeLinear RandomNormal "
            "RandomNormalLike RandomUniform RandomUniformLike Reciprocal Resize ReverseSequence RNN RoiAlign Scan Sin "
            "Sinh Softmax Sqrt Tan TopK Upsample " + REDUCE_OPS,
    ("F32",): "ConstantOfShape",
    ("F", "I8"): "Clip Conv ConvTranspose Elu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool HardSigmoid HardSwish "
                 "LeakyRelu LpPool MaxPool ParametricSoftplus PRelu Relu Round ScaledTanh Selu Sigmoid Softplus "
                 "Softsign Tanh ThresholdedRelu",
    ("F", "I32"): "Abs Add DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Mean Min Mod Mul "
                  "Neg Range Shrink SpaceToDepth Sub Sum",
    ("F", "I8", "I32"): "AveragePool Pad Scatter ScatterElements ScatterND Sign",
    ("F", "I32", "B"): "Expand EyeLike Flatten If Loop OneHot Split Tile Where",
    ("F", "I8", "I32", "B"): "Cast Concat Constant Gather GatherElements GatherND Identity Reshape Shape Size Slice "
                             "Squeeze Transpose Trilu Unsqueeze",
    ("B",): "And Not Or Xor",
    ("I8",): "DequantizeLinear",
})
UNSUPPORTED_85 = frozenset((
    "Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear "
    "HammingWindow HannWindow Hardmax IsInf LayerNormalization MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix "
    "Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul "
    "STFT SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer Unique " + SEQUENCE_OPS).split())

_GROUPS_10 = {
    ("F", "BF"): "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose "
                 "Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
                 "GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf "
                 "LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool "
                 "MeanVarianceNormalization ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike "
                 "RandomUniform RandomUniformLike Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh "
                 "Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample",
    ("F",): "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    ("F", "BF", "I32", "I64"): "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less "
                               "LessOrEqual Max Min Mod Mul Neg Pad Range Relu Scatter ScatterElements ScatterND Shrink "
                               "Sign SpaceToDepth Sub Sum TopK " + REDUCE_OPS,
    ("F", "BF", "FP8", "I32", "I64"): "Mean",
    ("F", "BF", "I8", "I32", "I64"): "Gelu",
    ("F", "BF", "I32", "I64", "B"): "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements "
                                    "GatherND Identity If Loop OneHot Reshape ReverseSequence Shape Size Slice Split "
                                    "Squeeze Tile Transpose Trilu Unsqueeze Where",
    ("F", "BF", "I32", "I64", "U8", "B"): "Cast CastLike",
    ("B",): "And Not Or Xor",
    ("I8", "FP8", "I4"): "DequantizeLinear",
}
TYPES_TABLE_10 = _table(_GROUPS_10)
UNSUPPORTED_10 = frozenset((
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow CenterCropPad Col2Im "
    "Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder "
    "MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional "
    "OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SoftmaxCrossEntropyLoss "
    "SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique " + SEQUENCE_OPS).split())

# 11.x: the 10.x table as it stands in 10.15 plus the parsers' additions in the 11.x release notes.
TYPES_TABLE_11 = dict(TYPES_TABLE_10)
TYPES_TABLE_11.update(_table({
    ("F", "BF", "I32", "I64"): "Pow",
    ("F",): "BlackmanWindow HammingWindow HannWindow DFT",
    ("F32",): "STFT",
    ("F", "BF", "I8", "FP8"): "Attention",
    ("F", "BF"): "RMSNormalization RotaryEmbedding Swish",
    ("F", "BF", "I32"): "TensorScatter",
    ("F", "BF", "FP8", "FP4", "I4", "I32", "I64", "B"): "Constant ConstantOfShape",
    ("I8", "FP8", "FP4", "I4"): "DequantizeLinear",
}))
UNSUPPORTED_11 = UNSUPPORTED_10 - frozenset("BlackmanWindow HammingWindow HannWindow DFT STFT".split())

RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORDINATES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
RESIZE_NEAREST = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
AUTO_PAD = frozenset({"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"})


@dataclass(frozen=True)
class AttributeRule:
    """``op``'s attribute ``name`` (``default`` when absent) must be one of ``allowed``."""

    op: str
    name: str
    default: object
    allowed: FrozenSet
    source: str


@dataclass(frozen=True)
class Rules:
    """Everything one release's ONNX importer documents, as data."""

    release: str
    opset: Tuple[int, int]
    opset_source: str
    types: Dict[str, FrozenSet[str]]  # op -> allowed (converted) type of its main input
    unsupported: FrozenSet[str]  # ops the table marks "N"
    ops_source: str
    downcast: Dict[str, str]  # ONNX type -> the type TensorRT holds it in
    cast_types: FrozenSet[str]  # Cast input and target types
    cast_source: str
    quantize_outputs: FrozenSet[str]  # QuantizeLinear output types
    quantize_source: str
    uint8_source: str
    io_types: FrozenSet[str]  # types a network input or output may have
    io_source: str
    quantized_only: FrozenSet[str] = frozenset()  # types usable only through Q/DQ (10/11)
    attributes: Tuple[AttributeRule, ...] = ()
    constant_inputs: Dict[str, Tuple[int, ...]] = field(default_factory=dict)  # op -> inputs that must be constants
    scale_types: FrozenSet[str] = frozenset({"FLOAT"})  # Q/DQ scale types the importer reads (FP16 Q/DQ: 10/11)
    scale_source: str = SCALE_85


def _attribute_rules(source, newer):
    rules = [AttributeRule("Resize", "mode", "nearest", RESIZE_MODES, source),
             AttributeRule("Resize", "coordinate_transformation_mode", "half_pixel", RESIZE_COORDINATES, source),
             AttributeRule("Resize", "nearest_mode", "round_prefer_floor", RESIZE_NEAREST, source),
             AttributeRule("Upsample", "mode", "nearest", RESIZE_MODES, source),
             AttributeRule("Conv", "auto_pad", "NOTSET", AUTO_PAD, AUTOPAD_85),
             AttributeRule("ConvTranspose", "auto_pad", "NOTSET", AUTO_PAD, AUTOPAD_85)]
    if newer:
        rules += [AttributeRule("Resize", "antialias", 0, frozenset({0}), source),
                  AttributeRule("Resize", "keep_aspect_ratio_policy", "stretch", frozenset({"stretch"}), source),
                  AttributeRule("TopK", "sorted", 1, frozenset({1}), source),
                  AttributeRule("LSTM", "input_forget", 0, frozenset({0}), source),
                  AttributeRule("LSTM", "layout", 0, frozenset({0}), source),
                  AttributeRule("ScatterND", "reduction", "none", frozenset({"none"}), source)]
    return tuple(rules)


_REDUCE_AXES = {op: (1,) for op in REDUCE_OPS.split()}  # opset 18+: axes is input 1

RULES = {
    "8.5": Rules(
        release="8.5", opset=(1, 17), opset_source=OPS_85, types=TYPES_TABLE_85, unsupported=UNSUPPORTED_85,
        ops_source=OPS_85, downcast={"INT64": "INT32", "DOUBLE": "FLOAT"},
        cast_types=frozenset({"FLOAT", "FLOAT16", "INT32", "INT8", "BOOL", "UINT8"}), cast_source=CAST_85,
        quantize_outputs=frozenset({"INT8"}), quantize_source=QUINT8_85, uint8_source=CAST_85,
        io_types=frozenset({"FLOAT", "FLOAT16", "DOUBLE", "INT8", "UINT8", "INT32", "INT64", "BOOL"}), io_source=TYPES_85,
        attributes=_attribute_rules(OPS_85, newer=False),
        constant_inputs={"CumSum": (1,), "Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,),
                         "InstanceNormalization": (1, 2)}),
    "10": Rules(
        release="10", opset=(9, 20), opset_source=OPS_10, types=TYPES_TABLE_10, unsupported=UNSUPPORTED_10,
        ops_source=OPS_10, downcast={"DOUBLE": "FLOAT"}, cast_types=TYPES_TABLE_10["Cast"], cast_source=OPS_10,
        quantize_outputs=_types("I8", "FP8", "I4"), quantize_source=QDQ_10, uint8_source=UINT8_10,
        io_types=_types("F", "BF", "FP8", "I8", "I4", "U8", "I32", "I64", "B") | {"DOUBLE"}, io_source=OPS_10,
        quantized_only=_types("I8", "FP8", "I4"), attributes=_attribute_rules(OPS_10, newer=True),
        constant_inputs=dict(_REDUCE_AXES, CumSum=(1,), Slice=(3,), Squeeze=(1,), Unsqueeze=(1,), Pad=(3,),
                             Dropout=(2,), OneHot=(1,)), scale_types=_types("F", "BF"), scale_source=SCALE_10),
    "11": Rules(
        release="11", opset=(9, 24), opset_source=OPSET_11, types=TYPES_TABLE_11, unsupported=UNSUPPORTED_11,
        ops_source=OPS_11, downcast={"DOUBLE": "FLOAT"}, cast_types=TYPES_TABLE_11["Cast"], cast_source=OPS_11,
        quantize_outputs=_types("I8", "FP8", "FP4", "I4"), quantize_source=OPS_11, uint8_source=UINT8_10,
        io_types=_types("F", "BF", "FP8", "FP4", "I8", "I4", "U8", "I32", "I64", "B") | {"DOUBLE"}, io_source=OPS_11,
        quantized_only=_types("I8", "FP8", "FP4", "I4"), attributes=_attribute_rules(OPS_11, newer=True),
        constant_inputs=dict(_REDUCE_AXES, CumSum=(1,), Squeeze=(1,), Unsqueeze=(1,), Dropout=(2,), OneHot=(1,)),
        scale_types=_types("F", "BF"), scale_source=SCALE_10),
}

# Which input carries the type the operator table talks about (default: input 0); Constant-like ops
# are judged by their output.
DATA_INPUT = {"Where": 1}
JUDGED_BY_OUTPUT = frozenset({"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike"})
# Ops with their own type rules below instead of the generic table check.
OWN_TYPE_RULES = frozenset({"Cast", "CastLike", "DequantizeLinear", "QuantizeLinear"})
POOLING = ("AveragePool", "MaxPool", "LpPool")


def release_for_version(version_str):
    """TensorRT version string ('8.6.1', '10.3.0.26', '11.4') -> the rule table that applies: '8.5', '10' or '11'."""
    major, minor = tensorrt_version(version_str)
    if major == 8 and minor in (5, 6):
        return "8.5"
    if major in (10, 11):
        return str(major)
    raise SanetError("no parser rules for TensorRT {}: use 8.5 (8.5/8.6), 10 or 11".format(version_str))


@dataclass(frozen=True)
class Violation:
    node: str
    op: str
    rule: str
    source: str

    def __str__(self):
        return "node {} ({}): {} [{}]".format(self.node, self.op, self.rule, self.source)


class _Graph:
    """The model's tensors: ONNX type name of every value, constants, producers and graph I/O."""

    def __init__(self, onnx, model):
        self.onnx = onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # inference is a help, not a requirement: fall back to the declared types
            inferred = model
        graph = inferred.graph
        self.graph = graph
        self.types = {}
        for value in list(graph.value_info) + list(graph.input) + list(graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = self.type_name(value.type.tensor_type.elem_type)
        self.constants = {}
        for tensor in graph.initializer:
            self.constants[tensor.name] = tensor
            self.types[tensor.name] = self.type_name(tensor.data_type)
        self.producer = {}
        for node in graph.node:
            for output in node.output:
                self.producer[output] = node
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attribute in node.attribute:
                    if attribute.name == "value":
                        self.constants[node.output[0]] = attribute.t
                        self.types[node.output[0]] = self.type_name(attribute.t.data_type)
        self.inputs = {value.name for value in graph.input} - set(self.constants)
        self.outputs = {value.name for value in graph.output}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def type_name(self, elem_type):
        return self.onnx.TensorProto.DataType.Name(elem_type)

    def type_of(self, name):
        return self.types.get(name) if name else None

    def all_zero(self, name):
        """True/False for a constant zero point, None when it is not a constant."""
        if name not in self.constants:
            return None
        return not self.onnx.numpy_helper.to_array(self.constants[name]).any()


def _attribute(onnx, node, name, default):
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def default_opset(model):
    """The model's default-domain (ai.onnx) opset, or None when it imports none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _load(model_or_path):
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    if isinstance(model_or_path, onnx.ModelProto):
        return onnx, model_or_path
    try:
        return onnx, onnx.load(os.fspath(model_or_path))
    except Exception as exc:
        raise SanetError("cannot read ONNX file {}: {}".format(model_or_path, exc)) from exc


def lint(model_or_path, release) -> List[Violation]:
    """Every rule of ``release`` ('8.5', '10', '11' or a TensorRT version string) this ONNX model breaks."""
    rules = RULES[release if release in RULES else release_for_version(release)]
    onnx, model = _load(model_or_path)
    graph = _Graph(onnx, model)
    found = []
    opset = default_opset(model)
    low, high = rules.opset
    if opset is not None and not low <= opset <= high:
        found.append(Violation("(model)", "opset", "opset {} is outside the {}..{} TensorRT {} parses".format(
            opset, low, high, rules.release), rules.opset_source))
    for role, names in (("input", sorted(graph.inputs)), ("output", [value.name for value in graph.graph.output])):
        for name in names:
            type_name = graph.type_of(name)
            if type_name is not None and type_name not in rules.io_types:
                found.append(Violation(name, role, "network {} type {} is unsupported (TensorRT {} takes {})".format(
                    role, type_name, rules.release, ", ".join(sorted(rules.io_types))), rules.io_source))
    for node in graph.graph.node:
        found.extend(_node_violations(onnx, graph, rules, node))
    return found


def _converted(rules, type_name):
    return rules.downcast.get(type_name, type_name)


def _node_violations(onnx, graph, rules, node):
    name, op = node.name or (node.output[0] if node.output else "?"), node.op_type

    def violation(rule, source):
        return Violation(name, op, rule, source)

    if node.domain not in ("", "ai.onnx"):
        yield violation("op of domain {} has no importer (needs a TensorRT plugin)".format(node.domain), rules.ops_source)
        return
    if op in rules.unsupported:
        yield violation("{} is not supported by TensorRT {}".format(op, rules.release), rules.ops_source)
        return
    if op not in rules.types:
        yield violation("{} is not in TensorRT {}'s operator table (needs a plugin)".format(op, rules.release), rules.ops_source)
        return
    yield from _type_violations(graph, rules, node, violation)
    yield from _uint8_violations(onnx, graph, rules, node, violation)
    yield from _quantization_violations(onnx, graph, rules, node, violation)
    for rule in rules.attributes:
        if rule.op == op:
            value = _attribute(onnx, node, rule.name, rule.default)
            if value not in rule.allowed:
                yield violation("{} {}={!r} is unsupported (allowed: {})".format(
                    op, rule.name, value, ", ".join(sorted(str(v) for v in rule.allowed))), rule.source)
    if op == "MaxPool" and len([o for o in node.output if o]) > 1:
        yield violation("MaxPool's Indices output is unsupported", rules.ops_source)
    if op in POOLING and rules.release != "8.5":
        dilations = _attribute(onnx, node, "dilations", [])
        if any(d != 1 for d in dilations):
            yield violation("{} dilations must be empty or all ones, got {}".format(op, list(dilations)), rules.ops_source)
    for index in rules.constant_inputs.get(op, ()):
        if index < len(node.input) and node.input[index] and node.input[index] not in graph.constants:
            yield violation("input {} ({}) must be an initializer or Constant".format(index, node.input[index]),
                            rules.ops_source)


def _type_violations(graph, rules, node, violation):
    """The operator table's 'Supported Types' for the node's main input (or output for Constant-like ops)."""
    op = node.op_type
    if op in OWN_TYPE_RULES:
        return
    if op in JUDGED_BY_OUTPUT:
        tensor = node.output[0] if node.output else ""
    else:
        index = DATA_INPUT.get(op, 0)
        tensor = node.input[index] if index < len(node.input) else ""
    onnx_type = graph.type_of(tensor)
    if onnx_type is None or (onnx_type == "UINT8" and rules.release == "8.5"):  # 8.5 UINT8: the rule below
        return
    if onnx_type in rules.quantized_only:  # reported by the quantized-type rule
        return
    trt_type = _converted(rules, onnx_type)
    if trt_type not in rules.types[op]:
        yield violation("{} on {} is unsupported (TensorRT {} supports {})".format(
            op, onnx_type, rules.release, ", ".join(sorted(rules.types[op]))), rules.ops_source)


def _uint8_violations(onnx, graph, rules, node, violation):
    """UINT8 exists only at the network boundary: 8.5 casts it to/from FLOAT/FLOAT16 (its Cast importer),
    10/11 allow UINT8 only on network inputs and outputs. Cast targets are checked here too."""
    op = node.op_type
    inputs = [graph.type_of(name) for name in node.input]
    if op in ("Cast", "CastLike"):
        source_type = _converted(rules, inputs[0]) if inputs and inputs[0] else None
        if op == "Cast":
            target = _converted(rules, graph.type_name(_attribute(onnx, node, "to", 0)))
        else:
            target = _converted(rules, inputs[1]) if len(inputs) > 1 and inputs[1] else None
        for role, type_name in (("input", source_type), ("target", target)):
            if type_name is not None and type_name not in rules.cast_types:
                yield violation("Cast {} type {} is unsupported (TensorRT {} casts {})".format(
                    role, type_name, rules.release, ", ".join(sorted(rules.cast_types))), rules.cast_source)
        if rules.release == "8.5":
            if source_type == "UINT8" and target not in FLOATS:
                yield violation("UINT8 may only be cast to FLOAT/FLOAT16, not {}".format(target), rules.uint8_source)
            if target == "UINT8" and source_type is not None and source_type not in FLOATS:
                producer = graph.producer.get(node.input[0])
                why = " (ArgMax/ArgMin yield INT32 in TensorRT)" if producer is not None and producer.op_type in (
                    "ArgMax", "ArgMin") else ""
                yield violation("Cast to UINT8 needs a FLOAT/FLOAT16 input, got {}{}".format(source_type, why),
                                rules.uint8_source)
            if source_type == "UINT8" and node.input[0] not in graph.inputs:
                yield violation("UINT8 is only allowed as a network input", rules.uint8_source)
    elif rules.release == "8.5":
        for name, type_name in zip(node.input, inputs):
            if type_name == "UINT8":
                yield violation("UINT8 tensor {} must be cast to FLOAT/FLOAT16 before any other op".format(name),
                                rules.uint8_source)
    for name in node.output:
        if graph.type_of(name) == "UINT8" and name not in graph.outputs:
            yield violation("UINT8 tensor {} is neither a network input nor output".format(name), rules.uint8_source)


def _quantization_violations(onnx, graph, rules, node, violation):
    """Q/DQ: DequantizeLinear takes only quantized activations (no INT32 bias), zero points are zero, scales are of a
    type the importer reads (FP16 scales, as an FP16 Q/DQ ONNX has them, from 10 on) and positive (an FP16 scale
    rounds to 0 below 6e-8), and (10/11) quantized types are usable only through DequantizeLinear."""
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1:
        scale = node.input[1]
        scale_type = graph.type_of(scale)
        if scale_type is not None and scale_type not in rules.scale_types:
            yield violation("{} scale must be {}, got {}".format(op, "/".join(sorted(rules.scale_types)), scale_type),
                            rules.scale_source)
        if scale in graph.constants and not (onnx.numpy_helper.to_array(graph.constants[scale]) > 0).all():
            yield violation("{} scale coefficients must all be positive".format(op), POSITIVE)
    if op == "DequantizeLinear":
        allowed = rules.types["DequantizeLinear"]
        got = graph.type_of(node.input[0])
        if got is not None and got not in allowed:
            yield violation("DequantizeLinear input must be {}, got {} (only activation types allowed as input to "
                            "this layer)".format("/".join(sorted(allowed)), got), rules.ops_source)
        if len(node.input) > 2 and graph.all_zero(node.input[2]) is False:
            yield violation("DequantizeLinear x_zero_point must be zero", rules.ops_source)
    if op == "QuantizeLinear":
        got = graph.type_of(node.output[0]) if node.output else None
        if got is not None and got not in rules.quantize_outputs:
            yield violation("QuantizeLinear output must be {}, got {}".format(
                "/".join(sorted(rules.quantize_outputs)), got), rules.quantize_source)
        if len(node.input) > 2 and graph.all_zero(node.input[2]) is False:
            yield violation("QuantizeLinear y_zero_point must be zero", rules.ops_source)
        source = graph.type_of(node.input[0])
        if source is not None and _converted(rules, source) not in rules.types["QuantizeLinear"]:
            yield violation("QuantizeLinear input must be {}, got {}".format(
                "/".join(sorted(rules.types["QuantizeLinear"])), source), rules.ops_source)
    quantized_use = [(i, name) for i, name in enumerate(node.input) if graph.type_of(name) in rules.quantized_only]
    for index, name in quantized_use:
        zero_point = op in ("QuantizeLinear", "DequantizeLinear") and index == 2
        if not zero_point and not (op == "DequantizeLinear" and index == 0):
            yield violation("{} tensor {} is a quantized type on TensorRT {}: usable only as DequantizeLinear "
                            "input".format(graph.type_of(name), name, rules.release), rules.ops_source)


def check(model_or_path, release):
    """Raise SanetError listing every violation (one per line) of ``release``'s parser rules."""
    found = lint(model_or_path, release)
    if found:
        label = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else "the ONNX model"
        raise SanetError("{} breaks {} TensorRT {} parser rule(s):\n{}".format(
            label, len(found), release, "\n".join(str(v) for v in found)))
