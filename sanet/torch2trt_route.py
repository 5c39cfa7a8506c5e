"""The torch2trt route: the reference repo's speed method (kaigelee/SANet ``Tensorrt_speed_eval``, torch2trt FP16).

torch2trt (NVIDIA-AI-IOT/torch2trt) converts a module by running its forward once with a TensorRT converter hooked
onto each torch function or method it knows, by attribute name (``ConversionHook`` in torch2trt/torch2trt.py). A call
without a converter only prints a warning; its output carries no TensorRT tensor, so the next converter adds it as a
constant: the value computed from the example input is frozen into the engine, which builds and is wrong.

Read at commit 4e820ae (docs/torch2trt.md; tests/data/torch2trt_converters.txt lists its converters; none of its
code is copied here), SANet's forward meets four calls it has no converter for (``F.pixel_shuffle``,
``Tensor.amax``, ``Tensor.pow``, ``Tensor.detach``) and one it converts wrongly: ``torch.matmul`` adds a constant
operand with its leading 1-dims dropped (``add_missing_trt_tensors``), so SCE's 2-D matrix meets a 4-D tensor, and
TensorRT's IMatrixMultiplyLayer needs operands of equal rank. This module supplies:

* ``CONVERTERS``: converters for those calls, written against TensorRT's network API; SCE's resampling
  (``sanet.model.separable_map``) is converted as a whole, its matrices as constants of the input's rank.
  ``register_converters()`` registers them with torch2trt's own ``tensorrt_converter`` decorator;
* ``ConversionTrace``: replays a forward under torch2trt's hooking rules (no TensorRT needed) and lists every call
  that would not convert, and every matmul whose operands TensorRT would get at unequal ranks;
* ``convert()``: refuses a model the trace finds a problem in, else converts it with torch2trt.

torch2trt and TensorRT are imported only inside the functions that use them.
"""
import contextlib
import copy
import importlib

import numpy as np
import torch

from .errors import SanetError, require

TORCH2TRT_HINT = "build torch2trt from NVIDIA-AI-IOT/torch2trt against this TensorRT (no PyPI release)"
PRECISIONS = ("fp32", "fp16")  # torch2trt's fp16_mode off / on
# Reads of a tensor's metadata yield Python values, never tensors, so nothing is frozen: torch2trt turns .shape and
# .size() into shape layers and lets dim(), .dtype and .device pass.
METADATA = {"torch.Tensor.shape", "torch.Tensor.size", "torch.Tensor.dim", "torch.Tensor.ndim", "torch.Tensor.dtype",
            "torch.Tensor.device"}
# The names torch2trt's own matmul converter hooks (convert_matmul at the pinned commit; constants lose leading 1-dims).
TORCH2TRT_MATMULS = {"torch.matmul", "torch.Tensor.__matmul__"}


# ----------------------------------------------------------------------------------------------
# Converters: each takes torch2trt's conversion context (``method_args``, ``method_kwargs``, ``method_return`` and
# ``network``, a TensorRT INetworkDefinition) and sets ``_trt`` on the torch output, as torch2trt's converters do.


def _arg(ctx, name, position, default=None):
    if name in ctx.method_kwargs:
        return ctx.method_kwargs[name]
    return ctx.method_args[position] if len(ctx.method_args) > position else default


def _network_tensor(tensor, call):
    """The TensorRT tensor behind a torch tensor of the network; a constant here means an earlier call was frozen."""
    trt_tensor = getattr(tensor, "_trt", None)
    if trt_tensor is None:
        raise SanetError("torch2trt: {} got a tensor that is not part of the TensorRT network (an earlier call had no "
                         "converter, so its value was frozen): run ConversionTrace on the model to find it".format(call))
    return trt_tensor


def _constant(ctx, array, rank, dtype):
    """A TensorRT constant of ``array`` with leading 1-dims up to ``rank`` (IMatrixMultiplyLayer and IElementWiseLayer
    need operands of equal rank; they broadcast along 1-dims only)."""
    array = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    shape = (1,) * (rank - array.ndim) + array.shape
    return ctx.network.add_constant(shape, array.reshape(shape)).get_output(0)


def _numpy_dtype(tensor):
    return torch.empty((), dtype=tensor.dtype).numpy().dtype


def convert_separable_map(ctx):
    """sanet.model.separable_map(x, rows, cols) = rows @ x @ cols^T: (B, C, h, w) -> (B, C, rows, cols), as two
    IMatrixMultiplyLayers against constants (1, 1, r, h) and (1, 1, w, c), the same MatMuls as the ONNX export."""
    import tensorrt as trt

    x, rows, cols = (_arg(ctx, name, index) for index, name in enumerate(("x", "rows", "cols")))
    x_trt = _network_tensor(x, "separable_map")
    rank, dtype = x.dim(), _numpy_dtype(x)
    rows_trt = _constant(ctx, rows.detach().cpu().numpy(), rank, dtype)  # (1, 1, r, h)
    cols_t = _constant(ctx, cols.detach().cpu().numpy().T, rank, dtype)  # (1, 1, w, c)
    none = trt.MatrixOperation.NONE
    left = ctx.network.add_matrix_multiply(rows_trt, none, x_trt, none).get_output(0)  # (B, C, r, w)
    ctx.method_return._trt = ctx.network.add_matrix_multiply(left, none, cols_t, none).get_output(0)


def convert_pixel_shuffle(ctx):
    """F.pixel_shuffle(x, r): (B, C*r*r, H, W) -> (B, C, H*r, W*r) as two IShuffleLayers: reshape to
    (B, C, r, r, H, W), transpose to (B, C, H, r, W, r), reshape (what ONNX's DepthToSpace in CRD mode does)."""
    x = _arg(ctx, "input", 0)
    factor = int(_arg(ctx, "upscale_factor", 1))
    out = ctx.method_return
    # Sizes from the output: it has no TensorRT tensor yet, so torch2trt's shape wrapping leaves its .shape plain.
    channels, height, width = int(out.shape[1]), int(out.shape[2]) // factor, int(out.shape[3]) // factor
    split = ctx.network.add_shuffle(_network_tensor(x, "pixel_shuffle"))
    split.reshape_dims = (0, channels, factor, factor, height, width)  # 0: the batch, copied from the input
    split.second_transpose = (0, 1, 4, 2, 5, 3)
    merge = ctx.network.add_shuffle(split.get_output(0))
    merge.reshape_dims = (0, channels, height * factor, width * factor)
    out._trt = merge.get_output(0)


def convert_amax(ctx):
    """Tensor.amax(dim, keepdim) as an IReduceLayer(MAX) over the axes bitmask of ``dim`` (all axes when empty)."""
    import tensorrt as trt

    x = ctx.method_args[0]
    rank = x.dim()
    dims = _arg(ctx, "dim", 1, ())
    dims = (dims,) if isinstance(dims, int) else tuple(dims) or tuple(range(rank))
    axes = sum(1 << axis for axis in {int(d) % rank for d in dims})
    layer = ctx.network.add_reduce(_network_tensor(x, "Tensor.amax"), trt.ReduceOperation.MAX, axes,
                                   bool(_arg(ctx, "keepdim", 2, False)))
    ctx.method_return._trt = layer.get_output(0)


def convert_pow(ctx):
    """Tensor.pow(exponent) as an IElementWiseLayer(POW); a number or constant exponent becomes a constant of x's rank."""
    import tensorrt as trt

    x, exponent = ctx.method_args[0], _arg(ctx, "exponent", 1)
    rank, dtype = x.dim(), _numpy_dtype(x)
    if isinstance(exponent, torch.Tensor) and getattr(exponent, "_trt", None) is not None:
        if exponent.dim() != rank:
            raise SanetError("torch2trt: Tensor.pow with an exponent tensor of rank {} for a base of rank {}".format(
                exponent.dim(), rank))
        exponent_trt = exponent._trt
    else:
        value = exponent.detach().cpu().numpy() if isinstance(exponent, torch.Tensor) else exponent
        exponent_trt = _constant(ctx, value, rank, dtype)
    layer = ctx.network.add_elementwise(_network_tensor(x, "Tensor.pow"), exponent_trt, trt.ElementWiseOperation.POW)
    ctx.method_return._trt = layer.get_output(0)


def convert_detach(ctx):
    """Tensor.detach(): the same values (gradients do not exist in an engine), so the same TensorRT tensor."""
    ctx.method_return._trt = _network_tensor(ctx.method_args[0], "Tensor.detach")


CONVERTERS = {
    "sanet.model.separable_map": convert_separable_map,
    "torch.nn.functional.pixel_shuffle": convert_pixel_shuffle,
    "torch.Tensor.amax": convert_amax,
    "torch.Tensor.pow": convert_pow,
    "torch.Tensor.detach": convert_detach,
}


def require_torch2trt():
    """Import torch2trt, or raise a SanetError saying what is missing. torch2trt (4e820ae) creates networks with
    NetworkDefinitionCreationFlag.EXPLICIT_BATCH and calibrates with TensorRT's calibrators, both gone in TensorRT 11
    (its import fails there), so that release is refused first, in one line."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None  # torch2trt's own import says so below
    if trt is not None and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        raise SanetError("torch2trt cannot drive TensorRT {} (no explicit-batch, weakly typed networks there): use "
                         "sanet-export's engines on this release, or TensorRT 8.5-10 for the torch2trt rows".format(
                             trt.__version__))
    return require("torch2trt", TORCH2TRT_HINT)


def register_converters():
    """Register CONVERTERS with torch2trt's ``tensorrt_converter`` (idempotent; needs torch2trt and TensorRT)."""
    require_torch2trt()
    from torch2trt.torch2trt import tensorrt_converter

    for name, converter in CONVERTERS.items():
        tensorrt_converter(name)(converter)


def torch2trt_converters():
    """Names of the real converters registered with the installed torch2trt (ours included once registered)."""
    require_torch2trt()
    from torch2trt.torch2trt import CONVERTERS as registered

    return sorted(name for name, entry in registered.items() if entry["is_real"] and isinstance(name, str))


# ----------------------------------------------------------------------------------------------
# The trace: torch2trt's hooking rules without TensorRT.


def _resolve(name):
    """'torch.Tensor.__add__' -> (torch.Tensor, '__add__'): the longest importable module prefix, then attributes
    (as torch2trt's get_module_qualname); None where this torch lacks it (torch2trt then disables that converter)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:-1]:
            owner = getattr(owner, attr, None)
        return (owner, parts[-1]) if owner is not None and hasattr(owner, parts[-1]) else None
    return None


def call_name(func):
    """A torch function or method as a dotted name: TensorBase.amax -> 'torch.Tensor.amax'."""
    owner = getattr(func, "__self__", None)
    if type(owner).__name__ == "getset_descriptor":  # a tensor property read, such as .shape
        return "torch.Tensor." + owner.__name__
    head, _, tail = (getattr(func, "__qualname__", None) or "").partition(".")
    if head in ("TensorBase", "_TensorBase", "Tensor") and tail:  # _TensorBase before torch 2.2
        return "torch.Tensor." + tail
    name = getattr(func, "__name__", None) or repr(func)
    if head == "_VariableFunctionsClass":
        return "torch." + name
    return "{}.{}".format(getattr(func, "__module__", None) or "torch", name)


def _tensors(value):
    """The tensors in a (nested) argument or result."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class ConversionTrace:
    """What torch2trt would make of one forward, found without TensorRT.

    The trace hooks each name in ``converters`` the way torch2trt does (the attribute is replaced during the forward;
    the outermost hooked call holds a lock, so calls inside it are part of its conversion), and a TorchFunctionMode
    sees every torch function and tensor method called. Tensors derived from the input through converted calls are
    network tensors (torch2trt's ``_trt``); everything else is a constant. ``problems`` lists:

    * each call outside any converted call (metadata reads aside): torch2trt would warn and freeze its output;
    * each matmul reaching torch2trt's own converter with operands of unequal TensorRT rank (a constant operand
      loses its leading 1-dims there): TensorRT's IMatrixMultiplyLayer refuses it;
    * an output that is not a network tensor.
    """

    def __init__(self, converters):
        self.converters = sorted(set(converters))
        self.converted, self.unconverted = {}, {}  # name -> calls
        self.rank_errors, self.output_errors = [], []
        self.lock = None
        self._network = {}  # id -> tensor, kept alive for the trace so ids stay unique

    @property
    def problems(self):
        found = ["no converter for {} ({} call{})".format(name, count, "s" if count > 1 else "")
                 for name, count in sorted(self.unconverted.items())]
        return found + self.rank_errors + self.output_errors

    def is_network(self, tensor):
        return self._network.get(id(tensor)) is tensor

    def _mark(self, value):
        for tensor in _tensors(value):
            self._network[id(tensor)] = tensor

    def _trt_rank(self, tensor):
        """The rank TensorRT sees: a network tensor keeps its rank; torch2trt adds a constant with its leading
        1-dims dropped (add_missing_trt_tensors, torch2trt/torch2trt.py at the pinned commit)."""
        if self.is_network(tensor):
            return tensor.dim()
        shape = list(tensor.shape)
        while shape and shape[0] == 1:
            shape.pop(0)
        return len(shape)

    def _hook(self, name, original):
        trace = self

        def hooked(*args, **kwargs):
            if trace.lock is not None:  # inside another converted call: torch2trt converts only the outermost
                return original(*args, **kwargs)
            trace.lock = name
            try:
                out = original(*args, **kwargs)
                inputs = list(_tensors((args, kwargs)))
                trace.converted[name] = trace.converted.get(name, 0) + 1
                if name in TORCH2TRT_MATMULS and len(inputs) == 2:
                    ranks = [trace._trt_rank(t) for t in inputs]
                    if ranks[0] != ranks[1]:
                        trace.rank_errors.append("{} of shapes {} and {}: torch2trt gives TensorRT's IMatrixMultiplyLayer "
                                                 "ranks {} and {}, which must be equal".format(
                                                     name, tuple(inputs[0].shape), tuple(inputs[1].shape), *ranks))
                if any(trace.is_network(t) for t in inputs):
                    trace._mark(out)
                return out
            finally:
                trace.lock = None
        return hooked

    @contextlib.contextmanager
    def _hooks(self):
        patched = []
        try:
            for name in self.converters:
                found = _resolve(name)
                if found is None:
                    continue
                owner, attr = found
                patched.append((owner, attr, getattr(owner, attr), attr in vars(owner)))
                setattr(owner, attr, self._hook(name, patched[-1][2]))
            yield
        finally:
            for owner, attr, original, own in reversed(patched):
                if own:
                    setattr(owner, attr, original)
                else:
                    delattr(owner, attr)

    def _mode(self):
        from torch.overrides import TorchFunctionMode

        trace = self

        class Calls(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if trace.lock is None:
                    name = call_name(func)
                    if name not in METADATA:
                        trace.unconverted[name] = trace.unconverted.get(name, 0) + 1
                return func(*args, **(kwargs or {}))
        return Calls()

    def run(self, model, example):
        """Trace ``model(example)`` (eval, no grad; run it once before, as torch2trt does, so that the forward holds no
        first-call work) and return self."""
        self._mark(example)
        with torch.no_grad(), self._hooks(), self._mode():
            out = model(example)
        self.output_errors = ["the output {} is a constant, not computed by the network".format(tuple(t.shape))
                              for t in _tensors(out) if not self.is_network(t)]
        return self


# ----------------------------------------------------------------------------------------------
# Conversion


def check_precision(precision):
    if precision not in PRECISIONS:
        raise SanetError("torch2trt converts in {}, not {}".format(" or ".join(PRECISIONS), precision))


def convert(model, resolution, precision="fp16", device="cuda"):
    """A torch2trt engine of ``model`` for (1, 3, H, W) input -> its TRTModule state dict, tensors on the host.

    The model is traced first against the installed torch2trt's converters (ours registered): a call without a
    converter would be frozen into the engine, so it is refused with the calls named instead.
    """
    check_precision(precision)
    register_converters()
    from torch2trt import torch2trt

    module = copy.deepcopy(model).eval().to(device)
    example = torch.zeros((1, 3) + tuple(resolution), device=device)
    with torch.no_grad():
        module(example)  # SCE builds its matrices for this size before any conversion hook is in place
    problems = ConversionTrace(torch2trt_converters()).run(module, example).problems
    if problems:
        raise SanetError("torch2trt would convert this model wrongly ({}): update torch2trt or sanet".format(
            "; ".join(problems)))
    with torch.no_grad():
        engine = torch2trt(module, [example], fp16_mode=precision == "fp16")
    return {k: v.cpu() if hasattr(v, "cpu") else v for k, v in engine.state_dict().items()}
