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
