"""A TensorRT simulator for the tests, generated at run time from NVIDIA's real Python API listing.

``../shared/docs/tensorrt-api/tensorrt-*.txt`` list every class, method (with its pybind signature),
property (read-only marked), enum member, constant and module function of one TensorRT release, read from
NVIDIA's bindings wheels. ``simulate(path)`` turns one listing into a ``tensorrt`` module:

* the module has exactly the listed names (plus Python's module dunders); a class has exactly its listed
  methods, properties and attributes; ``__version__`` comes from the file's header;
* every call binds its arguments against the listed signature (count, keywords, overloads) and checks
  enum and TensorRT-class arguments by type, as pybind11 does; read-only properties refuse assignment;
* behaviour sits behind that surface: the ONNX parser mirrors the model (inputs, outputs, one layer per node)
  and refuses what ``sanet.trtlint`` says the release's parser refuses; the builder honours flags, memory
  pools, the timing cache, DLA placement and drives an INT8 calibrator exactly like TensorRT (exceptions in
  Python calibrator methods are logged and swallowed); plans are bytes recording the ONNX and the build;
  ``execute_async_v3`` reads the input from the address given to ``set_tensor_address`` and writes the output
  there, computed by ONNX Runtime CPU (FP16 builds through ``sanet.numerics.fp16_model`` when it exists).

Nothing here is a GPU: kernel choice, FP16/INT8 arithmetic of real kernels and speed are not simulated.
The 8.6.1 listing stands for JetPack 5's 8.5.2: the 8.6 additions (README of the API folder) are removed
and ``nptype`` crashes on numpy >= 1.24 as 8.5's does (``np.bool``).
"""
import ctypes
import hashlib
import json
import os
import pathlib
import re
import struct
import sys
import types

import numpy as np

API_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "tensorrt-api"
# What 8.6 added on top of JetPack 5's 8.5 (NVIDIA's 8.6.0 EA API changes): absent on a Jetson with JetPack 5.
ADDED_IN_86 = {"IBuilderConfig": ("builder_optimization_level", "hardware_compatibility_level", "max_aux_streams",
                                  "plugins_to_serialize"),
               "BuilderFlag": ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")}
PLAN_MAGIC = b"TRTSIM-PLAN\x00"


def plan_header(path):
    """The build record a simulated plan file carries (precision flags, pools, placement...)."""
    with open(path, "rb") as handle:
        data = handle.read()
    (size,) = struct.unpack("<I", data[len(PLAN_MAGIC):len(PLAN_MAGIC) + 4])
    return json.loads(data[len(PLAN_MAGIC) + 4:len(PLAN_MAGIC) + 4 + size].decode())
CACHE_MAGIC = b"TRTSIM-TIMING\x00"
# Enum values where code relies on them (bit positions, DataType constants); other enums count in listed order.
KNOWN_VALUES = {
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1, "STRONGLY_TYPED": 1,
                                      "PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3},
    "TensorIOMode": {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    "DeviceType": {"GPU": 0, "DLA": 1},
    "DataType": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7, "INT64": 8,
                 "INT4": 9, "FP4": 10, "E8M0": 11},
    "Severity": {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4},
}
ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL"}
TRT_TO_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
                "INT64": np.int64, "BOOL": np.bool_}
# ONNX op -> the TensorRT layer onnx-tensorrt makes for it (one layer per node here); ops missing from this
# table get the parser's "No importer registered" error.
LAYER_TYPES = dict(
    [(op, "CONVOLUTION") for op in ("Conv",)] + [(op, "DECONVOLUTION") for op in ("ConvTranspose",)]
    + [(op, "ACTIVATION") for op in ("Relu", "Sigmoid", "Clip", "Tanh", "LeakyRelu", "Elu", "Selu", "Softplus",
                                     "Softsign", "HardSigmoid", "ThresholdedRelu", "Gelu")]
    + [(op, "ELEMENTWISE") for op in ("Add", "Mul", "Sub", "Div", "Pow", "Max", "Min", "Equal", "Greater", "Less",
                                      "And", "Or", "Xor", "Mod", "Sum", "Mean", "GreaterOrEqual", "LessOrEqual")]
    + [(op, "UNARY") for op in ("Exp", "Log", "Sqrt", "Abs", "Neg", "Floor", "Ceil", "Reciprocal", "Sin", "Cos",
                                "Not", "Erf", "Round", "Sign", "IsNaN", "IsInf")]
    + [(op, "REDUCE") for op in ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1",
                                 "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "GlobalAveragePool",
                                 "GlobalMaxPool")]
    + [(op, "POOLING") for op in ("MaxPool", "AveragePool")]
    + [(op, "SHUFFLE") for op in ("Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "DepthToSpace",
                                  "SpaceToDepth")]
    + [(op, "SLICE") for op in ("Slice", "Split", "Expand", "Tile")]
    + [(op, "FILL") for op in ("ConstantOfShape", "Range", "RandomUniform", "RandomNormal")]
    + [(op, "MATRIX_MULTIPLY") for op in ("MatMul", "Gemm")]
    + [(op, "NORMALIZATION") for op in ("InstanceNormalization", "LayerNormalization", "GroupNormalization")]
    + [("Resize", "RESIZE"), ("Upsample", "RESIZE"), ("Concat", "CONCATENATION"), ("QuantizeLinear", "QUANTIZE"),
       ("DequantizeLinear", "DEQUANTIZE"), ("Constant", "CONSTANT"), ("Shape", "SHAPE"), ("Gather", "GATHER"),
       ("GatherElements", "GATHER"), ("Cast", "CAST"), ("ArgMax", "TOPK"), ("ArgMin", "TOPK"), ("TopK", "TOPK"),
       ("Softmax", "SOFTMAX"), ("BatchNormalization", "SCALE"), ("Identity", "IDENTITY"), ("Pad", "PADDING"),
       ("Where", "SELECT"), ("PRelu", "PARAMETRIC_RELU"), ("NonZero", "NON_ZERO"), ("ScatterND", "SCATTER"),
       ("Einsum", "EINSUM"), ("GridSample", "GRID_SAMPLE"), ("OneHot", "ONE_HOT")])
LAYER_CLASSES = {"CONVOLUTION": "IConvolutionLayer", "DECONVOLUTION": "IDeconvolutionLayer",
                 "ACTIVATION": "IActivationLayer", "ELEMENTWISE": "IElementWiseLayer", "RESIZE": "IResizeLayer",
                 "POOLING": "IPoolingLayer", "REDUCE": "IReduceLayer", "CONCATENATION": "IConcatenationLayer",
                 "QUANTIZE": "IQuantizeLayer", "DEQUANTIZE": "IDequantizeLayer", "CONSTANT": "IConstantLayer",
                 "SHAPE": "IShapeLayer", "GATHER": "IGatherLayer", "SLICE": "ISliceLayer", "CAST": "ICastLayer",
                 "TOPK": "ITopKLayer", "SHUFFLE": "IShuffleLayer", "MATRIX_MULTIPLY": "IMatrixMultiplyLayer",
                 "SOFTMAX": "ISoftMaxLayer", "SCALE": "IScaleLayer", "IDENTITY": "IIdentityLayer",
                 "PADDING": "IPaddingLayer", "UNARY": "IUnaryLayer", "FILL": "IFillLayer",
                 "NORMALIZATION": "INormalizationLayer", "SELECT": "ISelectLayer", "PARAMETRIC_RELU": "IParametricReLULayer",
                 "NON_ZERO": "INonZeroLayer", "SCATTER": "IScatterLayer", "EINSUM": "IEinsumLayer",
                 "GRID_SAMPLE": "IGridSampleLayer", "ONE_HOT": "IOneHotLayer"}
# DLA (platforms.md): FP16/INT8, static shapes, these layer kinds; Resize only nearest or half_pixel linear.
DLA_LAYERS = {"CONVOLUTION", "DECONVOLUTION", "ACTIVATION", "ELEMENTWISE", "POOLING", "CONCATENATION", "SCALE",
              "RESIZE", "SOFTMAX", "REDUCE"}


def api_files(env=None):
    """The listings named by SANET_TRT_API (a file or a folder), default every tensorrt-*.txt in API_DIR."""
    value = (env if env is not None else os.environ).get("SANET_TRT_API")
    path = pathlib.Path(value) if value else API_DIR
    if path.is_file():
        return [path]
    return sorted(path.glob("tensorrt-*.txt")) if path.is_dir() else []


# ---------------------------------------------------------------------------------------------- the listing
class Param:
    def __init__(self, text):
        head, _, default = text.partition(" = ")
        name, _, kind = head.partition(": ")
        self.name, self.kind, self.optional = name.strip(), kind.strip(), bool(default)


class Signature:
    def __init__(self, name, params, result):
        self.name, self.params, self.result = name, params, result  # params None: signature unknown

    def __repr__(self):
        return "{}({})".format(self.name, "..." if self.params is None else ", ".join(
            "{}: {}".format(p.name, p.kind) for p in self.params))


def split_params(text):
    """Split a pybind parameter list at top-level commas (types nest [], (), <>)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def parse_signature(text):
    text = text.split("  # ")[0].strip()
    match = re.match(r"^(?:\d+\. )?(\w+)\((.*)\)(?: -> (.*))?$", text)
    name, params, result = match.group(1), match.group(2), match.group(3)
    if params.strip() == "...":
        return Signature(name, None, result)
    return Signature(name, [Param(p) for p in split_params(params)], result)


class ClassSpec:
    def __init__(self, name, bases):
        self.name, self.bases = name, bases
        self.methods, self.properties, self.attrs = {}, {}, []


class Api:
    """One parsed listing: version, enums, classes, functions, constants."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.enums, self.classes, self.functions, self.consts = {}, {}, {}, {}
        current = None
        lines = self.path.read_text(encoding="utf-8").splitlines()
        self.version = lines[0].rsplit(" ", 1)[1]
        for line in lines[1:]:
            if line.startswith("enum "):
                name, _, members = line[5:].partition(": ")
                self.enums[name] = members.split()
            elif line.startswith("class "):
                match = re.match(r"class (\w+)\((.*)\)", line)
                bases = [b.strip() for b in match.group(2).split(",") if b.strip()]
                current = self.classes[match.group(1)] = ClassSpec(match.group(1), bases)
            elif line.startswith("  method "):
                signature = parse_signature(line[9:])
                current.methods.setdefault(signature.name, []).append(signature)
            elif line.startswith("  property "):
                body = line[11:].split("  # ")[0]
                name, _, kind = body.partition(": ")
                current.properties[name] = (kind.replace(" (read-only)", "").strip(), "(read-only)" in body)
            elif line.startswith("  attr "):
                current.attrs.append(line[7:].strip())
            elif line.startswith("function "):
                signature = parse_signature(line[9:])
                self.functions[signature.name] = signature
            elif line.startswith("const "):
                name, _, value = line[6:].partition(" = ")
                self.consts[name] = value
        self.major = int(self.version.split(".")[0])
        if self.version.startswith("8.6"):
            self._as_jetpack5()

    def _as_jetpack5(self):
        """JetPack 5 ships 8.5.2; no 8.5 bindings are published, so drop what 8.6 added (see the README)."""
        for name in ADDED_IN_86["IBuilderConfig"]:
            self.classes["IBuilderConfig"].properties.pop(name, None)
        self.enums["BuilderFlag"] = [m for m in self.enums["BuilderFlag"] if m not in ADDED_IN_86["BuilderFlag"]]


# ------------------------------------------------------------------------------------------ the generated module
class EnumValue:
    """One member of a pybind11 enum: name, value, int(), equality within its enum."""

    __slots__ = ("_enum", "name", "value")

    def __init__(self, enum, name, value):
        self._enum, self.name, self.value = enum, name, value

    def __int__(self):
        return self.value

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, EnumValue) and other._enum is self._enum and other.value == self.value

    def __hash__(self):
        return hash((self._enum.__name__, self.value))

    def __repr__(self):
        return "<{}.{}: {}>".format(self._enum.__name__, self.name, self.value)

    __str__ = __repr__


def make_enum(name, members):
    known = KNOWN_VALUES.get(name, {})
    enum = type(name, (EnumValue,), {"__module__": "tensorrt", "__slots__": ()})
    table = {}
    for index, member in enumerate(members):
        value = known.get(member, index)
        setattr(enum, member, enum(enum, member, value))
        table[member] = getattr(enum, member)
    enum.__members__ = table
    return enum


class Simulation:
    """A generated ``tensorrt`` module plus what it did: the log and the events tests assert on."""

    def __init__(self, path, dla_cores=2):
        self.api = Api(path)
        self.version, self.major = self.api.version, self.api.major
        self.release = "8.5" if self.major == 8 else str(self.major)
        self.dla_cores = dla_cores
        self.log, self.events = [], []
        self.module = self._build_module()

    # ---- names and types
    def _build_module(self):
        module = types.ModuleType("tensorrt")
        module.__version__ = self.version
        self.enum_types = {name: make_enum(name, members) for name, members in self.api.enums.items()}
        self.severity = make_enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
        self.classes = {}
        for name in self.api.classes:
            self._make_class(name)
        for name, enum in self.enum_types.items():
            setattr(module, name, enum)
        for name, cls in self.classes.items():
            setattr(module, name, cls)
        for name, text in self.api.consts.items():
            setattr(module, name, self._const(text))
        for name, signature in self.api.functions.items():
            setattr(module, name, self._function(signature))
        self.module_ref = module
        return module

    def _const(self, text):
        match = re.match(r"<(\w+)\.(\w+): (\d+)>", text)
        if match and match.group(1) == "DataType":
            return getattr(self.enum_types["DataType"], match.group(2))
        if match and match.group(1) == "Severity":
            return getattr(self.severity, match.group(2))
        return text.strip("'")

    def _make_class(self, name):
        if name in self.classes:
            return self.classes[name]
        spec = self.api.classes[name]
        bases = tuple(self._make_class(b) for b in spec.bases if b in self.api.classes) or (object,)
        namespace = {"__module__": "tensorrt"}
        for method, signatures in spec.methods.items():
            if method == "Severity":
                namespace["Severity"] = self.severity
            elif method == "__init__":
                namespace["__init__"] = self._constructor(name, signatures)
            else:
                namespace[method] = self._method(name, method, signatures)
        for prop, (kind, read_only) in spec.properties.items():
            namespace[prop] = self._property(name, prop, kind, read_only)
        for attr in spec.attrs:
            namespace[attr] = getattr(self.severity, attr)
        for dunder in ("__len__", "__getitem__", "__iter__", "__eq__", "__bytes__", "__str__", "__repr__"):
            namespace[dunder] = self._dunder(dunder)
        namespace["__hash__"] = object.__hash__
        cls = type(name, bases, namespace)
        self.classes[name] = cls
        return cls

    def _dunder(self, dunder):
        def call(obj, *args):
            sim = obj.__dict__.get("_sim")
            if sim is None or not hasattr(sim, dunder):
                if dunder == "__eq__":
                    return obj is args[0]
                if dunder in ("__str__", "__repr__"):
                    return "<tensorrt.{} object>".format(type(obj).__name__)
                raise TypeError("'{}' object does not support {}".format(type(obj).__name__, dunder))
            return getattr(sim, dunder)(*args)
        return call

    def resolve(self, kind):
        """A listed type ('trt.DataType', 'nvinfer1::NetworkDefinitionCreationFlag', 'ILogger.Severity') -> class."""
        kind = kind.replace("trt.", "").split("::")[-1].strip()
        if kind.endswith("Severity"):
            return self.severity
        if kind in self.enum_types:
            return self.enum_types[kind]
        return self.classes.get(kind)

    def check(self, owner, signature, args, kwargs):
        """Bind ``args``/``kwargs`` to ``signature`` as pybind11 does; None when they do not fit."""
        if signature.params is None:
            return args, kwargs
        params = [p for p in signature.params if p.name not in ("self", "this")]
        if len(args) > len(params) or any(k not in [p.name for p in params] for k in kwargs):
            return None
        bound = list(args)
        for param in params[len(args):]:
            if param.name in kwargs:
                bound.append(kwargs[param.name])
            elif not param.optional:
                return None
            else:
                break
        for param, value in zip(params, bound):
            expected = self.resolve(param.kind)
            if expected is None:
                continue
            if value is None and expected is not self.severity and expected not in self.enum_types.values():
                continue  # pointers to TensorRT objects accept None
            if not isinstance(value, expected):
                return None
        return bound, {}

    def _bind(self, owner, name, signatures, args, kwargs):
        for signature in signatures:
            bound = self.check(owner, signature, args, kwargs)
            if bound is not None:
                return bound[0]
        raise TypeError("{}.{}(): incompatible function arguments. The following argument types are supported:\n{}\n"
                        "Invoked with: {}".format(owner, name, "\n".join("    {}".format(s) for s in signatures),
                                                  ", ".join(repr(a) for a in args)))

    def _constructor(self, owner, signatures):
        simulation = self

        def __init__(obj, *args, **kwargs):
            if signatures[0].params is None:
                raise TypeError("tensorrt.{}: No constructor defined!".format(owner))
            bound = simulation._bind(owner, "__init__", signatures, args, kwargs)
            obj.__dict__["_sim"] = simulation.behaviour(owner, obj, bound)
        return __init__

    def _method(self, owner, name, signatures):
        simulation = self

        def method(obj, *args, **kwargs):
            bound = simulation._bind(owner, name, signatures, args, kwargs)
            sim = obj.__dict__.get("_sim")
            implementation = getattr(sim, name, None)
            if implementation is None:
                raise NotImplementedError("trtsim: {}.{} is listed in TensorRT {} but not simulated".format(
                    owner, name, simulation.version))
            return implementation(*bound)
        method.__name__ = name
        method.__qualname__ = "{}.{}".format(owner, name)
        return method

    def _property(self, owner, name, kind, read_only):
        simulation = self

        def get(obj):
            sim = obj.__dict__.get("_sim")
            if sim is None or not hasattr(sim, name):
                raise NotImplementedError("trtsim: {}.{} is not simulated".format(owner, name))
            return getattr(sim, name)

        def put(obj, value):
            if read_only:
                raise AttributeError("can't set attribute '{}' of tensorrt.{}".format(name, owner))
            expected = simulation.resolve(kind)
            if expected is not None and value is not None and not isinstance(value, expected):
                raise TypeError("{}.{}: incompatible type {} (expects {})".format(owner, name, type(value).__name__, kind))
            setattr(obj.__dict__["_sim"], name, value)
        return property(get, put)

    def _function(self, signature):
        simulation = self
        name = signature.name

        def function(*args, **kwargs):
            bound = simulation._bind("tensorrt", name, [signature], args, kwargs)
            implementation = getattr(simulation, "fn_" + name, None)
            if implementation is None:
                raise NotImplementedError("trtsim: tensorrt.{} is not simulated".format(name))
            return implementation(*bound)
        function.__name__ = name
        return function

    def fn_nptype(self, trt_type):
        if self.major == 8:
            # 8.5.2 builds {..., bool: np.bool, ...} on every call; numpy 1.24 removed np.bool (JetPack 5 images
            # pin 1.24), so every call raises. The name is resolved like that, whatever numpy runs the tests.
            raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias for "
                                 "the builtin `bool`.")
        name = getattr(trt_type, "name", None)
        if name not in TRT_TO_NUMPY:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return TRT_TO_NUMPY[name]

    def fn_volume(self, iterable):
        return int(np.prod(list(iterable))) if iterable is not None else 1

    def fn_get_nv_onnx_parser_version(self):
        return int("".join(self.version.split(".")[:3]).ljust(4, "0")[:5])

    # ---- objects
    def new(self, owner, sim):
        """An instance of listed class ``owner`` (not constructible from Python) behind ``sim``."""
        obj = self.classes[owner].__new__(self.classes[owner])
        obj.__dict__["_sim"] = sim
        return obj

    def member(self, enum, name):
        return getattr(self.enum_types[enum], name)

    def behaviour(self, owner, obj, args):
        makers = {"Logger": LoggerSim, "Builder": BuilderSim, "Runtime": RuntimeSim, "OnnxParser": ParserSim,
                  "Dims": DimsSim}
        if owner in makers:
            return makers[owner](self, *args)
        if owner.startswith("IInt8") and owner.endswith("Calibrator") or owner.endswith("Calibrator2"):
            return CalibratorSim(self, owner)
        return BaseSim(self)

    def emit(self, severity, message, logger=None):
        self.log.append((severity, message))
        if logger is not None and type(logger).log is not self.classes["Logger"].log:
            logger.log(getattr(self.severity, severity), message)  # a Python ILogger subclass hears it too

    def dims(self, shape):
        return self.new("Dims", DimsSim(self, list(shape)))


# ------------------------------------------------------------------------------------------------ behaviour
class BaseSim:
    def __init__(self, sim):
        self.sim = sim


class DimsSim(BaseSim):
    MAX_DIMS = 8

    def __init__(self, sim, shape=()):
        super().__init__(sim)
        self.shape = [int(v) for v in shape]

    def __len__(self):
        return len(self.shape)

    def __getitem__(self, index):
        return self.shape[index]

    def __iter__(self):
        return iter(self.shape)

    def __eq__(self, other):
        return tuple(self.shape) == tuple(other)

    def __repr__(self):
        return "({})".format(", ".join(str(v) for v in self.shape))

    __str__ = __repr__


class LoggerSim(BaseSim):
    def __init__(self, sim, min_severity=None):
        super().__init__(sim)
        self.min_severity = min_severity if min_severity is not None else sim.severity.WARNING

    def log(self, severity, msg):
        self.sim.log.append((severity.name, msg))


class HostMemorySim(BaseSim):
    def __init__(self, sim, data):
        super().__init__(sim)
        self.data = bytes(data)
        self.nbytes = len(self.data)
        self.dtype = sim.member("DataType", "UINT8")

    def __bytes__(self):
        return self.data

    def __len__(self):
        return len(self.data)


class TensorSim(BaseSim):
    def __init__(self, sim, name, shape, dtype, is_input=False, is_output=False):
        super().__init__(sim)
        self.name, self.dims_shape, self.dtype = name, shape, dtype
        self.is_network_input, self.is_network_output = is_input, is_output
        self.dynamic_range_set = None

    @property
    def shape(self):
        return self.sim.dims(self.dims_shape)

    def set_dynamic_range(self, low, high):
        self.dynamic_range_set = (low, high)
        return True


class LayerSim(BaseSim):
    def __init__(self, sim, node, kind, inputs, outputs):
        super().__init__(sim)
        self.node, self.name, self.kind = node, node.name or node.op_type, kind
        self.inputs, self.outputs = inputs, outputs
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)
        self.type = sim.member("LayerType", kind) if kind in sim.api.enums.get("LayerType", []) else None
        self.metadata = ""
        self._precision = None
        self.output_types = {}

    @property
    def precision(self):
        return self._precision or self.sim.member("DataType", "FLOAT")

    @precision.setter
    def precision(self, value):
        self._precision = value

    @property
    def precision_is_set(self):
        return self._precision is not None

    def get_input(self, index):
        return self.inputs[index] if index < len(self.inputs) else None

    def get_output(self, index):
        return self.outputs[index] if index < len(self.outputs) else None

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype

    def reset_precision(self):
        self._precision = None

    def attribute(self, name, default=None):
        for attr in self.node.attribute:
            if attr.name == name:
                import onnx

                value = onnx.helper.get_attribute_value(attr)
                return value.decode() if isinstance(value, bytes) else value
        return default


class NetworkSim(BaseSim):
    def __init__(self, sim, builder, flags):
        super().__init__(sim)
        self.builder_sim, self.flags = builder, flags
        self.inputs, self.outputs, self.layers = [], [], []
        self.name = "network"
        self.onnx = None
        self.strongly_typed = sim.major >= 11 or self._flag("STRONGLY_TYPED")
        self.explicit_batch = sim.major >= 10 or self._flag("EXPLICIT_BATCH")
        self.has_implicit_batch_dimension = not self.explicit_batch

    def _flag(self, name):
        members = self.sim.api.enums["NetworkDefinitionCreationFlag"]
        return name in members and bool(self.flags & (1 << int(self.sim.member("NetworkDefinitionCreationFlag", name))))

    def get_flag(self, flag):
        return bool(self.flags & (1 << int(flag))) or (flag.name == "STRONGLY_TYPED" and self.strongly_typed)

    @property
    def num_inputs(self):
        return len(self.inputs)

    @property
    def num_outputs(self):
        return len(self.outputs)

    @property
    def num_layers(self):
        return len(self.layers)

    def get_input(self, index):
        return self.inputs[index] if index < len(self.inputs) else None

    def get_output(self, index):
        return self.outputs[index] if index < len(self.outputs) else None

    def get_layer(self, index):
        return self.layers[index] if index < len(self.layers) else None

    def mark_output(self, tensor):
        tensor.__dict__["_sim"].is_network_output = True
        self.outputs.append(tensor)


class ParserErrorSim(BaseSim):
    def __init__(self, sim, code, desc, node=-1, node_name="", node_operator=""):
        super().__init__(sim)
        self._code, self._desc, self._node = code, desc, node
        self._node_name, self._node_operator = node_name, node_operator

    def code(self):
        return self.sim.member("ErrorCode", self._code)

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._node_name

    def node_operator(self):
        return self._node_operator

    def file(self):
        return "ModelImporter.cpp"

    def func(self):
        return "parseGraph"

    def line(self):
        return 0

    def __str__(self):
        where = "In node {} with name: {} and operator: {} ".format(self._node, self._node_name, self._node_operator) \
            if self._node >= 0 else ""
        return "{}(parseGraph): {}: {}".format(where, self._code, self._desc)


def load_lint():
    """sanet.trtlint (the parser-rule lint) when this checkout has it, else None."""
    try:
        from sanet.trtlint import lint, release_for_version
    except ImportError:
        return None
    return lint, release_for_version


class ParserSim(BaseSim):
    def __init__(self, sim, network, logger):
        super().__init__(sim)
        self.network, self.logger = network.__dict__["_sim"], logger
        self.errors = []
        self.flags = 0

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.sim.new("ParserError", self.errors[index]) if index < len(self.errors) else None

    def clear_errors(self):
        self.errors = []

    def supports_operator(self, op_name):
        return op_name in LAYER_TYPES

    def parse_from_file(self, model):
        with open(model, "rb") as handle:
            return self.parse(handle.read(), model)

    def _fail(self, code, desc, index=-1, node=None):
        self.errors.append(ParserErrorSim(self.sim, code, desc, index, node.name if node else "", node.op_type if node else ""))
        self.sim.emit("ERROR", "ModelImporter: " + desc, self.logger)
        return False

    def parse(self, model, path=None):
        import onnx

        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as exc:  # the real parser reports a protobuf failure the same way
            return self._fail("MODEL_DESERIALIZE_FAILED", "Failed to parse ONNX model from file: {}".format(exc))
        if not self.network.explicit_batch:
            return self._fail("INVALID_GRAPH", "The ONNX parser only supports networks with an explicit batch dimension.")
        linter = load_lint()
        if linter is not None:
            lint, release_for_version = linter
            for violation in lint(proto, release_for_version(self.sim.version)):
                index = next((i for i, n in enumerate(proto.graph.node) if n.name == violation.node), -1)
                self._fail("UNSUPPORTED_NODE", str(violation), index, proto.graph.node[index] if index >= 0 else None)
            if self.errors:
                return False
        initializers = {t.name for t in proto.graph.initializer}
        tensors = {}

        def tensor(value, is_input=False):
            kind = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            dtype = ONNX_TO_TRT.get(kind.elem_type)
            if dtype is None or dtype not in self.sim.api.enums["DataType"]:
                return None
            made = self.sim.new("ITensor", TensorSim(self.sim, value.name, shape, self.sim.member("DataType", dtype), is_input))
            tensors[value.name] = made
            return made

        for value in proto.graph.input:
            if value.name in initializers:
                continue
            made = tensor(value, True)
            if made is None:
                return self._fail("UNSUPPORTED_NODE_DATATYPE", "input {} has a data type TensorRT {} lacks".format(
                    value.name, self.sim.version))
            self.network.inputs.append(made)
        for index, node in enumerate(proto.graph.node):
            kind = LAYER_TYPES.get(node.op_type)
            if kind is None:
                return self._fail("UNSUPPORTED_NODE", "No importer registered for op: {}".format(node.op_type), index, node)
            outputs = []
            for name in node.output:
                outputs.append(tensors.setdefault(name, self.sim.new("ITensor", TensorSim(
                    self.sim, name, [], self.sim.member("DataType", "FLOAT")))))
            inputs = [tensors[n] for n in node.input if n in tensors]
            cls = LAYER_CLASSES.get(kind, "ILayer")
            cls = cls if cls in self.sim.classes else "ILayer"
            self.network.layers.append(self.sim.new(cls, LayerSim(self.sim, node, kind, inputs, outputs)))
        for value in proto.graph.output:
            made = tensor(value)
            if made is None:
                return self._fail("UNSUPPORTED_NODE_DATATYPE", "output {} has a data type TensorRT {} lacks".format(
                    value.name, self.sim.version))
            made.__dict__["_sim"].is_network_output = True
            self.network.outputs.append(made)
        self.network.onnx = proto.SerializeToString()
        self.network.proto = proto
        return True


class TimingCacheSim(BaseSim):
    def __init__(self, sim, entries, origin):
        super().__init__(sim)
        self.entries, self.origin = set(entries), origin

    def serialize(self):
        body = json.dumps({"tensorrt": self.origin, "entries": sorted(self.entries)}).encode()
        return self.sim.new("IHostMemory", HostMemorySim(self.sim, CACHE_MAGIC + body))

    def combine(self, input_cache, ignore_mismatch):
        other = input_cache.__dict__["_sim"]
        if other.origin != self.origin and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True

    def reset(self):
        self.entries = set()
        return True


class ConfigSim(BaseSim):
    def __init__(self, sim):
        super().__init__(sim)
        self.flags = 0
        self.pools = {}
        self.timing_cache = None
        self.int8_calibrator = None
        self.default_device_type = sim.member("DeviceType", "GPU")
        self.DLA_core = -1
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = None
        self.profiling_verbosity = None
        self.avg_timing_iterations = 1
        self.device_types = {}

    def set_flag(self, flag):
        self.flags |= 1 << int(flag)

    def clear_flag(self, flag):
        self.flags &= ~(1 << int(flag))

    def get_flag(self, flag):
        return bool(self.flags & (1 << int(flag)))

    def has(self, name):
        return name in self.sim.api.enums["BuilderFlag"] and self.get_flag(self.sim.member("BuilderFlag", name))

    def set_memory_pool_limit(self, pool, pool_size):
        self.pools[pool.name] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self.pools.get(pool.name, 0)

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(serialized_timing_cache)
        if not data:
            return self.sim.new("ITimingCache", TimingCacheSim(self.sim, (), self.sim.version))
        try:
            if not data.startswith(CACHE_MAGIC):
                raise ValueError("bad magic")
            body = json.loads(data[len(CACHE_MAGIC):].decode())
            made = TimingCacheSim(self.sim, body["entries"], body["tensorrt"])
        except (ValueError, KeyError, UnicodeDecodeError):
            self.sim.emit("ERROR", "Corrupt timing cache: deserialization failed")
            return None
        return self.sim.new("ITimingCache", made)

    def set_timing_cache(self, cache, ignore_mismatch):
        sim = cache.__dict__["_sim"]
        if sim.origin != self.sim.version and not ignore_mismatch:
            self.sim.emit("ERROR", "Timing cache was created by TensorRT {} and cannot be used by {}".format(
                sim.origin, self.sim.version))
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache

    def set_device_type(self, layer, device_type):
        self.device_types[layer.name] = device_type

    def get_device_type(self, layer):
        return self.device_types.get(layer.name, self.default_device_type)

    def can_run_on_DLA(self, layer):
        return dla_supports(layer.__dict__["_sim"])

    def reset(self):
        self.__init__(self.sim)


def dla_supports(layer):
    """platforms.md: the layer kinds DLA runs; Resize only nearest or linear with half_pixel coordinates."""
    if layer.kind not in DLA_LAYERS:
        return False
    if layer.kind == "RESIZE":
        mode = layer.attribute("mode", "nearest")
        transform = layer.attribute("coordinate_transformation_mode", "half_pixel")
        if mode == "linear" and transform != "half_pixel":
            return False
        if mode not in ("nearest", "linear"):
            return False
    return True


class BuilderSim(BaseSim):
    def __init__(self, sim, logger):
        super().__init__(sim)
        self.logger = logger
        self.num_DLA_cores = sim.dla_cores
        self.max_DLA_batch_size = 32 if sim.dla_cores else 1
        self.platform_has_fast_fp16 = True
        self.platform_has_fast_int8 = True
        self.platform_has_tf32 = False
        self.max_threads = 1

    def create_network(self, flags=0):
        return self.sim.new("INetworkDefinition", NetworkSim(self.sim, self, int(flags)))

    def create_builder_config(self):
        return self.sim.new("IBuilderConfig", ConfigSim(self.sim))

    def is_network_supported(self, network, config):
        return network.__dict__["_sim"].onnx is not None

    def _fail(self, message):
        self.sim.emit("ERROR", message, self.logger)
        return None

    def build_serialized_network(self, network, config):
        net, cfg, sim = network.__dict__["_sim"], config.__dict__["_sim"], self.sim
        if net.onnx is None or not net.outputs:
            return self._fail("Network must have at least one output")
        fp16, int8 = cfg.has("FP16"), cfg.has("INT8")
        quantized = any(layer.__dict__["_sim"].kind == "QUANTIZE" for layer in net.layers)
        if net.strongly_typed and (fp16 or int8):
            return self._fail("IBuilderConfig: BuilderFlag FP16/INT8 cannot be set on a strongly typed network; "
                              "types come from the network")
        placement = None
        if cfg.default_device_type == sim.member("DeviceType", "DLA"):
            if not 0 <= cfg.DLA_core < self.num_DLA_cores:
                return self._fail("DLA core {} requested, this device has {}".format(cfg.DLA_core, self.num_DLA_cores))
            if not (fp16 or int8):
                return self._fail("DLA requires FP16 or INT8 precision")
            if quantized:
                return self._fail("DLA does not support explicitly quantized (Q/DQ) networks in this release")
            placement = {"dla": [], "gpu": []}
            for layer in net.layers:
                placement["dla" if dla_supports(layer.__dict__["_sim"]) else "gpu"].append(layer.name)
            if placement["gpu"] and not cfg.has("GPU_FALLBACK"):
                return self._fail("Layer {} cannot run on DLA and GPU fallback is disabled".format(placement["gpu"][0]))
        calibration = None
        if int8 and not quantized:
            calibrator = cfg.int8_calibrator
            if calibrator is None:
                return self._fail("Calibration failure occurred with no scaling factors detected; INT8 without "
                                  "Q/DQ needs a calibrator or dynamic ranges")
            if sim.major >= 10:
                sim.emit("WARNING", "IInt8Calibrator is deprecated in TensorRT 10.1: use explicit quantization", self.logger)
            calibration = run_calibration(sim, net, calibrator, self.logger)
            if calibration is None:
                return self._fail("Calibration failure occurred with no scaling factors detected. This could be due to "
                                  "no int8 calibrator or insufficient custom scales for network layers.")
        pinned = sorted(layer.name for layer in net.layers if layer.__dict__["_sim"].precision_is_set)
        signatures = {hashlib.sha1("{}|{}|{}|{}|{}".format(layer.__dict__["_sim"].node.op_type, layer.name,
                                                            [list(t.shape) for t in net.inputs], fp16, int8).encode()).hexdigest()
                      for layer in net.layers}
        hits = misses = 0
        if cfg.timing_cache is not None and not cfg.has("DISABLE_TIMING_CACHE"):
            cache = cfg.timing_cache.__dict__["_sim"]
            hits, misses = len(signatures & cache.entries), len(signatures - cache.entries)
            cache.entries |= signatures
        header = {
            "tensorrt": sim.version, "fp16": fp16, "int8": int8, "quantized": quantized,
            "strongly_typed": net.strongly_typed, "obey_precision": cfg.has("OBEY_PRECISION_CONSTRAINTS"),
            "pinned_fp16": pinned, "pools": cfg.pools, "optimization_level": cfg.builder_optimization_level,
            "dla_core": cfg.DLA_core if placement is not None else None, "placement": placement,
            "calibration": calibration, "timing_cache": {"hits": hits, "misses": misses},
            "layers": len(net.layers),
            "io": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
                    "mode": "INPUT" if t.is_network_input else "OUTPUT"} for t in net.inputs + net.outputs],
        }
        sim.events.append(("build", header))
        body = json.dumps(header).encode()
        return sim.new("IHostMemory", HostMemorySim(sim, PLAN_MAGIC + struct.pack("<I", len(body)) + body + net.onnx))


def _call_python(sim, logger, obj, name, *args):
    """Call a Python-side calibrator method as TensorRT's trampoline does: exceptions are logged, not raised."""
    try:
        return getattr(obj, name)(*args), True
    except Exception as exc:
        sim.emit("ERROR", "Exception caught in {}(): {}: {}".format(name, type(exc).__name__, exc), logger)
        return None, False


def read_device(pointer, shape, dtype):
    """The array at ``pointer`` (a host address in the simulation) as a copy."""
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (ctypes.c_char * count).from_address(int(pointer))
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).copy()


def run_calibration(sim, net, calibrator, logger):
    """TensorRT's calibration loop: read the cache first; else get_batch_size, get_batch(names) until None or an
    error, then write_calibration_cache. Returns a summary or None when no scale was found."""
    algorithm, ok = _call_python(sim, logger, calibrator, "get_algorithm")
    algorithm = algorithm.name if ok and algorithm is not None else "ENTROPY_CALIBRATION_2"
    tag = "TRT-{}-{}\n".format("".join(sim.version.split(".")[:3]), algorithm)
    cached, ok = _call_python(sim, logger, calibrator, "read_calibration_cache")
    if ok and cached:
        text = bytes(cached).decode("latin-1")
        if text.startswith(tag):
            sim.events.append(("calibration", "cache"))
            return {"source": "cache", "batches": 0, "scales": dict(json.loads(text[len(tag):]))}
        sim.emit("WARNING", "Calibration cache from another TensorRT or algorithm: ignored", logger)
    batch_size, ok = _call_python(sim, logger, calibrator, "get_batch_size")
    if not ok:
        return None
    names = [t.name for t in net.inputs]
    shape = list(net.inputs[0].shape)
    dtype = TRT_TO_NUMPY[net.inputs[0].dtype.name]
    amax, batches = 0.0, 0
    while True:
        pointers, ok = _call_python(sim, logger, calibrator, "get_batch", names)
        if not ok or not pointers:
            break
        data = read_device(pointers[0], shape, dtype)
        amax = max(amax, float(np.abs(data.astype(np.float32)).max()))
        batches += 1
    sim.events.append(("calibration", batches))
    if batches == 0:
        return None
    scales = {names[0]: amax / 127.0}
    _call_python(sim, logger, calibrator, "write_calibration_cache", (tag + json.dumps(sorted(scales.items()))).encode("latin-1"))
    return {"source": "batches", "batches": batches, "batch_size": batch_size, "scales": scales}


class CalibratorSim(BaseSim):
    ALGORITHMS = {"IInt8EntropyCalibrator2": "ENTROPY_CALIBRATION_2", "IInt8EntropyCalibrator": "ENTROPY_CALIBRATION",
                  "IInt8MinMaxCalibrator": "MINMAX_CALIBRATION", "IInt8LegacyCalibrator": "LEGACY_CALIBRATION"}

    def __init__(self, sim, owner):
        super().__init__(sim)
        self.owner = owner

    def get_algorithm(self):
        return self.sim.member("CalibrationAlgoType", self.ALGORITHMS.get(self.owner, "ENTROPY_CALIBRATION_2"))


class RuntimeSim(BaseSim):
    def __init__(self, sim, logger):
        super().__init__(sim)
        self.logger = logger
        self.DLA_core = -1
        self.num_DLA_cores = sim.dla_cores
        self.max_threads = 1

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        try:
            if not data.startswith(PLAN_MAGIC):
                raise ValueError("magic")
            start = len(PLAN_MAGIC)
            (size,) = struct.unpack("<I", data[start:start + 4])
            header = json.loads(data[start + 4:start + 4 + size].decode())
            onnx_bytes = data[start + 4 + size:]
        except (ValueError, struct.error, UnicodeDecodeError):
            self.sim.emit("ERROR", "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                                   "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)", self.logger)
            return None
        if header["tensorrt"] != self.sim.version:
            self.sim.emit("ERROR", "The engine plan file is not compatible with this version of TensorRT, expecting "
                                   "library version {} got {}".format(self.sim.version, header["tensorrt"]), self.logger)
            return None
        core = None
        if header["dla_core"] is not None:
            # The engine runs on the runtime's DLA core (0 when never set), not necessarily the one it was built for.
            core = self.DLA_core if self.DLA_core >= 0 else 0
            if core >= self.num_DLA_cores:
                self.sim.emit("ERROR", "DLA core {} does not exist".format(core), self.logger)
                return None
        self.sim.events.append(("deserialize", {"dla_core": core}))
        return self.sim.new("ICudaEngine", EngineSim(self.sim, header, onnx_bytes, core))


class EngineSim(BaseSim):
    def __init__(self, sim, header, onnx_bytes, dla_core):
        super().__init__(sim)
        self.header, self.onnx_bytes, self.dla_core = header, onnx_bytes, dla_core
        self.io = header["io"]
        self.num_io_tensors = len(self.io)
        self.num_layers = header["layers"]
        self.name = "simulated engine"
        self.device_memory_size = 0
        self.session = None

    def _tensor(self, name):
        for entry in self.io:
            if entry["name"] == name:
                return entry
        return None

    def get_tensor_name(self, index):
        return self.io[index]["name"] if 0 <= index < len(self.io) else None

    def get_tensor_mode(self, name):
        entry = self._tensor(name)
        return self.sim.member("TensorIOMode", entry["mode"] if entry else "NONE")

    def get_tensor_shape(self, name):
        entry = self._tensor(name)
        return self.sim.dims(entry["shape"] if entry else [])

    def get_tensor_dtype(self, name):
        entry = self._tensor(name)
        return self.sim.member("DataType", entry["dtype"] if entry else "FLOAT")

    def create_execution_context(self, strategy=None):
        return self.sim.new("IExecutionContext", ContextSim(self.sim, self))

    def serialize(self):
        body = json.dumps(self.header).encode()
        return self.sim.new("IHostMemory", HostMemorySim(self.sim, PLAN_MAGIC + struct.pack("<I", len(body)) + body + self.onnx_bytes))

    def run(self, feeds):
        """The plan's ONNX on ONNX Runtime CPU; FP16-flagged weakly typed plans through the FP16 emulation."""
        if self.session is None:
            import onnxruntime

            model = self.onnx_bytes
            if self.header["fp16"] and not self.header["quantized"]:
                model = half_precision(model)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return self.session.run(None, feeds)


def half_precision(onnx_bytes):
    """FP16 emulation from sanet.numerics when this checkout has it; plain FP32 otherwise."""
    try:
        from sanet.numerics import fp16_model
    except ImportError:
        return onnx_bytes
    import onnx

    return fp16_model(onnx.load_model_from_string(onnx_bytes)).SerializeToString()


class ContextSim(BaseSim):
    def __init__(self, sim, engine):
        super().__init__(sim)
        self.engine_sim = engine
        self.addresses = {}
        self.shapes = {e["name"]: list(e["shape"]) for e in engine.io}
        self.debug_sync = False
        self.name = "context"

    @property
    def engine(self):
        return self.sim.new("ICudaEngine", self.engine_sim)

    def set_tensor_address(self, name, memory):
        if self.engine_sim._tensor(name) is None:
            self.sim.emit("ERROR", "setTensorAddress: {} is not an I/O tensor".format(name))
            return False
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name):
        return self.addresses.get(name, 0)

    def set_input_shape(self, name, shape):
        entry = self.engine_sim._tensor(name)
        if entry is None or entry["mode"] != "INPUT" or list(shape) != list(entry["shape"]):
            self.sim.emit("ERROR", "setInputShape: {} {} outside the engine's static shape".format(name, list(shape)))
            return False
        return True

    def get_tensor_shape(self, name):
        return self.sim.dims(self.shapes.get(name, []))

    @property
    def all_binding_shapes_specified(self):
        return True

    def execute_async_v3(self, stream_handle):
        io = self.engine_sim.io
        missing = [e["name"] for e in io if not self.addresses.get(e["name"])]
        if missing:
            self.sim.emit("ERROR", "enqueueV3: tensor {} has no address set".format(missing[0]))
            return False
        feeds = {e["name"]: read_device(self.addresses[e["name"]], e["shape"], TRT_TO_NUMPY[e["dtype"]])
                 for e in io if e["mode"] == "INPUT"}
        results = self.engine_sim.run(feeds)
        for entry, result in zip([e for e in io if e["mode"] == "OUTPUT"], results):
            array = np.ascontiguousarray(result, dtype=TRT_TO_NUMPY[entry["dtype"]])
            if list(array.shape) != list(entry["shape"]):
                self.sim.emit("ERROR", "output {} has shape {}, engine says {}".format(entry["name"], array.shape, entry["shape"]))
                return False
            ctypes.memmove(self.addresses[entry["name"]], array.ctypes.data, array.nbytes)
        self.sim.events.append(("execute", {"stream": int(stream_handle), "dla_core": self.engine_sim.dla_core}))
        return True


def simulate(path, dla_cores=2):
    return Simulation(path, dla_cores)


class installed:
    """Context manager: ``sys.modules['tensorrt']`` is the simulation and SANET_DEVICE_MEMORY=host inside (the
    simulator reads and writes host addresses); both restored afterwards."""

    def __init__(self, simulation):
        self.simulation = simulation

    def __enter__(self):
        self.saved = sys.modules.get("tensorrt"), os.environ.get("SANET_DEVICE_MEMORY")
        sys.modules["tensorrt"] = self.simulation.module
        os.environ["SANET_DEVICE_MEMORY"] = "host"
        return self.simulation

    def __exit__(self, *exc):
        module, memory = self.saved
        if module is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = module
        if memory is None:
            os.environ.pop("SANET_DEVICE_MEMORY", None)
        else:
            os.environ["SANET_DEVICE_MEMORY"] = memory
        return False


def dump_names(module):
    """Public names of a generated module (tests compare them with the listing)."""
    return sorted(n for n in vars(module) if not n.startswith("__"))


