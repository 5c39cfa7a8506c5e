"""Engine numerics on CPU: FP16 emulation, the FP16 range audit, INT8 (Q/DQ) emulation."""
import json

import numpy as np
import onnx
import pytest
import torch

import sanet.model
from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
from sanet.data import open_dataset
from sanet.errors import SanetError
from sanet.export import ExportConfig, export_onnx, read_metadata
from sanet.numerics import FP16_MAX, EmulatedRunner, audit_lines, fp16_model, fp16_range_audit
from sanet.parity import BUDGETS, compare
from sanet.runners import OrtRunner, TorchRunner

pytestmark = pytest.mark.filterwarnings("ignore:calibrating on only")
SIZE = (128, 256)


def reference_gem(x, p=3.0, eps=1e-6):
    """GeM as the reference code writes it: x^p overflows FP16 for x > 40.3."""
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


@pytest.fixture(scope="module")
def random_sanet():
    torch.manual_seed(0)
    return sanet.model.build_model("sanet", 19, aux_head=False).eval()


@pytest.fixture(scope="module")
def random_onnx(random_sanet, tmp_path_factory, ort):
    path = tmp_path_factory.mktemp("numerics") / "random.onnx"
    export_onnx(random_sanet, path, ExportConfig(*SIZE))
    return path


@pytest.fixture(scope="module")
def old_gem_onnx(random_sanet, tmp_path_factory, ort):
    """The same random network exported with the reference GeM formula (x^3 in the graph)."""
    path = tmp_path_factory.mktemp("numerics_old") / "old_gem.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sanet.model, "generalized_mean_pool", reference_gem)
        export_onnx(random_sanet, path, ExportConfig(*SIZE))
    return path


@pytest.fixture(scope="module")
def frames(synth_small):
    return open_dataset(str(synth_small), "cityscapes", "val")


def pow_peaks(audit):
    return [entry["max_abs"] for entry in audit["tensors"].values() if entry["op"] == "Pow"]


def test_fp16_emulation_of_random_sanet_is_finite_and_gem_pow_stays_below_one(random_sanet, random_onnx, frames):
    audit = fp16_range_audit(random_onnx, frames, limit=3)
    json.dumps(audit)  # goes into export's summary and the engine sidecar as is
    assert audit["images"] == 3 and audit["passed"] and not audit["overflows"]
    peaks = pow_peaks(audit)
    assert len(peaks) == 8 and max(peaks) <= 1.0 + 1e-6  # 4 GeM x 2 Pow, inputs rescaled to (0, 1]
    assert 1.0 < audit["max_abs"] < FP16_MAX  # other tensors are real, unscaled activations
    with EmulatedRunner(random_onnx, "fp16") as half:
        assert half.info.precision == "fp16" and half.info.label == "emulated-cpu-fp16"
        result = compare(TorchRunner(random_sanet), half, frames, progress=False)
        _, logits = half.predict(frames.load(0)[0][None])
    assert np.isfinite(logits).all()
    assert result.budget == BUDGETS["fp16"]
    assert result.pixel_agreement >= 0.99 and result.max_abs_logit_diff > 0  # rounded, yet agrees


def test_reference_gem_overflows_in_fp16_and_the_audit_flags_it(old_gem_onnx, frames):
    audit = fp16_range_audit(old_gem_onnx, frames, limit=3)
    assert not audit["passed"] and max(pow_peaks(audit)) > FP16_MAX
    flagged = {audit["tensors"][name]["op"] for name in audit["overflows"]}
    assert "Pow" in flagged
    assert "OVERFLOW" in audit_lines(audit)[0]
    with EmulatedRunner(old_gem_onnx, "fp16") as half:
        _, logits = half.predict(frames.load(0)[0][None])
    assert not np.isfinite(logits).all()  # what an FP16 engine of this graph would produce


def test_audit_streams_iterables_and_datasets_alike(random_onnx, frames):
    from_dataset = fp16_range_audit(random_onnx, frames, limit=2)
    batch = np.stack([frames.load(i)[0] for i in range(2)])  # (2, H, W, 3): resized to the model inside
    from_batches = fp16_range_audit(random_onnx, [batch])
    assert from_batches["images"] == 2 and from_batches["tensors"] == from_dataset["tensors"]
    with pytest.raises(SanetError, match="no images"):
        fp16_range_audit(random_onnx, [])


def test_fp16_model_rounds_every_tensor_and_keeps_float32_io(random_onnx, ort):
    source = onnx.load(str(random_onnx))
    half = fp16_model(source)
    assert {p.key: p.value for p in source.metadata_props}["sanet.precision"] == "fp32"  # caller's proto untouched
    assert {p.key: p.value for p in half.metadata_props}["sanet.precision"] == "fp16"
    casts = [n for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    assert len(casts) > len(source.graph.node)  # every float tensor, input included
    for init in half.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = onnx.numpy_helper.to_array(init)
            assert np.array_equal(values, values.astype(np.float16).astype(np.float32))
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"


def test_int8_emulation_runs_qdq_and_refuses_float_files(random_onnx, synth_small, frames, tmp_path):
    with pytest.raises(SanetError, match="sanet-export --qdq"):
        EmulatedRunner(random_onnx, "int8")
    with pytest.raises(SanetError, match="unknown emulation"):
        EmulatedRunner(random_onnx, "int4")
    manifest = plan_crops(str(synth_small), CropConfig(*SIZE, count=4))
    qdq = tmp_path / "int8.onnx"
    quantize_qdq(random_onnx, qdq, manifest, QuantizeConfig())
    assert read_metadata(qdq)["sanet.precision"] == "int8"
    with pytest.raises(SanetError, match="needs the FP32 export"):
        EmulatedRunner(qdq, "fp16")
    with EmulatedRunner(qdq, "int8") as emulated, OrtRunner(qdq) as plain:
        assert emulated.info.precision == "int8"
        image = frames.load(0)[0][None]
        assert np.array_equal(emulated.predict(image)[1], plain.predict(image)[1])  # the Q/DQ model as is
    emulated.close()  # idempotent
    assert not emulated.active


# ----------------------------------------------------------------------------------------------------------------
# The FP16 ONNX (numerics.to_fp16) that strongly typed TensorRT builds: types, float32 islands from the audit,
# and the parity budgets on real CamVid frames.
# ----------------------------------------------------------------------------------------------------------------
F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def elem_types(proto):
    inferred = onnx.shape_inference.infer_shapes(proto)
    return {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}


def test_to_fp16_types_every_tensor_half_and_keeps_float32_io(random_onnx, frames, ort):
    from sanet.numerics import emulate_fp16, to_fp16

    source = onnx.load(str(random_onnx))
    half = to_fp16(source)
    meta = {p.key: p.value for p in half.metadata_props}
    assert meta["sanet.precision"] == "fp16" and meta["sanet.float_precision"] == "fp16" and meta["sanet.fp32_nodes"] == ""
    assert half.graph.input[0].type.tensor_type.elem_type == F32 and half.graph.output[0].type.tensor_type.elem_type == F32
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert len(half.graph.node) == len(source.graph.node) + 2 and len(casts) == 2  # after the input, before the output
    types = elem_types(half)
    computed = [types[n.output[0]] for n in half.graph.node if n.op_type not in ("Cast", "Shape")]
    assert computed and set(computed) == {F16}
    floats = [i for i in half.graph.initializer if i.data_type in (F32, F16)]
    resize_scales = {n.input[2] for n in half.graph.node if n.op_type == "Resize" and len(n.input) > 2}
    assert all(i.data_type == F16 or i.name in resize_scales for i in floats)  # Resize's scales are float32 by schema
    image = frames.load(0)[0][None]
    with OrtRunner(random_onnx) as full:
        want = full.predict(image)[0]
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])  # ORT runs the file
    x = full.info.preprocess.to_input(image)
    assert (session.run(None, {"images": x})[0].argmax(1) == want).mean() > 0.99
    emulated = ort.InferenceSession(emulate_fp16(half).SerializeToString(), providers=["CPUExecutionProvider"])
    rounded = ort.InferenceSession(fp16_model(source).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(emulated.run(None, {"images": x})[0], rounded.run(None, {"images": x})[0])
    with pytest.raises(SanetError, match="no node named nope"):
        to_fp16(source, {"nope": "typo"})
    with pytest.raises(SanetError, match="already FP16"):
        to_fp16(half)


def test_reference_gem_gets_float32_islands_from_the_audit(old_gem_onnx, frames):
    """The audit flags the reference GeM's x^3 (above 65504); its Pow nodes and their neighbours compute in float32
    in the FP16 ONNX, whose emulation then stays finite where the all-FP16 one overflows."""
    from sanet.numerics import emulate_fp16, fp32_islands, to_fp16

    audit = fp16_range_audit(old_gem_onnx, frames, limit=3)
    islands = fp32_islands(audit, old_gem_onnx)
    proto = onnx.load(str(old_gem_onnx))
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert any(ops[name] == "Pow" and "65504" in reason for name, reason in islands.items())  # x^3 over range
    half = to_fp16(proto, islands)
    types = elem_types(half)
    for node in half.graph.node:
        if node.name in islands:
            assert types[node.output[0]] == F32, node.name
    assert {p.key: p.value for p in half.metadata_props}["sanet.fp32_nodes"] == ",".join(sorted(islands))
    image = frames.load(0)[0][None]
    with OrtRunner(old_gem_onnx) as full:
        x = full.info.preprocess.to_input(image)
        want = full.predict(image)[0]
    import onnxruntime

    run = onnxruntime.InferenceSession(emulate_fp16(half).SerializeToString(), providers=["CPUExecutionProvider"])
    logits = run.run(None, {"images": x})[0]
    assert np.isfinite(logits).all() and (logits.argmax(1) == want).mean() > 0.99
    assert fp32_islands(fp16_range_audit(old_gem_onnx, frames, limit=1), old_gem_onnx)  # one frame finds it too


def test_underflowing_mean_gets_a_float32_island(ort):
    """GeM's mean of cubes over a large map of small values falls below FP16's smallest normal: the averaging
    reduction, the Pow feeding it and the root after it run in float32, and the result keeps its precision."""
    from onnx import helper

    from sanet.numerics import FP16_TINY, audit_summary, emulate_fp16, fp32_islands, to_fp16

    nodes = [helper.make_node("Pow", ["x", "three"], ["cube"], name="cube"),
             helper.make_node("ReduceMean", ["cube"], ["mean"], name="mean", axes=[2, 3], keepdims=1),
             helper.make_node("Pow", ["mean", "third"], ["y"], name="root")]
    graph = helper.make_graph(nodes, "gem", [helper.make_tensor_value_info("x", F32, [1, 4, 64, 64])],
                              [helper.make_tensor_value_info("y", F32, [1, 4, 1, 1])],
                              [onnx.numpy_helper.from_array(np.array(3, np.float32), "three"),
                               onnx.numpy_helper.from_array(np.array(1 / 3, np.float32), "third")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).uniform(0.002, 0.008, (1, 4, 64, 64)).astype(np.float32)  # cubes below 5.2e-7
    truth = np.cbrt((x.astype(np.float64) ** 3).mean(axis=(2, 3), keepdims=True))
    tensors = [("x", "input"), ("cube", "Pow"), ("mean", "ReduceMean"), ("y", "Pow")]
    values = dict(zip(["cube", "mean", "y"], [x ** 3, (x ** 3).mean(axis=(2, 3), keepdims=True), truth]), x=x)
    audit = audit_summary(tensors, np.array([np.abs(values[n]).max() for n, _ in tensors]), 1,
                          lows=np.array([values[n].min() for n, _ in tensors]))
    assert 0 < audit["tensors"]["mean"]["min"] < FP16_TINY
    islands = fp32_islands(audit, proto)
    assert sorted(islands) == ["cube", "mean", "root"] and "smallest normal" in islands["mean"]

    def error(fp32_nodes):
        model = emulate_fp16(to_fp16(proto, fp32_nodes))
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        return float(np.abs(got / truth - 1).max())

    assert error(islands) < 1e-4 < 0.01 < error({})  # relative error of the pooled value (measured: 2e-7, 2.2 %)


@pytest.fixture(scope="module")
def camvid_export(shipped_camvid, camvid, tmp_path_factory, ort):
    """The shipped real-CamVid SANet at 96x128 (FP32 ONNX), its FP16 ONNX and its INT8 Q/DQ ONNX with FP16 float
    parts (calibrated on 16 train crops), float32 islands from an FP16 range audit over 4 val frames."""
    from sanet.checkpoints import load_model
    from sanet.numerics import fp32_islands, to_fp16

    model = load_model(shipped_camvid)
    out = tmp_path_factory.mktemp("camvid_fp16")
    val = open_dataset(str(camvid), "camvid", "val")
    fp32 = out / "camvid_96x128.onnx"
    export_onnx(model, fp32, ExportConfig(96, 128), source_sha256="test")
    islands = fp32_islands(fp16_range_audit(fp32, val, limit=4), fp32)
    manifest = plan_crops(str(camvid / "train"), CropConfig(96, 128, count=16))
    qdq = quantize_qdq(fp32, out / "camvid_96x128_int8_qdq.onnx", manifest, QuantizeConfig())
    paths = {"fp32": fp32, "fp16": out / "camvid_96x128_fp16.onnx", "int8": out / "camvid_96x128_int8_qdq_fp16.onnx"}
    onnx.save(to_fp16(fp32, islands), str(paths["fp16"]))
    onnx.save(to_fp16(qdq, islands), str(paths["int8"]))
    return model, paths, val


def test_fp16_onnx_holds_the_fp16_budget_on_real_frames(camvid_export):
    """Emulated (every FP16 tensor rounded) and as ONNX Runtime runs the file: FP16 parity budget, 4 CamVid val frames."""
    model, paths, val = camvid_export
    with TorchRunner(model) as reference:
        for candidate in (EmulatedRunner(paths["fp16"], "fp16"), OrtRunner(paths["fp16"])):
            result = compare(reference, candidate, val, limit=4, progress=False)
            assert candidate.info.precision == "fp16" and result.budget == BUDGETS["fp16"]
            assert result.passed, (candidate.info.label, result.failures)
            assert result.delta_miou is not None and result.max_abs_logit_diff > 0  # judged on labels; really rounded


def test_int8_with_fp16_around_it_holds_the_int8_budget_on_real_frames(camvid_export):
    """The Q/DQ ONNX whose float parts are FP16 (what strongly typed TensorRT builds): INT8 budget on 4 val frames."""
    model, paths, val = camvid_export
    proto = onnx.load(str(paths["int8"]))
    assert {p.key: p.value for p in proto.metadata_props}["sanet.float_precision"] == "fp16"
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert set(elem_types(proto)[name] for name in dequantized) == {F16}  # FP16 scales: float parts in FP16
    with TorchRunner(model) as reference, EmulatedRunner(paths["int8"], "int8") as candidate:
        result = compare(reference, candidate, val, limit=4, progress=False)
    assert "rounded to FP16" in candidate.info.extra["emulation"] and result.budget == BUDGETS["int8"]
    assert result.passed and result.delta_miou is not None, result.failures
