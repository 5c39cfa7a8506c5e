"""OpenVINO rows: the same exported ONNX (fp32, bf16 where the CPU has it) and the Q/DQ INT8 export, on the runner
contract, so evaluation, parity, inference and the bench use them like any other backend."""
import numpy as np
import pytest

from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
from sanet.data import open_dataset
from sanet.errors import SanetError
from sanet.parity import BUDGETS, compare
from sanet.runners import OpenVinoRunner, OrtRunner, TorchRunner

pytest.importorskip("openvino")
pytestmark = pytest.mark.filterwarnings("ignore:calibrating on only")


@pytest.fixture(scope="module")
def qdq_uint8(exported, synth_small, tmp_path_factory):
    """The bench's INT8 artifact: Q/DQ with uint8 activations, calibrated on synthetic crops."""
    _, paths = exported
    out = tmp_path_factory.mktemp("ov") / "sanet_128x256_uint8_qdq.onnx"
    manifest = plan_crops(str(synth_small), CropConfig(128, 256, count=8))
    return quantize_qdq(paths[(128, 256)], out, manifest, QuantizeConfig(activations="uint8"))


def test_fp32_matches_onnx_runtime_and_pytorch(exported, synth_small):
    model, paths = exported
    frame = np.random.default_rng(5).integers(0, 256, size=(1, 128, 256, 3), dtype=np.uint8)
    runner = OpenVinoRunner(paths[(128, 256)])
    assert runner.info.label == "openvino-cpu-fp32" and runner.info.input_size == (128, 256) and runner.request is None
    with pytest.raises(SanetError, match="not active"):  # constructing is cheap: nothing compiled yet
        runner.infer(np.zeros((1, 3, 128, 256), np.float32))
    with runner, OrtRunner(paths[(128, 256)]) as ort:
        logits, expected = runner.infer(runner.prepare(frame)), ort.infer(ort.prepare(frame))
        again = runner.infer(runner.prepare(frame))
    assert runner.request is None  # close() freed the compiled model
    np.testing.assert_array_equal(logits, again)  # the output is copied out of the request's reused buffer
    assert np.abs(logits - expected).max() < 1e-3
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OpenVinoRunner(paths[(128, 256)]) as candidate:
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert result.budget == BUDGETS["fp32"] and result.passed, result.failures


def test_qdq_export_runs_int8_within_its_budget(exported, synth_small, qdq_uint8):
    model, _ = exported
    runner = OpenVinoRunner(qdq_uint8)
    assert runner.info.precision == "int8"
    with pytest.raises(SanetError, match="int8 from a Q/DQ export"):
        OpenVinoRunner(qdq_uint8, "bf16")
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with runner:
        result = compare(TorchRunner(model), runner, val, progress=False)
    assert result.budget == BUDGETS["int8"] and result.passed, result.failures
    assert result.pixel_agreement < 1.0  # really quantized


def test_bf16_runs_where_the_cpu_has_it_and_is_refused_elsewhere(exported, synth_small):
    from sanet.runners import openvino_bf16

    model, paths = exported
    if not openvino_bf16():
        with pytest.raises(SanetError, match="no native bf16"):
            OpenVinoRunner(paths[(128, 256)], "bf16")
        return
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OpenVinoRunner(paths[(128, 256)], "bf16") as candidate:
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert result.budget == BUDGETS["bf16"] and result.passed, result.failures


def test_eval_parity_and_infer_take_openvino(exported, shipped, synth_small, qdq_uint8, tmp_path, sanet_cli):
    _, paths = exported
    onnx_path = str(paths[(128, 256)])
    result = sanet_cli("eval", "--openvino", onnx_path, "--data", synth_small, "--size", "128", "256")
    assert result.returncode == 0 and "openvino-cpu-fp32" in result.stdout and "mIoU" in result.stdout
    result = sanet_cli("parity", shipped, "--openvino", qdq_uint8, "--data", synth_small)
    assert result.returncode == 0 and "PASS" in result.stdout
    out = tmp_path / "masks"
    images = synth_small / "leftImg8bit" / "val"
    assert sanet_cli("infer", images, "--openvino", onnx_path, "--size", "128", "256", "-o", out).returncode == 0
    assert len(list(out.rglob("*_mask.png"))) == len(list(images.rglob("*.png")))
    for argv, message in ((["--openvino", onnx_path, "--device", "cuda"], "runs on the CPU"),
                          (["--openvino", onnx_path, "--onnx", onnx_path], "not allowed with"),
                          (["--openvino", str(tmp_path / "missing.onnx")], "not found")):
        result = sanet_cli("eval", *argv, "--data", synth_small)
        assert result.returncode in (1, 2) and message in result.stderr, argv
