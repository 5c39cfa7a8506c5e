"""The torch2trt route: SANet's forward against the converters of a pinned torch2trt commit plus ours, and our
converters computed through TensorRT's layer semantics on NumPy (no GPU, no TensorRT, no torch2trt here).

tests/data/torch2trt_converters.txt lists the real converters of NVIDIA-AI-IOT/torch2trt at the commit its header
names, extracted from the source by the command written there.
"""
import pathlib
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sanet.errors import SanetError
from sanet.model import VARIANTS, adaptive_pool_matrix, build_model, nearest_upsample_matrix, separable_map
from sanet.torch2trt_route import CONVERTERS, ConversionTrace, call_name, check_precision, convert

PINNED = pathlib.Path(__file__).parent / "data" / "torch2trt_converters.txt"


def pinned_converters():
    lines = PINNED.read_text().splitlines()
    assert "4e820ae31b4e35d59685935223b05b2e11d47b03" in lines[0]
    return [line for line in lines if line and not line.startswith("#")]


def prepared(variant):
    """An eval SANet that ran once at the trace's size, as torch2trt runs the module before converting it."""
    torch.manual_seed(0)
    model = build_model(variant, 19, aux_head=False).eval()
    example = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        model(example)
    return model, example


def test_pinned_list_is_the_extracted_one():
    names = pinned_converters()
    assert len(names) == len(set(names)) == 213
    assert {"torch.matmul", "torch.nn.functional.conv2d", "torch.Tensor.__getitem__"} <= set(names)
    assert not set(CONVERTERS) & set(names)  # ours fill gaps only: no torch2trt converter is replaced


@pytest.mark.parametrize("variant", VARIANTS)
def test_sanet_converts_with_the_pinned_torch2trt_and_our_converters(variant):
    model, example = prepared(variant)
    trace = ConversionTrace(pinned_converters() + list(CONVERTERS)).run(model, example)
    assert trace.problems == []
    # SCE: 4 branches x (pool, upsample); two SFFs x two GeMs (amax, detach, two pows each)
    assert trace.converted["sanet.model.separable_map"] == 8
    assert trace.converted["torch.Tensor.amax"] == trace.converted["torch.Tensor.detach"] == 4
    assert trace.converted["torch.Tensor.pow"] == 8
    assert trace.converted.get("torch.nn.functional.pixel_shuffle", 0) == (variant == "sanet")
    assert "torch.matmul" not in trace.converted  # SCE's matmuls reach TensorRT only through our converter


@pytest.mark.parametrize("variant", VARIANTS)
def test_pinned_torch2trt_alone_would_freeze_values_and_break_matmul_ranks(variant):
    model, example = prepared(variant)
    trace = ConversionTrace(pinned_converters()).run(model, example)
    missing = {"torch.Tensor.amax", "torch.Tensor.pow", "torch.Tensor.detach", "torch.Tensor.to", "torch.Tensor.t"}
    assert set(trace.unconverted) == missing | ({"torch.pixel_shuffle"} if variant == "sanet" else set())
    # each separable_map: (g, h) constant @ 4-D x, then 4-D @ (w, g_w) constant; TensorRT needs equal ranks, and
    # the one-row grid's (1, h) matrix even loses its row axis to torch2trt's leading-1 stripping
    assert len(trace.rank_errors) == 16
    assert sum("ranks 2 and 4" in e or "ranks 4 and 2" in e for e in trace.rank_errors) == 15
    assert sum("ranks 1 and 4" in e for e in trace.rank_errors) == 1
    # SANet's last call is the pixel shuffle: without a converter the whole output is the example's, a constant;
    # SANet-Tiny's output stays a network tensor with the frozen GeM weights inside it
    assert len(trace.output_errors) == (variant == "sanet")


def test_trace_flags_a_constant_output_and_names_calls():
    class Frozen(torch.nn.Module):
        config = None

        def forward(self, x):
            return x.cumsum(dim=1)  # no converter: its output would be the example's value

    trace = ConversionTrace(pinned_converters()).run(Frozen(), torch.rand(1, 3, 4, 4))
    assert trace.unconverted == {"torch.Tensor.cumsum": 1} and len(trace.output_errors) == 1
    assert call_name(torch.Tensor.amax) == "torch.Tensor.amax" and call_name(F.relu) == "torch.nn.functional.relu"
    assert call_name(torch.cat) == "torch.cat"


def test_route_refuses_what_it_cannot_do(trt_sim):
    import importlib.util

    with pytest.raises(SanetError, match="fp32 or fp16"):
        check_precision("int8")
    if trt_sim.major >= 11:  # no EXPLICIT_BATCH, no calibrators: torch2trt's own import would fail
        with pytest.raises(SanetError, match="torch2trt cannot drive TensorRT 11"):
            convert(build_model("sanet", 19), (64, 128))
    elif importlib.util.find_spec("torch2trt") is None:
        with pytest.raises(SanetError, match="NVIDIA-AI-IOT/torch2trt"):
            convert(build_model("sanet", 19), (64, 128))


# ----------------------------------------------------------------------------------------------
# Our converters through TensorRT's layer semantics. Each rule below cites NvInfer.h (NVIDIA/TensorRT at tag 8.5.2,
# the Jetson's release; 10.x and 11.x state the same); the method and property names are checked against the
# release's Python API listing (tests/trtsim.py reads it) and the enums are the listing's own.


class ArrayTensor:
    """An ITensor stand-in holding its value."""

    def __init__(self, value):
        self.value = np.asarray(value)

    @property
    def shape(self):
        return self.value.shape


class ArrayLayer:
    """A layer whose output is computed from its inputs and its properties when asked for."""

    def __init__(self, api, kind, compute, *inputs):
        self.__dict__.update(api=api, kind=kind, compute=compute, inputs=inputs, props={})

    def __setattr__(self, name, value):
        names, kind = set(), self.kind
        while kind:  # properties of the class and its bases, as listed
            names |= set(self.api.classes[kind].properties)
            kind = next((b for b in self.api.classes[kind].bases if b in self.api.classes), None)
        assert name in names, "{} has no property {} in TensorRT {}".format(self.kind, name, self.api.version)
        self.props[name] = value

    def get_output(self, index):
        assert index == 0
        return ArrayTensor(self.compute(self.props, *(t.value for t in self.inputs)))


class ArrayNetwork:
    """An INetworkDefinition stand-in for the layers our converters add, computing with NumPy."""

    def __init__(self, api):
        self.api, self.layers = api, []

    def _add(self, method, args, kind, compute, *inputs):
        signatures = self.api.classes["INetworkDefinition"].methods.get(method)
        assert signatures, "INetworkDefinition.{} is not in TensorRT {}".format(method, self.api.version)
        assert any(s.params is None or len(s.params) - 1 == len(args) for s in signatures), (method, signatures)
        self.layers.append(kind)
        return ArrayLayer(self.api, kind, compute, *inputs)

    def add_constant(self, shape, weights):
        # IConstantLayer: the weights fill the given dimensions (their count is the volume).
        weights = np.asarray(weights)
        assert weights.size == int(np.prod(shape))
        return self._add("add_constant", (shape, weights), "IConstantLayer", lambda props: weights.reshape(shape))

    def add_matrix_multiply(self, a, op0, b, op1):
        # IMatrixMultiplyLayer: "The number of these extra dimensions for A and B must match"; a dimension of 1 is
        # broadcast to the other's. Our converters use MatrixOperation.NONE only.
        assert len(a.shape) == len(b.shape), "IMatrixMultiplyLayer ranks {} and {}".format(len(a.shape), len(b.shape))
        assert op0.name == op1.name == "NONE"
        return self._add("add_matrix_multiply", (a, op0, b, op1), "IMatrixMultiplyLayer", lambda props, x, y: x @ y, a, b)

    def add_shuffle(self, x):
        # IShuffleLayer: first transpose, reshape (0 copies the input's dimension, -1 is inferred), second transpose,
        # "to permute from CHW order to HWC order, the required permutation is [1, 2, 0]" (NumPy's transpose order).
        def compute(props, value):
            value = value.transpose(props.get("first_transpose", range(value.ndim)))
            dims = props.get("reshape_dims")
            if dims is not None:
                value = value.reshape([value.shape[i] if d == 0 else d for i, d in enumerate(dims)])
            return value.transpose(props.get("second_transpose", range(value.ndim)))
        return self._add("add_shuffle", (x,), "IShuffleLayer", compute, x)

    def add_reduce(self, x, op, axes, keep_dims):
        # addReduce: "The bit in position i of bitmask reduceAxes corresponds to explicit dimension i".
        assert op.name == "MAX"
        reduced = tuple(i for i in range(len(x.shape)) if axes >> i & 1)
        return self._add("add_reduce", (x, op, axes, keep_dims), "IReduceLayer",
                         lambda props, value: value.max(axis=reduced, keepdims=keep_dims), x)

    def add_elementwise(self, a, b, op):
        # IElementWiseLayer: "The input tensors must have the same rank. For each dimension, their lengths must
        # match, or one of them must be one."
        assert len(a.shape) == len(b.shape), "IElementWiseLayer ranks {} and {}".format(len(a.shape), len(b.shape))
        assert all(m == n or 1 in (m, n) for m, n in zip(a.shape, b.shape))
        assert op.name == "POW"
        return self._add("add_elementwise", (a, b, op), "IElementWiseLayer", lambda props, x, y: np.power(x, y), a, b)


def converted(trt_sim, name, args, kwargs=None):
    """Run PyTorch's call and our converter for it; -> (torch result, TensorRT result as NumPy, layers added)."""
    kwargs = kwargs or {}
    function = {"sanet.model.separable_map": separable_map, "torch.nn.functional.pixel_shuffle": F.pixel_shuffle}.get(name)
    out = function(*args, **kwargs) if function else getattr(args[0], name.rsplit(".", 1)[1])(*args[1:], **kwargs)
    for tensor in args:
        if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:  # the network tensor; the rest are constants
            tensor._trt = ArrayTensor(tensor.numpy())
            break
    network = ArrayNetwork(trt_sim.api)
    CONVERTERS[name](types.SimpleNamespace(network=network, method_args=args, method_kwargs=kwargs, method_return=out))
    return out, out._trt.value, network.layers


def test_our_converters_compute_what_pytorch_does(trt_sim):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 9)
    for (height, width), (grid_h, grid_w) in (((7, 9), (6, 8)), ((7, 9), (1, 1))):  # a one-cell grid too
        rows, cols = adaptive_pool_matrix(height, grid_h), adaptive_pool_matrix(width, grid_w)
        out, got, layers = converted(trt_sim, "sanet.model.separable_map", (x, rows, cols))
        assert layers == ["IConstantLayer", "IConstantLayer", "IMatrixMultiplyLayer", "IMatrixMultiplyLayer"]
        np.testing.assert_allclose(got, out.numpy(), rtol=1e-5, atol=1e-6)
    up = nearest_upsample_matrix(3, 7), nearest_upsample_matrix(4, 9)
    out, got, _ = converted(trt_sim, "sanet.model.separable_map", (torch.randn(1, 5, 3, 4), *up))
    np.testing.assert_array_equal(got, out.numpy())

    out, got, layers = converted(trt_sim, "torch.nn.functional.pixel_shuffle", (torch.randn(2, 3 * 16, 5, 6), 4))
    assert layers == ["IShuffleLayer", "IShuffleLayer"] and got.shape == (2, 3, 20, 24)
    np.testing.assert_array_equal(got, out.numpy())

    for kwargs in ({"dim": (2, 3), "keepdim": True}, {"dim": -1}, {"dim": [1, -2]}, {}):
        out, got, _ = converted(trt_sim, "torch.Tensor.amax", (x,), kwargs)
        np.testing.assert_array_equal(got, out.numpy())

    positive = x.abs() + 0.1
    for exponent in (3.0, 1.0 / 3.0, torch.full((1, 5, 1, 1), 2.0)):
        out, got, _ = converted(trt_sim, "torch.Tensor.pow", (positive, exponent))
        np.testing.assert_allclose(got, out.numpy(), rtol=1e-6)

    out, got, layers = converted(trt_sim, "torch.Tensor.detach", (x,))
    assert layers == [] and out._trt is x._trt  # the same TensorRT tensor: detach adds nothing


def test_our_converters_refuse_a_frozen_input(trt_sim):
    x = torch.rand(1, 4, 3, 3)  # no _trt: an earlier call had no converter
    context = types.SimpleNamespace(network=ArrayNetwork(trt_sim.api), method_args=(x,), method_kwargs={},
                                    method_return=x.detach())
    with pytest.raises(SanetError, match="not part of the TensorRT network"):
        CONVERTERS["torch.Tensor.detach"](context)
