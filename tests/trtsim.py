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
    # NvInferRuntime.h (release/8.5): kLAYER_NAMES_ONLY = 0 (the default), kNONE = 1, kDETAILED = 2
    "ProfilingVerbosity": {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2, "DEFAULT": 0, "VERBOSE": 2},
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
        self.default = default.strip()  # its repr as pybind prints it: None, 0, '', False, <DataType.FLOAT: 0>


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
class SimMeta(type):
    """pybind11's metaclass check: a Python subclass whose __init__ skips the bound __init__ is refused at once."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        if getattr(obj, "_sim", None) is None:
            base = next(c for c in cls.__mro__ if c.__module__ == "tensorrt")
            raise TypeError("tensorrt.{}.__init__() must be called when overriding __init__".format(base.__name__))
        return obj


class SimObject(metaclass=SimMeta):
    """Root of the generated classes: one slot for the behaviour behind the listed surface (see impl)."""

    __slots__ = ("_sim",)


def impl(obj):
    """The simulation behind a generated object (a BaseSim subclass)."""
    return obj._sim


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

    def __init__(self, path, platform=None):
        self.api = Api(path)
        self.version, self.major = self.api.version, self.api.major
        self.release = "8.5" if self.major == 8 else str(self.major)
        self.platform = platform or default_platform(self.version)
        self.dla, self.dla_cores, self.tf32 = PLATFORMS[self.platform]
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
        bases = tuple(self._make_class(b) for b in spec.bases if b in self.api.classes) or (SimObject,)
        # No __dict__, as pybind11 classes without py::dynamic_attr(): assigning a name the listing does not have
        # (config.max_workspace_size on 10, a typo like config.DLA_Core) raises AttributeError.
        namespace = {"__module__": "tensorrt", "__slots__": ()}
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
        cls = SimMeta(name, bases, namespace)
        self.classes[name] = cls
        return cls

    def _dunder(self, dunder):
        def call(obj, *args):
            sim = getattr(obj, "_sim", None)
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
        kind = kind.replace("trt.", "").split("::")[-1].strip().rstrip("&").strip()
        if kind.endswith("Severity"):
            return self.severity
        if kind in self.enum_types:
            return self.enum_types[kind]
        return self.classes.get(kind) or self.classes.get(kind[1:] if kind.startswith("I") else None)

    def accepts(self, kind, value, convert, default=""):
        """Whether pybind11's caster for the listed ``kind`` loads ``value`` (pybind11/cast.h, type_caster<T>::load
        at v2.10, the line TensorRT 8.5-10 bind with): a first pass without implicit conversion, a second with it."""
        kind = kind.strip()
        if value is None:
            # None reaches only pointer arguments: class pointers (nullptr) and defaulted `char const*` (= None)
            target = self.resolve(kind)
            return default == "None" or (target is not None and target is not self.severity
                                         and target not in self.enum_types.values())
        if kind in ("int", "typing.SupportsInt"):
            # type_caster<int>: floats never; without convert only int or __index__; with convert also __int__
            if isinstance(value, (float, np.floating)):
                return False
            return isinstance(value, int) or hasattr(value, "__index__")
        if kind in ("float", "typing.SupportsFloat"):
            if isinstance(value, float):
                return True
            return convert and not isinstance(value, (str, bytes)) and hasattr(value, "__float__")
        if kind == "bool":
            # type_caster<bool>: True/False (numpy.bool_ too); with convert anything with nb_bool (0, 1, 2.5...)
            if isinstance(value, (bool, np.bool_)):
                return True
            return convert and isinstance(value, (int, float, np.number))
        if kind == "str":
            return isinstance(value, (str, bytes))
        if kind in ("buffer", "typing_extensions.Buffer"):
            if isinstance(value, self.classes.get("IHostMemory", ())):
                return True  # IHostMemory implements the buffer protocol
            try:
                memoryview(value)
            except TypeError:
                return False
            return True
        if kind in ("bytes", "tuple", "list"):
            return isinstance(value, {"bytes": bytes, "tuple": tuple, "list": list}[kind])
        if kind == "numpy.ndarray":
            return isinstance(value, np.ndarray)
        if kind in ("function", "collections.abc.Callable"):
            return callable(value)
        match = re.match(r"^(?:List|collections\.abc\.Sequence)\[(.*)\]$", kind)
        if match:  # list_caster: any sequence but str/bytes, every element loaded by the element's caster
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
                return False
            return all(self.accepts(match.group(1), item, convert) for item in value)
        target = self.resolve(kind)
        if target is None:
            return True  # a type this simulation does not model (capsule, object, Iterable...)
        if isinstance(value, target):
            return True
        # Dims and its subclasses are implicitly convertible from sequences of ints (TensorRT's pyFoundationalTypes)
        dims = self.classes.get("Dims")
        if convert and dims is not None and isinstance(target, type) and issubclass(target, dims):
            return self.accepts("List[int]", value, convert)
        return False

    def check(self, owner, signature, args, kwargs, convert):
        """Bind ``args``/``kwargs`` to ``signature`` as pybind11 does (positional first, then keywords by name,
        then defaults; an unknown keyword or one naming a positional argument fails): the full list of values,
        defaults included, or None when they do not fit."""
        if signature.params is None:
            return None if kwargs else list(args)
        params = [p for p in signature.params if p.name not in ("self", "this")]
        names = [p.name for p in params]
        if len(args) > len(params) or any(k not in names or names.index(k) < len(args) for k in kwargs):
            return None
        bound = list(args)
        for param in params[len(args):]:
            if param.name in kwargs:
                bound.append(kwargs[param.name])
            elif param.optional:
                bound.append(self.default_value(param.default))
            else:
                return None
        for index, (param, value) in enumerate(zip(params, bound)):
            explicit = index < len(args) or param.name in kwargs
            if explicit and not self.accepts(param.kind, value, convert, param.default):
                return None
        return bound

    def default_value(self, text):
        """A default as the listing prints it (None, 0, '', False, <DataType.FLOAT: 0>) -> the value."""
        match = re.match(r"^<(\w+)\.(\w+): -?\d+>$", text)
        if match:
            enum = self.severity if match.group(1) == "Severity" else self.enum_types.get(match.group(1))
            return getattr(enum, match.group(2)) if enum is not None else None
        if text.startswith("'"):
            return text.strip("'")
        return {"None": None, "False": False, "True": True}.get(text, int(text) if re.match(r"^-?\d+$", text) else None)

    def _bind(self, owner, name, signatures, args, kwargs):
        for convert in (False, True):  # pybind11 tries every overload without conversions first
            for signature in signatures:
                bound = self.check(owner, signature, args, kwargs, convert)
                if bound is not None:
                    return bound
        raise TypeError("{}.{}(): incompatible function arguments. The following argument types are supported:\n{}\n"
                        "Invoked with: {}".format(owner, name, "\n".join("    {}".format(s) for s in signatures),
                                                  ", ".join([repr(a) for a in args] + ["{}={!r}".format(k, v)
                                                                                      for k, v in kwargs.items()])))

    def _constructor(self, owner, signatures):
        simulation = self

        def __init__(obj, *args, **kwargs):
            if signatures[0].params is None:
                raise TypeError("tensorrt.{}: No constructor defined!".format(owner))
            bound = simulation._bind(owner, "__init__", signatures, args, kwargs)
            obj._sim = simulation.behaviour(owner, obj, bound)
        return __init__

    def _method(self, owner, name, signatures):
        simulation = self

        def method(obj, *args, **kwargs):
            bound = simulation._bind(owner, name, signatures, args, kwargs)
            sim = getattr(obj, "_sim", None)
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
            sim = getattr(obj, "_sim", None)
            if sim is None or not hasattr(sim, name):
                raise NotImplementedError("trtsim: {}.{} is not simulated".format(owner, name))
            return getattr(sim, name)

        def put(obj, value):
            if read_only:
                raise AttributeError("can't set attribute '{}' of tensorrt.{}".format(name, owner))
            if kind != "?" and not simulation.accepts(kind, value, True):
                raise TypeError("(): incompatible function arguments. The following argument types are supported:\n"
                                "    1. ({}: tensorrt.{}, arg0: {}) -> None\nInvoked with: {!r}".format(
                                    name, owner, kind, value))
            setattr(impl(obj), name, value)
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
        obj._sim = sim
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
        self.constants = {}  # initializer inputs by name (Resize scales, Slice starts...): set by the parser

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

    def shapes(self, tensors):
        return [list(impl(t).dims_shape) for t in tensors]

    def constant(self, index):
        """The node's ``index``-th input when it is a build-time constant (an initializer), else None."""
        names = list(self.node.input)
        return self.constants.get(names[index]) if index < len(names) and names[index] else None

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
        self.types = {}  # tensor name -> ONNX element type, from the parser's shape inference
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
        impl(tensor).is_network_output = True
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
        self.network, self.logger = impl(network), logger
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
        from onnx import numpy_helper

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
        initializers = {t.name: t for t in proto.graph.initializer}
        inferred = inferred_types(proto)
        self.network.types = {name: elem for name, (_, elem) in inferred.items()}
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
                shape, elem = inferred.get(name, ([], 1))
                dtype = ONNX_TO_TRT.get(elem, "FLOAT")
                outputs.append(tensors.setdefault(name, self.sim.new("ITensor", TensorSim(
                    self.sim, name, shape, self.sim.member("DataType", dtype if dtype in self.sim.api.enums["DataType"] else "FLOAT")))))
            inputs = [tensors[n] for n in node.input if n in tensors]
            cls = LAYER_CLASSES.get(kind, "ILayer")
            cls = cls if cls in self.sim.classes else "ILayer"
            layer = LayerSim(self.sim, node, kind, inputs, outputs)
            layer.constants = {n: numpy_helper.to_array(initializers[n]) for n in node.input if n in initializers}
            self.network.layers.append(self.sim.new(cls, layer))
        for value in proto.graph.output:
            dtype = ONNX_TO_TRT.get(value.type.tensor_type.elem_type)
            made = tensors.get(value.name)
            if made is None:
                made = tensor(value)
            if made is None or dtype is None or dtype not in self.sim.api.enums["DataType"]:
                return self._fail("UNSUPPORTED_NODE_DATATYPE", "output {} has a data type TensorRT {} lacks".format(
                    value.name, self.sim.version))
            impl(made).is_network_output = True
            self.network.outputs.append(made)
        self.network.onnx = proto.SerializeToString()
        self.network.proto = proto
        return True


def inferred_types(proto):
    """{tensor name: (shape with -1 for unknown dims, ONNX element type)} from ONNX shape inference."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(proto).graph
    found = {}
    for value in list(graph.value_info) + list(graph.output) + list(graph.input):
        kind = value.type.tensor_type
        found[value.name] = ([d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim], kind.elem_type)
    return found


class TimingCacheSim(BaseSim):
    def __init__(self, sim, entries, origin):
        super().__init__(sim)
        self.entries, self.origin = set(entries), origin

    def serialize(self):
        body = json.dumps({"tensorrt": self.origin, "entries": sorted(self.entries)}).encode()
        return self.sim.new("IHostMemory", HostMemorySim(self.sim, CACHE_MAGIC + body))

    def combine(self, input_cache, ignore_mismatch):
        other = impl(input_cache)
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
        self._dla_core = -1
        self.profiles = []
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = None
        self.profiling_verbosity = sim.member("ProfilingVerbosity", "LAYER_NAMES_ONLY")  # [H85] the default
        self.avg_timing_iterations = 1
        self.device_types = {}

    @property
    def DLA_core(self):
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, core):
        # [H85] setDLACore: "if getNbDLACores() returns 0, then this function does nothing" (Polygraphy's
        # backend/trt/util.py: "On non-DLA platforms, config.DLA_core can never be set to anything other than -1")
        if self.sim.dla_cores:
            self._dla_core = core

    @property
    def num_optimization_profiles(self):
        return len(self.profiles)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

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
        sim = impl(cache)
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
        # the per-layer check alone: it knows nothing of subgraph limits or what the built engine does
        return self.sim.dla is not None and dla_refusal(impl(layer), self.sim.dla) is None

    def reset(self):
        self.__init__(self.sim)


# ------------------------------------------------------------------------------------------------------ DLA
# Sources, cited per rule below:
#   [H85]   NVIDIA/TensorRT include/NvInfer.h at branch release/8.5: the "If executing this layer on DLA" notes of
#           each layer class (they are the same at release/10.3 except the Xavier-only notes, 10.x not running on it)
#   [GUIDE] TensorRT Developer Guide, "Working with DLA": "DLA Supported Layers and Restrictions" (General
#           Restrictions) and "GPU Fallback Mode" (docs.nvidia.com/deeplearning/tensorrt)
#   [ONNX]  onnx/onnx-tensorrt builtin_op_importers.cpp at tag 8.5-GA: which layer an ONNX node becomes
# Layer kinds the 8.5 header gives DLA rules for; every other kind (Shuffle, Reduce, MatrixMultiply, Gather
# ("No DLA support"), Constant, Cast...) runs on the GPU. TensorRT's partitioner is closed source: the grouping
# into subgraphs below is this simulation's model of it (see docs/simulator.md).
DLA_SUBGRAPHS_PER_CORE = 16  # [GUIDE] "only 16 DLA loadables can be loaded concurrently per core"
DLA_MAX_DIM = 8192  # [GUIDE] maximum size of a non-batch dimension
PLATFORMS = {
    # name: (DLA generation or None, DLA cores, TF32): Jetson AGX Xavier has two first-generation DLA cores,
    # Jetson AGX Orin two second-generation ones ([GUIDE]; NvInfer.h: "Orin has capacity of 1 MiB per core,
    # and Xavier shares 4 MiB across all of its accelerator cores"); x86 GPUs have none.
    "x86": (None, 0, True),
    "xavier": ("1.0", 2, False),  # Volta (SM 7.2): no TF32
    "orin": ("2.0", 2, True),
}


def default_platform(version, env=None):
    """SANET_TRT_PLATFORM, else the listing's usual host: 8.x (JetPack 5's 8.5) Xavier, 10.3 (JetPack 6) Orin,
    other releases an x86 GPU."""
    chosen = (env if env is not None else os.environ).get("SANET_TRT_PLATFORM", "").strip().lower()
    if chosen:
        if chosen not in PLATFORMS:
            raise ValueError("SANET_TRT_PLATFORM={} is not one of {}".format(chosen, ", ".join(PLATFORMS)))
        return chosen
    return "xavier" if version.startswith("8.") else "orin" if version.startswith("10.3") else "x86"


def _ints(values):
    return [int(v) for v in values] if values is not None else []


def _outside(what, values, low, high):
    """The refusal of a layer parameter (a list, one entry per spatial axis) with an entry outside TensorRT's
    [low, high] on DLA, else None."""
    if any(not low <= v <= high for v in values):
        return "{} {} outside [{}, {}]".format(what, values, low, high)
    return None


def dla_refusal(layer, generation):
    """Why ``layer`` (a LayerSim) cannot run on a DLA of ``generation`` ('1.0' Xavier, '2.0' Orin); None if it can.
    The wording follows TensorRT's own warnings where they are known."""
    inputs, outputs = layer.shapes(layer.inputs), layer.shapes(layer.outputs)
    if any(d < 0 for shape in inputs + outputs for d in shape[1:]):
        return "DLA does not support dynamic dimensions"  # [H85] INetworkDefinition::addInput: "DLA does not support Wildcard dimensions"
    if any(d > DLA_MAX_DIM for shape in inputs + outputs for d in shape[1:]):
        return "a dimension exceeds DLA's maximum of {}".format(DLA_MAX_DIM)  # [GUIDE] general restrictions
    op, kind = layer.node.op_type, layer.kind
    rank = len(inputs[0]) if inputs else 0
    if kind in ("CONVOLUTION", "DECONVOLUTION"):
        # [ONNX] Conv/ConvTranspose: a 1-D convolution (3-D input) is unsqueezed to 2-D (kernel k x 1) around
        # Shuffle layers; anything else but 2-D stays unsupported: "only support 2D kernel size" [H85]
        if rank not in (3, 4):
            return "only 2D convolutions run on DLA"
        kernel = _ints(layer.attribute("kernel_shape")) or [1, 1]
        strides = _ints(layer.attribute("strides")) or [1] * len(kernel)
        pads = _ints(layer.attribute("pads")) or [0] * (2 * len(kernel))
        dilations = _ints(layer.attribute("dilations")) or [1] * len(kernel)
        groups = int(layer.attribute("group", 1))
        maps = outputs[0][1] if outputs and len(outputs[0]) > 1 else 1
        if not 1 <= maps <= 8192:  # [H85] setNbOutputMaps: "must be in the range [1,8192]"
            return "number of output maps {} outside [1, 8192]".format(maps)
        if kind == "DECONVOLUTION":
            if any(p for p in pads):  # [H85] IDeconvolutionLayer::setPaddingNd: "padding must be 0"
                return "deconvolution padding must be 0 on DLA"
            if groups != 1:  # [H85] IDeconvolutionLayer::setNbGroups: "nbGroups must be one"
                return "grouped deconvolution is not supported on DLA"
            return _outside("deconvolution kernel", kernel, 1, 32)  # [H85] setKernelSizeNd
        refusal = (_outside("kernel size", kernel, 1, 32)  # [H85] IConvolutionLayer::setKernelSizeNd: [1,32]
                   or _outside("stride", strides, 1, 8)  # [H85] setStrideNd: [1,8]
                   or _outside("padding", pads, 0, 31)  # [H85] setPaddingNd: [0,31]
                   or _outside("dilation", dilations, 1, 32))  # [H85] setDilationNd: [1,32]
        if refusal:
            return refusal
        if groups > 8192:  # [H85] setNbGroups: "the max number of groups is 8192"
            return "{} groups exceed 8192".format(groups)
        return None
    if kind == "POOLING":
        if rank != 4:  # [H85] IPoolingLayer::setWindowSizeNd: "only support 2D window size"
            return "only 2D pooling runs on DLA"
        window = _ints(layer.attribute("kernel_shape"))
        strides = _ints(layer.attribute("strides")) or [1] * len(window)
        pads = _ints(layer.attribute("pads")) or [0] * (2 * len(window))
        refusal = (_outside("pooling window", window, 1, 8)  # [H85] setWindowSizeNd: [1,8]
                   or _outside("pooling stride", strides, 1, 16)  # [H85] setStrideNd: [1,16]
                   or _outside("pooling padding", pads, 0, 7))  # [H85] setPaddingNd: [0,7]
        if refusal:
            return refusal
        # [H85] setAverageCountExcludesPadding: "On Xavier, DLA supports only inclusive padding"; ONNX
        # AveragePool excludes padding unless count_include_pad=1
        if (generation == "1.0" and op == "AveragePool" and any(pads)
                and not int(layer.attribute("count_include_pad", 0))):
            return "average pooling that excludes padding: Xavier's DLA supports only inclusive padding"
        return None
    if kind == "ACTIVATION":
        # [H85] IActivationLayer::setType: "On the DLA, the valid activation types are kRELU, kSIGMOID, kTANH, and
        # kCLIP"; [ONNX] Clip with constant bounds is a kCLIP activation, with tensor bounds elementwise max/min
        return None if op in ("Relu", "Sigmoid", "Tanh", "Clip") else "activation {} is not supported on DLA".format(op)
    if kind == "ELEMENTWISE":
        # [H85] IElementWiseLayer::setOperation: "DLA supports only kSUM, kPROD, kMAX, kMIN, and kSUB"
        if op in ("Add", "Sum", "Mul", "Max", "Min", "Sub"):
            return None
        return "ElementWise operation {} is not supported on DLA (only kSUM, kPROD, kMAX, kMIN, kSUB)".format(op)
    if kind == "UNARY":
        return None if op == "Abs" else "Unary operation {} is not supported on DLA (only kABS)".format(op)  # [H85] IUnaryLayer
    if kind == "CONCATENATION":
        axis = int(layer.attribute("axis", 0))
        axis = axis + rank if axis < 0 else axis
        if axis != rank - 3:  # [H85] IConcatenationLayer::setAxis: "must be the third to last axis"
            return "concatenation on axis {} of a rank-{} tensor: DLA concatenates only along the third-to-last axis".format(axis, rank)
        return None
    if kind == "SLICE":
        # [H85] ISliceLayer: constant start/size/stride, default mode, strides 1, not along the first dimension,
        # four-dimensional input
        if op != "Slice" or rank != 4:
            return "DLA slices only 4-D tensors with a Slice"
        starts, axes, steps = layer.constant(1), layer.constant(3), layer.constant(4)
        if starts is None or layer.constant(2) is None or (len(layer.node.input) > 3 and layer.node.input[3] and axes is None):
            return "slice bounds are not build-time constants"
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in (axes if axes is not None else range(len(starts)))]
        if 0 in axes:
            return "slicing along the first dimension is not supported on DLA"
        if steps is not None and any(int(s) != 1 for s in steps):
            return "slice strides must be 1 on DLA"
        return None
    if kind == "RESIZE":
        return _resize_refusal(layer, rank)
    if kind == "SOFTMAX":
        if generation == "1.0":  # [H85] ISoftMaxLayer: "On Xavier, this layer is not supported on DLA"
            return "SoftMax is not supported on Xavier's DLA"
        axis = int(layer.attribute("axis", -1))
        size = inputs[0][axis] if inputs and inputs[0] else 0
        others = [d for i, d in enumerate(inputs[0][1:], 1) if i != (axis % rank)] if inputs else []
        limit = 8192 if all(d == 1 for d in others) else 1024  # [H85] ISoftMaxLayer: two classes of input sizes
        return None if size <= limit else "SoftMax axis of {} exceeds {} on DLA".format(size, limit)
    if kind == "SCALE":
        return None  # [H85] IScaleLayer has no DLA restriction beyond the general ones
    if kind == "PARAMETRIC_RELU":
        # [H85] IParametricReLULayer: "the slopes input must be a build-time constant"
        return None if layer.constant(1) is not None else "PReLU slopes must be a build-time constant on DLA"
    if kind == "GATHER":
        return "Gather has no DLA support"  # [H85] IGatherLayer: "No DLA support"
    return "layer type {} is not supported on DLA".format(kind)


RESIZE_DLA_NEAREST = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil")}


def _resize_refusal(layer, rank):
    """[H85] IResizeLayer: DLA takes only static scales ("setOutputDimensions() is not supported"; [ONNX] a `sizes`
    input becomes a shape tensor, never scales), exactly 4 of them, the first two 1, the last two integers in [1, 32]
    (nearest) or [1, 4] (linear), and these modes: nearest (kASYMMETRIC, kFLOOR) or (kHALF_PIXEL, kHALF_DOWN/kHALF_UP);
    linear (kHALF_PIXEL, kFORMULA or kUPPER). [ONNX] maps half_pixel and pytorch_half_pixel to kHALF_PIXEL and
    round_prefer_floor/ceil to kHALF_DOWN/kHALF_UP."""
    mode = layer.attribute("mode", "nearest")
    transform = layer.attribute("coordinate_transformation_mode", "half_pixel")
    transform = "half_pixel" if transform == "pytorch_half_pixel" else transform
    if mode == "linear" and transform != "half_pixel":
        # TensorRT's own warning on Xavier (forums.developer.nvidia.com/t/219158)
        return ("For bilinear resize, DLA only supports kHALF_PIXEL coordinate transformation with resize selector: "
                "kFORMULA or kUPPER but k{} was found.".format(transform.upper()))
    if mode == "nearest" and (transform, layer.attribute("nearest_mode", "round_prefer_floor")) not in RESIZE_DLA_NEAREST:
        return "nearest resize with {} coordinates and {} rounding is not supported on DLA".format(
            transform, layer.attribute("nearest_mode", "round_prefer_floor"))
    if mode not in ("nearest", "linear"):
        return "resize mode {} is not supported on DLA".format(mode)
    scales = layer.constant(2)
    if scales is None or len(scales) == 0:
        return "a resize to output dimensions (ONNX sizes) is not supported on DLA: give static scales"
    limit = 32 if mode == "nearest" else 4
    if rank != 4 or len(scales) != 4 or list(scales[:2]) != [1, 1]:
        return "DLA resizes need exactly 4 scales, the first two 1"
    if any(float(s) != int(s) or not 1 <= s <= limit for s in scales[2:]):
        return "{} resize scales {} are not integers in [1, {}]".format(mode, list(scales[2:]), limit)
    return None


def dla_partition(layers, capable):
    """Group the DLA-capable layers (indices into the topologically ordered ``layers``) into subgraphs: a layer
    joins the subgraph of a DLA-capable producer unless a path leaves that subgraph (through the GPU or another
    subgraph) and comes back, which would make loadables wait on each other; producers' subgraphs merge under the
    same condition. Returns the subgraphs as lists of indices, in order of their first layer."""
    producer = {}
    for index, layer in enumerate(layers):
        for tensor in layer.outputs:
            producer[impl(tensor).name] = index
    parent = {}

    def find(group):
        while parent[group] != group:
            group = parent[group]
        return group

    def feeders(group):  # groups with a path into ``group`` that leaves them first
        return {find(g) for g in entering[group]}

    group_of, ancestors, entering = {}, [], {}
    for index, layer in enumerate(layers):
        preds = sorted({producer[impl(t).name] for t in layer.inputs if impl(t).name in producer})
        here = {find(group_of[p]) for p in preds if p in group_of}
        # groups reaching this layer by a path that left them (through a producer outside the group)
        left = {find(g) for p in preds for g in ancestors[p] if p not in group_of or find(g) != find(group_of[p])}
        group = None
        if index in capable:
            for candidate in sorted(here - left):
                if any(candidate in feeders(g) for g in left):
                    continue  # candidate -> g -> ... -> this layer -> candidate: a cycle
                if group is None:
                    group = candidate
                elif candidate not in feeders(group) and group not in feeders(candidate):
                    parent[candidate] = group
                    entering[group] |= entering.pop(candidate)
            if group is None:
                group = parent.setdefault(index, index)
                entering[group] = set()
            entering[group] |= left - {group}
            group_of[index] = group
        ancestors.append({find(g) for p in preds for g in ancestors[p]} | ({group} if group is not None else set()))
    groups = {}
    for index in sorted(group_of):
        groups.setdefault(find(group_of[index]), []).append(index)
    return sorted(groups.values(), key=lambda members: members[0])


class ProfileSim(BaseSim):
    def __init__(self, sim):
        super().__init__(sim)
        self.shapes = {}
        self.extra_memory_target = 1.0

    def set_shape(self, input, min, opt, max):
        low, mid, high = (list(min), list(opt), list(max))
        if not len(low) == len(mid) == len(high) or any(not a <= b <= c for a, b, c in zip(low, mid, high)):
            self.sim.emit("ERROR", "setDimensions: min <= opt <= max does not hold for {}".format(input))
            return
        self.shapes[input] = (low, mid, high)

    def get_shape(self, input):
        return [self.sim.dims(d) for d in self.shapes.get(input, ())]


class BuilderSim(BaseSim):
    def __init__(self, sim, logger):
        super().__init__(sim)
        self.logger = logger
        self.num_DLA_cores = sim.dla_cores
        self.max_DLA_batch_size = 4096 if sim.dla_cores else 1  # [GUIDE] "The maximum supported batch size is 4096"
        self.platform_has_fast_fp16 = True
        self.platform_has_fast_int8 = True
        self.platform_has_tf32 = sim.tf32
        self.max_threads = 1

    def create_network(self, flags=0):
        return self.sim.new("INetworkDefinition", NetworkSim(self.sim, self, int(flags)))

    def create_builder_config(self):
        return self.sim.new("IBuilderConfig", ConfigSim(self.sim))

    def is_network_supported(self, network, config):
        return impl(network).onnx is not None

    def _fail(self, message):
        self.sim.emit("ERROR", message, self.logger)
        return None

    def _place_on_dla(self, net, cfg):
        """Layers marked for DLA that it can run, grouped into subgraphs at most DLA_SUBGRAPHS_PER_CORE per core;
        the rest on the GPU when GPU_FALLBACK allows ([GUIDE] "GPU Fallback Mode"). None after an error."""
        sim, dla = self.sim, self.sim.member("DeviceType", "DLA")
        fallback = cfg.has("GPU_FALLBACK")
        wanted = [i for i, layer in enumerate(net.layers) if cfg.device_types.get(layer.name, cfg.default_device_type) == dla]
        if sim.dla is None:  # [GUIDE] GPU fallback reasons: "There are no DLA engines available on the platform"
            if not fallback:
                return self._fail("DLA is not available on this platform and GPU fallback is disabled")
            return {"core": None, "islands": [], "gpu": [layer.name for layer in net.layers]}
        if not 0 <= cfg.DLA_core < self.num_DLA_cores:
            return self._fail("DLA core {} requested, this device has {}".format(cfg.DLA_core, self.num_DLA_cores))
        capable = set()
        for index in wanted:
            layer = net.layers[index]
            reason = dla_refusal(impl(layer), sim.dla)
            if reason is None:
                capable.add(index)
                continue
            sim.emit("WARNING", "{}: {}".format(layer.name, reason), self.logger)
            if not fallback:
                return self._fail("Layer {} cannot run on DLA and GPU fallback is disabled".format(layer.name))
            sim.emit("WARNING", "Default DLA is enabled but layer {} is not supported on DLA, falling back to GPU."
                     .format(layer.name), self.logger)
        islands = dla_partition([impl(layer) for layer in net.layers], capable)
        for island in islands[DLA_SUBGRAPHS_PER_CORE:]:
            for index in island:
                if not fallback:
                    return self._fail("DLA supports only {} subgraphs per DLA core and GPU fallback is disabled".format(
                        DLA_SUBGRAPHS_PER_CORE))
                sim.emit("WARNING", "DLA supports only {} subgraphs per DLA core. Switching to GPU for layer {}".format(
                    DLA_SUBGRAPHS_PER_CORE, net.layers[index].name), self.logger)
        islands = [[net.layers[i].name for i in island] for island in islands[:DLA_SUBGRAPHS_PER_CORE]]
        on_dla = {name for island in islands for name in island}
        gpu = [layer.name for layer in net.layers if layer.name not in on_dla]
        sim.emit("INFO", "---------- Layers Running on DLA ----------", self.logger)
        for island in islands:
            sim.emit("INFO", "[DlaLayer] {{ForeignNode[{}...{}]}}".format(island[0], island[-1]), self.logger)
        sim.emit("INFO", "---------- Layers Running on GPU ----------", self.logger)
        for name in gpu:
            sim.emit("INFO", "[GpuLayer] {}".format(name), self.logger)
        return {"core": cfg.DLA_core, "islands": islands, "gpu": gpu}

    def create_optimization_profile(self):
        return self.sim.new("IOptimizationProfile", ProfileSim(self.sim))

    def build_serialized_network(self, network, config):
        net, cfg, sim = impl(network), impl(config), self.sim
        if net.onnx is None or not net.outputs:
            return self._fail("Network must have at least one output")
        fp16, int8 = cfg.has("FP16"), cfg.has("INT8")
        quantized = any(impl(layer).kind == "QUANTIZE" for layer in net.layers)
        if net.strongly_typed and (fp16 or int8):
            return self._fail("IBuilderConfig: BuilderFlag FP16/INT8 cannot be set on a strongly typed network; "
                              "types come from the network")
        placement = None
        dla = sim.member("DeviceType", "DLA")
        if cfg.default_device_type == dla or dla in cfg.device_types.values():
            if not (fp16 or int8):
                return self._fail("DLA requires FP16 or INT8 precision")
            if quantized:
                return self._fail("DLA does not support explicitly quantized (Q/DQ) networks in this release")
            placement = self._place_on_dla(net, cfg)
            if placement is None:
                return None
        for tensor in net.inputs:
            if any(d < 0 for d in impl(tensor).dims_shape) and not any(tensor.name in impl(p).shapes for p in cfg.profiles):
                # TensorRT 8.5-10: "Error Code 4: Internal Error (Network has dynamic or shape inputs, but no
                # optimization profile has been defined.)"
                return self._fail("Network has dynamic or shape inputs, but no optimization profile has been defined.")
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
        pinned = sorted(layer.name for layer in net.layers if impl(layer).precision_is_set)
        signatures = {hashlib.sha1("{}|{}|{}|{}|{}".format(impl(layer).node.op_type, layer.name,
                                                            [list(t.shape) for t in net.inputs], fp16, int8).encode()).hexdigest()
                      for layer in net.layers}
        hits = misses = 0
        if cfg.timing_cache is not None and not cfg.has("DISABLE_TIMING_CACHE"):
            cache = impl(cfg.timing_cache)
            hits, misses = len(signatures & cache.entries), len(signatures - cache.entries)
            cache.entries |= signatures
        header = {
            "tensorrt": sim.version, "fp16": fp16, "int8": int8, "quantized": quantized,
            "strongly_typed": net.strongly_typed, "obey_precision": cfg.has("OBEY_PRECISION_CONSTRAINTS"),
            "pinned_fp16": pinned, "pools": cfg.pools, "optimization_level": cfg.builder_optimization_level,
            "dla_core": placement["core"] if placement is not None else None, "placement": placement,
            "profiling_verbosity": getattr(cfg.profiling_verbosity, "name", "LAYER_NAMES_ONLY"),
            "network": [{"name": layer.name, "kind": impl(layer).kind,
                         "inputs": [[t.name, list(t.shape)] for t in impl(layer).inputs],
                         "outputs": [[t.name, list(t.shape)] for t in impl(layer).outputs]} for layer in net.layers],
            "calibration": calibration, "timing_cache": {"hits": hits, "misses": misses},
            "layers": len(net.layers), "layer_types": strongly_typed_layer_types(net),
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


CALIBRATION_NAMES = {"ENTROPY_CALIBRATION_2": "EntropyCalibration2", "ENTROPY_CALIBRATION": "EntropyCalibration",
                     "MINMAX_CALIBRATION": "MinMaxCalibration", "LEGACY_CALIBRATION": "LegacyCalibration"}
HISTOGRAM_BINS, INT8_LEVELS = 2048, 128


def cache_tag(version, algorithm):
    """A TensorRT calibration cache's first line: TRT-<NV_TENSORRT_VERSION>-<algorithm>, the version being
    major * 1000 + minor * 100 + patch (NvInferVersion.h), e.g. TRT-8502-EntropyCalibration2 for 8.5.2."""
    major, minor, patch = (int(v) for v in (version.split(".") + ["0", "0"])[:3])
    return "TRT-{}-{}".format(major * 1000 + minor * 100 + patch, CALIBRATION_NAMES.get(algorithm, algorithm))


def cache_text(tag, scales):
    """The cache as TensorRT writes it: the tag line, then `tensor: scale` with the scale's float32 bits in hex."""
    return tag + "\n" + "".join("{}: {}\n".format(name, struct.pack(">f", scale).hex()) for name, scale in sorted(scales.items()))


def cache_scales(text, tag):
    """{tensor: scale} of a cache written for ``tag``; None for another TensorRT or algorithm, or garbage."""
    lines = text.splitlines()
    if not lines or lines[0] != tag:
        return None
    try:
        return {name: struct.unpack(">f", bytes.fromhex(value.strip()))[0]
                for name, value in (line.rsplit(":", 1) for line in lines[1:] if line.strip())}
    except (ValueError, struct.error):
        return None


def activation_model(onnx_bytes):
    """The network with every float tensor a layer makes exposed as a graph output (what calibration observes)."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_model_from_string(onnx_bytes)
    listed = {o.name for o in proto.graph.output}
    made = {name for node in proto.graph.node for name in node.output}
    for name, (_, elem) in inferred_types(proto).items():
        if elem == TensorProto.FLOAT and name in made and name not in listed:
            proto.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return proto.SerializeToString()


def entropy_threshold(histogram, amax):
    """TensorRT's entropy calibration (NVIDIA, "8-bit Inference with TensorRT", GTC 2017), as NVIDIA's reference
    implementation does it (NVIDIA/TensorRT tools/pytorch-quantization/pytorch_quantization/calib/histogram.py,
    _compute_amax_entropy, release/8.5): over the |x| histogram, with the zero bin (ReLU's mass of exact zeros) set
    to its neighbour's count, the clipping threshold whose 128-level quantization loses the least information
    (KL divergence; the last of equal minima)."""
    counts = histogram.astype(np.float64)
    counts[0] = counts[1]
    tail = np.cumsum(counts[::-1])[::-1]
    best, best_bins = np.inf, HISTOGRAM_BINS
    for bins in range(INT8_LEVELS, HISTOGRAM_BINS + 1, 16):  # every 16th candidate (NVIDIA's stride is 1): a speed-up
        reference = counts[:bins].copy()
        if bins < HISTOGRAM_BINS:
            reference[-1] += tail[bins]  # values beyond the threshold clip to it
        group = np.arange(bins) * INT8_LEVELS // bins  # which of the 128 levels each bin falls into
        used = counts[:bins] > 0
        level_sums = np.bincount(group, weights=counts[:bins], minlength=INT8_LEVELS)
        level_used = np.bincount(group, weights=used, minlength=INT8_LEVELS)
        candidate = np.where(used, level_sums[group] / np.maximum(level_used[group], 1), 0.0)
        if reference.sum() == 0 or candidate.sum() == 0:
            continue
        p, q = reference / reference.sum(), candidate / candidate.sum()
        keep = p > 0
        if np.any(q[keep] == 0):
            continue  # infinite divergence
        divergence = float(np.sum(p[keep] * np.log(p[keep] / q[keep])))
        if divergence <= best:
            best, best_bins = divergence, bins
    return best_bins * amax / HISTOGRAM_BINS


def calibrate_scales(onnx_bytes, batches, input_name, algorithm):
    """Run the network on the calibration batches and derive each activation's INT8 scale (threshold / 127):
    min-max takes the largest |x| seen, the entropy calibrators the KL threshold of the |x| histogram."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(activation_model(onnx_bytes), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def observe():
        for batch in batches:
            for name, value in zip([input_name] + names, [batch] + session.run(None, {input_name: batch})):
                if np.asarray(value).dtype == np.float32:
                    yield name, np.abs(np.asarray(value)).ravel()

    amax = {}
    for name, values in observe():
        amax[name] = max(amax.get(name, 0.0), float(values.max()) if values.size else 0.0)
    if algorithm in ("MINMAX_CALIBRATION", "LEGACY_CALIBRATION"):
        return {name: value / 127.0 for name, value in amax.items() if value > 0}
    histograms = {}
    for name, values in observe():  # a second pass, the histogram ranges now known
        if amax[name] > 0:
            found, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, amax[name]))
            histograms[name] = histograms.get(name, 0) + found
    return {name: entropy_threshold(found, amax[name]) / 127.0 for name, found in histograms.items()}


def run_calibration(sim, net, calibrator, logger):
    """TensorRT's calibration loop: read the cache first; else get_batch_size, get_batch(names) until None or an
    error, run the network on those batches for every activation's scale, then write_calibration_cache. Returns a
    summary (with the scales the engine computes with) or None when no scale was found."""
    algorithm, ok = _call_python(sim, logger, calibrator, "get_algorithm")
    algorithm = algorithm.name if ok and algorithm is not None else "ENTROPY_CALIBRATION_2"
    tag = cache_tag(sim.version, algorithm)
    cached, ok = _call_python(sim, logger, calibrator, "read_calibration_cache")
    if ok and cached:
        scales = cache_scales(bytes(cached).decode("latin-1"), tag)
        if scales:
            sim.events.append(("calibration", "cache"))
            return {"source": "cache", "batches": 0, "algorithm": algorithm, "scales": scales}
        sim.emit("WARNING", "Calibration cache from another TensorRT or algorithm: ignored", logger)
    batch_size, ok = _call_python(sim, logger, calibrator, "get_batch_size")
    if not ok:
        return None
    names = [t.name for t in net.inputs]
    shape = list(net.inputs[0].shape)
    dtype = TRT_TO_NUMPY[net.inputs[0].dtype.name]
    batches = []
    while True:
        pointers, ok = _call_python(sim, logger, calibrator, "get_batch", names)
        if not ok or not pointers:
            break
        batches.append(read_device(pointers[0], shape, dtype))
    sim.events.append(("calibration", len(batches)))
    if not batches:
        return None
    scales = calibrate_scales(net.onnx, batches, names[0], algorithm)
    _call_python(sim, logger, calibrator, "write_calibration_cache", cache_text(tag, scales).encode("latin-1"))
    return {"source": "batches", "batches": len(batches), "batch_size": batch_size, "algorithm": algorithm,
            "scales": scales}


def fake_quantized(onnx_bytes, scales, pinned):
    """What a classic (calibrated) INT8 engine computes, for ONNX Runtime: each convolution outside ``pinned`` reads
    its input through INT8 at the calibrated scale (QuantizeLinear/DequantizeLinear) and its weights quantized per
    output channel, symmetric (TensorRT's implicit INT8: per-channel weights, per-tensor activations). A convolution
    whose input has no scale stays in float, as TensorRT falls back for a tensor without a dynamic range."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_model_from_string(onnx_bytes)
    weights = {t.name: t for t in proto.graph.initializer}
    nodes, quantized = [], {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.name not in pinned and node.input[0] in scales and node.input[1] in weights:
            source = node.input[0]
            if source not in quantized:
                quantized[source] = source + "_int8"
                scale = numpy_helper.from_array(np.array(scales[source], np.float32), source + "_int8_scale")
                zero = numpy_helper.from_array(np.array(0, np.int8), source + "_int8_zero")
                proto.graph.initializer.extend([scale, zero])
                nodes += [helper.make_node("QuantizeLinear", [source, scale.name, zero.name], [source + "_int8_q"]),
                          helper.make_node("DequantizeLinear", [source + "_int8_q", scale.name, zero.name], [quantized[source]])]
            kernel = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # (out, in, kh, kw)
            step = np.maximum(np.abs(kernel).reshape(len(kernel), -1).max(axis=1), 1e-30) / 127.0
            step = step.reshape((-1,) + (1,) * (kernel.ndim - 1))
            fake = numpy_helper.from_array((np.clip(np.round(kernel / step), -127, 127) * step).astype(np.float32),
                                           node.input[1] + "_int8_" + node.name.replace("/", "_"))
            proto.graph.initializer.append(fake)
            node.input[0], node.input[1] = quantized[source], fake.name
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto.SerializeToString()


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
        self._dla_core = -1
        self.num_DLA_cores = sim.dla_cores
        self.max_threads = 1

    @property
    def DLA_core(self):
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, core):
        if self.sim.dla_cores:  # NvInferRuntime.h (release/8.5) setDLACore: "if getNbDLACores() returns 0, then
            self._dla_core = core  # this function does nothing"

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
        self.num_layers = len(self.engine_layers())
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

    def create_engine_inspector(self):
        return self.sim.new("EngineInspector", InspectorSim(self.sim, self))

    def engine_layers(self):
        """The engine's layers as the inspector lists them (DETAILED): a DLA subgraph is one
        "{ForeignNode[first...last]}" layer between the "to nvm" / "from nvm" copies TensorRT adds around it
        (the names trtexec's per-layer profile shows for DLA engines, NVIDIA/TensorRT#3143); every GPU layer is
        itself (the simulation fuses nothing)."""
        network, placement = self.header["network"], self.header["placement"] or {"islands": []}
        island_of = {name: k for k, island in enumerate(placement["islands"]) for name in island}
        produced = {out[0]: layer["name"] for layer in network for out in layer["outputs"]}
        consumers = {}
        for layer in network:
            for name, _ in layer["inputs"]:
                consumers.setdefault(name, []).append(layer["name"])
        outputs = {entry["name"] for entry in self.io if entry["mode"] == "OUTPUT"}
        listed, done = [], set()
        for layer in network:
            k = island_of.get(layer["name"])
            if k is None:
                listed.append({"Name": layer["name"], "LayerType": LAYER_TYPE_NAMES.get(layer["kind"], layer["kind"].title()),
                               "Inputs": [{"Name": n, "Dimensions": d} for n, d in layer["inputs"]],
                               "Outputs": [{"Name": n, "Dimensions": d} for n, d in layer["outputs"]]})
                continue
            if k in done:
                continue
            done.add(k)
            members = set(placement["islands"][k])
            ins = sorted({n for m in network if m["name"] in members for n, _ in m["inputs"]
                          if produced.get(n) not in members})
            outs = sorted({n for m in network if m["name"] in members for n, _ in m["outputs"]
                           if n in outputs or any(c not in members for c in consumers.get(n, ()))})
            listed += [{"Name": "{} to nvm".format(n), "LayerType": "Reformat"} for n in ins]
            listed.append({"Name": "{{ForeignNode[{}...{}]}}".format(placement["islands"][k][0], placement["islands"][k][-1]),
                           "LayerType": DLA_LAYER_TYPE, "Inputs": [{"Name": n} for n in ins],
                           "Outputs": [{"Name": n} for n in outs]})
            listed += [{"Name": "{} from nvm".format(n), "LayerType": "Reformat"} for n in outs]
        return listed

    def serialize(self):
        body = json.dumps(self.header).encode()
        return self.sim.new("IHostMemory", HostMemorySim(self.sim, PLAN_MAGIC + struct.pack("<I", len(body)) + body + self.onnx_bytes))

    def run(self, feeds):
        """The plan's ONNX on ONNX Runtime CPU; FP16-flagged weakly typed plans through the FP16 emulation."""
        if self.session is None:
            import onnxruntime

            model = self.onnx_bytes
            calibration = self.header.get("calibration")
            if calibration and calibration.get("scales"):  # classic INT8: computes at the calibrated scales
                model = fake_quantized(model, calibration["scales"], set(self.header["pinned_fp16"]))
            elif self.header["fp16"] and not self.header["quantized"]:
                model = half_precision(model)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            if self.header["quantized"] and "HALF" in (self.header.get("layer_types") or {}):
                # an FP16 Q/DQ ONNX runs as written: ONNX Runtime's QDQ fusion makes QLinear* kernels that take float32
                # scales only and would refuse the file (a CPU-provider limit, not TensorRT's)
                options.add_session_config_entry("session.disable_quant_qdq", "1")
            self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return self.session.run(None, feeds)


# The LayerType the simulated inspector gives a DLA subgraph. Unverified against a device (see docs/simulator.md);
# sanet.engines reads placement through the same name.
DLA_LAYER_TYPE = "DLA"
LAYER_TYPE_NAMES = {"CONVOLUTION": "CaskConvolution", "POOLING": "CaskPooling", "ELEMENTWISE": "ElementWise",
                    "ACTIVATION": "Activation", "MATRIX_MULTIPLY": "MatrixMultiply", "RESIZE": "Resize",
                    "SHUFFLE": "Shuffle", "REDUCE": "Reduce", "CONCATENATION": "Concatenation", "SLICE": "Slice"}


class InspectorSim(BaseSim):
    """IEngineInspector: what it prints depends on the profiling verbosity the engine was built with
    (NvInferRuntime.h, release/8.5: kLAYER_NAMES_ONLY names only, kNONE nothing, kDETAILED names and parameters)."""

    def __init__(self, sim, engine):
        super().__init__(sim)
        self.engine_sim = engine
        self.execution_context = None
        self.error_recorder = None

    def _layers(self):
        verbosity = self.engine_sim.header["profiling_verbosity"]
        if verbosity == "NONE":
            return []
        layers = self.engine_sim.engine_layers()
        return layers if verbosity in ("DETAILED", "VERBOSE") else [layer["Name"] for layer in layers]

    def get_engine_information(self, format):
        layers = self._layers()
        if format.name == "ONELINE":
            return "\n".join(layer if isinstance(layer, str) else layer["Name"] for layer in layers)
        return json.dumps({"Layers": layers, "Bindings": [entry["name"] for entry in self.engine_sim.io]})

    def get_layer_information(self, layer_index, format):
        layers = self._layers()
        if not 0 <= layer_index < len(layers):
            self.sim.emit("ERROR", "getLayerInformation: layer index {} out of range".format(layer_index))
            return ""
        layer = layers[layer_index]
        if isinstance(layer, str) or format.name == "ONELINE":
            return layer if isinstance(layer, str) else layer["Name"]
        return json.dumps(layer)


def strongly_typed_layer_types(net):
    """{TensorRT DataType name: layer count} of a strongly typed network, each layer typed as its ONNX output: "In
    strongly typed networks, TensorRT infers a type for each intermediate and output tensor from the network input
    types and the operator type specification" (TensorRT Developer Guide, "Strongly Typed Networks", 10.x and 11.x;
    no FP16 builder flag then). None for a weakly typed network, whose layer precisions the builder picks from its
    flags."""
    if not net.strongly_typed:
        return None
    counts = {}
    for node in net.proto.graph.node:
        name = ONNX_TO_TRT.get(net.types.get(node.output[0]) if node.output else None, "OTHER")
        counts[name] = counts.get(name, 0) + 1
    return counts


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


def simulate(path, platform=None):
    """The ``tensorrt`` module of listing ``path`` on ``platform`` (x86, xavier, orin; default_platform if None)."""
    return Simulation(path, platform)


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


