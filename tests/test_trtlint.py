"""Parser-rule lint: each rule broken by a small hand-built ONNX graph (and kept by its counterpart), and every
export variant (plus the Q/DQ INT8 model) passing the rules of TensorRT 8.5, 10 and 11."""
import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sanet.errors import SanetError
from sanet.export import ExportConfig, export_onnx, trt_check
from sanet.model import VARIANTS, build_model
from sanet.numerics import to_fp16
from sanet.trtlint import RELEASES, RULES, Violation, check, lint, release_for_version

pytestmark = pytest.mark.filterwarnings("ignore:calibrating on only")

F, F16, U8, I8, I32, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.INT64


def value(name, elem_type, shape=(1, 3, 4, 4)):
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def graph_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def unary(op, elem_type, opset=17, out_type=None, **attrs):
    """One node X -> Y of ``op`` on ``elem_type``."""
    node = helper.make_node(op, ["x"], ["y"], name="n", **attrs)
    return graph_model([node], [value("x", elem_type)], [value("y", out_type or elem_type)], opset=opset)


def opset_model(opset):
    return unary("Relu", F, opset=opset)


def dequantize(x_type, zero_point=0, opset=21):
    x = const("x", np.zeros((4,), helper.tensor_dtype_to_np_dtype(x_type)))
    if x_type in (TensorProto.FLOAT8E4M3FN, TensorProto.INT4):
        x = helper.make_tensor("x", x_type, [4], [0, 0, 0, 0])
    inits = [x, const("s", np.float32(0.1))]
    names = ["x", "s"]
    if zero_point is not None:
        inits.append(helper.make_tensor("z", x_type, [], [zero_point]))
        names.append("z")
    node = helper.make_node("DequantizeLinear", names, ["y"], name="dq")
    return graph_model([node], [], [value("y", F, (4,))], inits, opset=opset)


def dequantize_scale(scale_type, scale=0.1, opset=19):
    """int8 constant -> DequantizeLinear with a scale of ``scale_type`` (float16 scales: an FP16 Q/DQ ONNX)."""
    inits = [const("x", np.zeros((4,), np.int8)), helper.make_tensor("s", scale_type, [], [scale])]
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq")
    return graph_model([node], [], [value("y", scale_type, (4,))], inits, opset=opset)


def constant_of_shape(elem_type):
    """A 2x2 tensor of ``elem_type`` zeros from ConstantOfShape (8.5's importer fills FP32 only)."""
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill", value=helper.make_tensor("v", elem_type, [1], [0]))
    return graph_model([node], [], [value("y", elem_type, (2, 2))], [const("shape", np.array([2, 2], np.int64))])


def quantize(out_type, zero_point=0, dequantize_too=True):
    """x -> QuantizeLinear (output type from the zero point; UINT8 without one) [-> DequantizeLinear] -> y."""
    inits = [const("s", np.float32(0.1))]
    names = ["x", "s"]
    if out_type is not None:
        inits.append(helper.make_tensor("z", out_type, [], [zero_point]))
        names.append("z")
    if not dequantize_too:
        node = helper.make_node("QuantizeLinear", names, ["y"], name="q")
        return graph_model([node], [value("x", F, (4,))], [value("y", out_type or U8, (4,))], inits, opset=19)
    nodes = [helper.make_node("QuantizeLinear", names, ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s"] + names[2:], ["y"], name="dq")]
    return graph_model(nodes, [value("x", F, (4,))], [value("y", F, (4,))], inits, opset=19)


def uint8_input(cast_first):
    """uint8 NHWC image -> float NCHW, the two orders an export can take."""
    perm = [0, 3, 1, 2]
    if cast_first:
        nodes = [helper.make_node("Cast", ["x"], ["c"], name="cast", to=F),
                 helper.make_node("Transpose", ["c"], ["y"], name="transpose", perm=perm)]
    else:
        nodes = [helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=perm),
                 helper.make_node("Cast", ["t"], ["y"], name="cast", to=F)]
    return graph_model(nodes, [value("x", U8, (1, 4, 4, 3))], [value("y", F, (1, 3, 4, 4))])


def argmax_cast(to):
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], name="argmax", axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["y"], name="cast", to=to)]
    return graph_model(nodes, [value("x", F)], [value("y", to, (1, 4, 4))])


def cast_chain(*types):
    """FLOAT graph input cast through ``types`` in turn (the last one is the graph output)."""
    nodes, previous = [], "x"
    for index, to in enumerate(types):
        output = "y" if index == len(types) - 1 else "c{}".format(index)
        nodes.append(helper.make_node("Cast", [previous], [output], name="cast{}".format(index), to=to))
        previous = output
    return graph_model(nodes, [value("x", F)], [value("y", types[-1])])


def cast_chain_from(elem_type):
    """A graph input of ``elem_type`` cast to FLOAT."""
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=F)
    return graph_model([node], [value("x", elem_type)], [value("y", F)])


def resize(opset=17, **attrs):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", **attrs)
    return graph_model([node], [value("x", F)], [value("y", F, (1, 3, 8, 8))],
                       [const("scales", np.array([1, 1, 2, 2], np.float32))], opset=opset)


def conv(auto_pad):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], auto_pad=auto_pad)
    return graph_model([node], [value("x", F)], [value("y", F, (1, 2, 4, 4))], [const("w", np.zeros((2, 3, 3, 3), np.float32))])


def reduce_sum(elem_type):
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=1)
    return graph_model([node], [value("x", elem_type)], [value("y", elem_type, (1, 1, 4, 4))],
                       [const("axes", np.array([1], np.int64))])


def gather(elem_type):
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="gather", axis=1)
    x = helper.make_tensor("x", elem_type, [1, 3], [1, 2, 3])
    return graph_model([node], [], [value("y", elem_type, (1, 1))], [x, const("i", np.array([0], np.int64))])


def unsqueeze(axes_constant):
    node = helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsqueeze")
    inputs = [value("x", F, (3, 4))]
    inits = [const("axes", np.array([0], np.int64))] if axes_constant else []
    if not axes_constant:
        inputs.append(value("axes", I64, (1,)))
    return graph_model([node], inputs, [value("y", F, (1, 3, 4))], inits)


def max_pool(indices=False, dilations=(1, 1)):
    outputs = ["y", "i"] if indices else ["y"]
    node = helper.make_node("MaxPool", ["x"], outputs, name="pool", kernel_shape=[2, 2], dilations=list(dilations))
    values = [value("y", F, None)] + ([value("i", I64, None)] if indices else [])
    return graph_model([node], [value("x", F)], values)


def top_k(sorted_flag):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=1, sorted=sorted_flag)
    return graph_model([node], [value("x", F)], [value("v", F, None), value("i", I64, None)], [const("k", np.array([2], np.int64))])


def custom_domain():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    model = graph_model([node], [value("x", F)], [value("y", F)])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def layer_norm():
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln", axis=-1)
    return graph_model([node], [value("x", F)], [value("y", F)], [const("g", np.ones(4, np.float32))])


def dft():
    node = helper.make_node("DFT", ["x"], ["y"], name="dft")
    return graph_model([node], [value("x", F, (1, 8, 1))], [value("y", F, (1, 8, 2))], opset=20)


OK = None  # no violation expected
# (case, model builder, {release: fragment one of the violations must contain, or OK})
CASES = [
    ("opset-17", lambda: opset_model(17), {"8.5": OK, "10": OK, "11": OK}),
    ("opset-18", lambda: opset_model(18), {"8.5": "opset 18 is outside", "10": OK, "11": OK}),
    ("opset-8", lambda: opset_model(8), {"8.5": OK, "10": "opset 8 is outside", "11": "opset 8 is outside"}),
    ("opset-21", lambda: opset_model(21), {"8.5": "opset 21", "10": "opset 21 is outside", "11": OK}),
    ("opset-26", lambda: opset_model(26), {"8.5": "opset 26", "10": "opset 26", "11": "opset 26 is outside"}),
    ("layernorm", layer_norm, {"8.5": "LayerNormalization is not supported by TensorRT 8.5", "10": OK, "11": OK}),
    ("hardmax", lambda: unary("Hardmax", F, axis=1), {"8.5": "Hardmax is not supported", "10": OK, "11": OK}),
    ("dft", dft, {"8.5": "opset 20", "10": "DFT is not supported by TensorRT 10", "11": OK}),
    ("gelu", lambda: unary("Gelu", F, opset=20), {"8.5": "opset 20", "10": OK, "11": OK}),
    ("gelu-8.5-table", lambda: unary("Gelu", F, opset=17), {"8.5": "not in TensorRT 8.5's operator table", "10": OK, "11": OK}),
    ("custom-domain", custom_domain, {r: "domain com.microsoft has no importer" for r in RELEASES}),
    ("dq-int32-bias", lambda: dequantize(I32, opset=17), {r: "only activation types allowed" for r in RELEASES}),
    ("dq-int8", lambda: dequantize(I8, opset=17), {"8.5": OK, "10": OK, "11": OK}),
    ("dq-fp8", lambda: dequantize(TensorProto.FLOAT8E4M3FN, opset=19), {"8.5": "DequantizeLinear input must be INT8",
                                                                        "10": OK, "11": OK}),
    ("dq-int4", lambda: dequantize(TensorProto.INT4, opset=17), {"8.5": "DequantizeLinear input must be INT8", "10": OK, "11": OK}),
    ("dq-zero-point", lambda: dequantize(I8, zero_point=3, opset=17), {r: "x_zero_point must be zero" for r in RELEASES}),
    ("dq-fp16-scale", lambda: dequantize_scale(F16), {"8.5": "scale must be FLOAT, got FLOAT16", "10": OK, "11": OK}),
    ("dq-fp32-scale", lambda: dequantize_scale(F, opset=17), {r: OK for r in RELEASES}),
    ("constantofshape-fp16", lambda: constant_of_shape(F16), {"8.5": "ConstantOfShape on FLOAT16 is unsupported", "10": OK,
                                                              "11": OK}),
    ("dq-scale-rounded-to-zero", lambda: dequantize_scale(F16, scale=1e-8),
     {r: "scale coefficients must all be positive" for r in RELEASES}),
    ("q-uint8", lambda: quantize(None, dequantize_too=False), {r: "QuantizeLinear output must be" for r in RELEASES}),
    ("q-int8", lambda: quantize(I8), {"8.5": "opset 19", "10": OK, "11": OK}),
    ("q-fp8", lambda: quantize(TensorProto.FLOAT8E4M3FN, dequantize_too=False),
     {"8.5": "QuantizeLinear output must be INT8, got FLOAT8E4M3FN", "10": OK, "11": OK}),
    ("q-zero-point", lambda: quantize(I8, zero_point=5), {"10": "zero_point must be zero", "11": "zero_point must be zero"}),
    ("uint8-transpose-first", lambda: uint8_input(cast_first=False),
     {"8.5": "UINT8 tensor x must be cast to FLOAT/FLOAT16 before any other op", "10": "Transpose on UINT8 is unsupported",
      "11": "Transpose on UINT8 is unsupported"}),
    ("uint8-cast-first", lambda: uint8_input(cast_first=True), {"8.5": OK, "10": OK, "11": OK}),
    ("argmax-uint8", lambda: argmax_cast(U8), {"8.5": "ArgMax/ArgMin yield INT32", "10": OK, "11": OK}),
    ("argmax-int32", lambda: argmax_cast(I32), {"8.5": OK, "10": OK, "11": OK}),
    ("argmax-on-int32", lambda: unary("ArgMax", I32, out_type=I64, axis=1), {"8.5": "ArgMax on INT32 is unsupported",
                                                                             "10": OK, "11": OK}),
    ("cast-uint16", lambda: cast_chain(TensorProto.UINT16), {r: "Cast target type UINT16 is unsupported" for r in RELEASES}),
    ("cast-int8", lambda: cast_chain(I8), {"8.5": OK, "10": "Cast target type INT8", "11": "Cast target type INT8"}),
    ("cast-bf16", lambda: cast_chain(TensorProto.BFLOAT16), {"8.5": "Cast target type BFLOAT16", "10": OK, "11": OK}),
    ("cast-int64", lambda: cast_chain(I64), {"8.5": OK, "10": OK, "11": OK}),
    ("uint8-intermediate", lambda: cast_chain(U8, F), {r: "UINT8 tensor c0 is neither a network input nor output" for r in RELEASES}),
    ("resize-cubic", lambda: resize(mode="cubic"), {r: "mode='cubic' is unsupported" for r in RELEASES}),
    ("resize-crop", lambda: resize(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"),
     {r: "coordinate_transformation_mode='tf_crop_and_resize'" for r in RELEASES}),
    ("resize-nearest-mode", lambda: resize(nearest_mode="round_half_even"), {r: "nearest_mode='round_half_even'" for r in RELEASES}),
    ("resize-antialias", lambda: resize(opset=18, mode="linear", antialias=1), {"10": "antialias=1", "11": "antialias=1"}),
    ("resize-ok", lambda: resize(mode="linear", coordinate_transformation_mode="align_corners"), {r: OK for r in RELEASES}),
    ("resize-nearest-ok", lambda: resize(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     {r: OK for r in RELEASES}),
    ("conv-auto-pad-bad", lambda: conv("SAME"), {r: "auto_pad='SAME' is unsupported" for r in RELEASES}),
    ("conv-auto-pad-ok", lambda: conv("SAME_UPPER"), {r: OK for r in RELEASES}),
    ("relu-int32", lambda: unary("Relu", I32), {"8.5": "Relu on INT32 is unsupported", "10": OK, "11": OK}),
    ("pow-int32", lambda: graph_model([helper.make_node("Pow", ["x", "e"], ["y"], name="pow")], [value("x", I32)],
                                      [value("y", I32)], [const("e", np.array(3, np.int32))]),
     {"8.5": "Pow on INT32", "10": "Pow on INT32", "11": OK}),
    ("pow-float", lambda: graph_model([helper.make_node("Pow", ["x", "e"], ["y"], name="pow")], [value("x", F)],
                                      [value("y", F)], [const("e", np.array(3, np.float32))]), {r: OK for r in RELEASES}),
    ("reducesum-int32", lambda: reduce_sum(I32), {"8.5": "ReduceSum on INT32", "10": OK, "11": OK}),
    ("reducesum-float16", lambda: reduce_sum(F16), {r: OK for r in RELEASES}),
    ("gather-int8", lambda: gather(I8), {"8.5": OK, "10": "INT8 tensor x is a quantized type", "11": "quantized type"}),
    ("gather-int64", lambda: gather(I64), {r: OK for r in RELEASES}),
    ("and-float", lambda: graph_model([helper.make_node("And", ["x", "x"], ["y"], name="and")], [value("x", F)],
                                      [value("y", TensorProto.BOOL)]), {r: "And on FLOAT is unsupported" for r in RELEASES}),
    ("unsqueeze-axes-input", lambda: unsqueeze(False), {r: "input 1 (axes) must be an initializer or Constant" for r in RELEASES}),
    ("unsqueeze-axes-constant", lambda: unsqueeze(True), {r: OK for r in RELEASES}),
    ("maxpool-indices", lambda: max_pool(indices=True), {r: "Indices output is unsupported" for r in RELEASES}),
    ("maxpool-dilations", lambda: max_pool(dilations=(2, 2)), {"8.5": OK, "10": "dilations must be empty or all ones",
                                                                "11": "dilations must be empty or all ones"}),
    ("maxpool-ok", lambda: max_pool(), {r: OK for r in RELEASES}),
    ("topk-unsorted", lambda: top_k(0), {"8.5": OK, "10": "sorted=0 is unsupported", "11": "sorted=0 is unsupported"}),
    ("topk-sorted", lambda: top_k(1), {r: OK for r in RELEASES}),
    ("input-uint16", lambda: cast_chain_from(TensorProto.UINT16), {r: "network input type UINT16 is unsupported" for r in RELEASES}),
    ("input-bf16", lambda: cast_chain_from(TensorProto.BFLOAT16), {"8.5": "network input type BFLOAT16", "10": OK, "11": OK}),
    ("input-fp16", lambda: cast_chain_from(F16), {r: OK for r in RELEASES}),
]


@pytest.mark.parametrize("case, build, expected", CASES, ids=[case[0] for case in CASES])
def test_each_rule_breaks_and_holds(case, build, expected):
    model = build()
    for release, fragment in expected.items():
        found = [str(v) for v in lint(model, release)]
        if fragment is OK:
            assert found == [], (release, found)
        else:
            assert any(fragment in line for line in found), (release, fragment, found)


def test_every_table_cites_a_source_and_the_quantization_rules_differ_by_release():
    for release, rules in RULES.items():
        assert rules.release == release and rules.ops_source and rules.opset_source and rules.cast_source
        assert all(rule.source for rule in rules.attributes)
        assert "INT32" not in rules.types["DequantizeLinear"]  # no bias dequantization anywhere
    assert RULES["8.5"].types["DequantizeLinear"] == {"INT8"}
    assert {"INT8", "FLOAT8E4M3FN", "INT4"} <= RULES["10"].types["DequantizeLinear"] <= RULES["11"].types["DequantizeLinear"]
    assert RULES["8.5"].opset == (1, 17) and RULES["10"].opset == (9, 20) and RULES["11"].opset == (9, 24)


@pytest.mark.parametrize("version, release", [("8.6.1", "8.5"), ("8.5.2", "8.5"), ("8.5.2.2", "8.5"), ("10", "10"),
                                              ("10.3.0", "10"), ("10.13.0.35", "10"), ("11.4", "11"), ("11", "11")])
def test_release_for_version(version, release):
    assert release_for_version(version) == release


@pytest.mark.parametrize("version", ["8.4.3", "7.1", "9.2", "12.0", "banana", ""])
def test_release_for_version_refuses_unknown_releases(version):
    with pytest.raises(SanetError, match="TensorRT"):
        release_for_version(version)


def test_violation_line_check_and_version_strings(tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(argmax_cast(U8), str(path))
    violations = lint(path, "8.6.1")  # a version string picks the 8.5 table
    assert violations == lint(str(path), "8.5") and len(violations) == 1
    v = violations[0]
    assert isinstance(v, Violation) and (v.node, v.op) == ("cast", "Cast") and "8.5-GA" in v.source
    assert v.rule == "Cast to UINT8 needs a FLOAT/FLOAT16 input, got INT32 (ArgMax/ArgMin yield INT32 in TensorRT)"
    assert str(v) == "node cast (Cast): {} [{}]".format(v.rule, v.source) and "\n" not in str(v)
    check(path, "10")  # ArgMax -> UINT8 graph output is fine on 10: passes quietly
    onnx.save(uint8_input(cast_first=False), str(path))
    with pytest.raises(SanetError) as error:
        check(path, "10")
    lines = str(error.value).splitlines()
    assert "bad.onnx" in lines[0] and lines[1:] == [str(x) for x in lint(path, "10")] and len(lines) == 3
    with pytest.raises(SanetError, match="cannot read ONNX file"):
        lint(tmp_path / "missing.onnx", "10")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_export_variant_passes_the_rules_of_every_release(variant, tmp_path, ort):
    torch.manual_seed(0)
    model = build_model(variant, 19, aux_head=False).eval()
    for layout, output in itertools.product(("float-nchw", "uint8-nhwc"), ("logits", "argmax")):
        path = tmp_path / "{}_{}.onnx".format(layout, output)
        export_onnx(model, path, ExportConfig(64, 128, input_layout=layout, output=output))
        assert trt_check(path) == {"8.5": [], "10": [], "11": []}, (layout, output)
        half = tmp_path / "{}_{}_fp16.onnx".format(layout, output)  # what strongly typed FP16 engines build from
        onnx.save(to_fp16(path), str(half))
        assert trt_check(half) == {"8.5": [], "10": [], "11": []}, (layout, output, "fp16")
        graph = onnx.load(str(path)).graph
        if layout == "uint8-nhwc":  # the uint8 input meets a Cast to float and nothing else
            consumers = [node for node in graph.node if "images" in node.input]
            assert [(n.op_type, helper.get_attribute_value(n.attribute[0])) for n in consumers] == [("Cast", F)]
        expected = I32 if output == "argmax" else F
        assert graph.output[0].type.tensor_type.elem_type == expected


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory, ort):
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("qdq")
    generate_dataset(str(out / "data"), SynthConfig(64, 128, train=8, val=2, seed=0))
    torch.manual_seed(0)
    fp32 = out / "fp32.onnx"
    export_onnx(build_model("sanet-tiny", 19, aux_head=False).eval(), fp32, ExportConfig(64, 128))
    manifest = plan_crops(str(out / "data"), CropConfig(64, 128, count=8))
    return quantize_qdq(fp32, out / "int8.onnx", manifest, QuantizeConfig())


@pytest.mark.recent_ort  # the streamed Q/DQ route needs quantize_static(calibration_cache_path=...): not in ORT 1.16
@pytest.mark.parametrize("release", RELEASES)
def test_qdq_model_passes_every_release(qdq_model, release):
    graph = onnx.load(str(qdq_model)).graph
    initializer_types = {tensor.name: tensor.data_type for tensor in graph.initializer}
    dequantized = [initializer_types.get(node.input[0]) for node in graph.node if node.op_type == "DequantizeLinear"]
    assert len(dequantized) > 20 and I32 not in dequantized  # weights quantized, biases left in float
    assert [str(v) for v in lint(qdq_model, release)] == []


@pytest.mark.recent_ort
def test_fp16_qdq_model_passes_10_and_11_only(qdq_model):
    """The Q/DQ ONNX with FP16 float parts (opset 19, FP16 scales): what TensorRT 10.12+/11 build strongly typed;
    TensorRT 8.5 parses neither its opset nor its FP16 scales."""
    half = to_fp16(qdq_model)
    assert lint(half, "10") == [] and lint(half, "11") == []
    found = [str(v) for v in lint(half, "8.5")]
    assert any("opset 19 is outside" in line for line in found)
    assert any("scale must be FLOAT, got FLOAT16" in line for line in found)
