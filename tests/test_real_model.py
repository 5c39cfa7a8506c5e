"""The shipped real-CamVid SANet on real street frames (../shared/data/camvid val; the test split is never read).

What a network that never saw a street cannot pass: labelled road predicted road, labelled sky predicted sky, at
the model's native 360x480, in PyTorch and through its FP32 and Q/DQ INT8 ONNX on ONNX Runtime. The Jetson-stack CI
run (Python 3.8, torch 2.1, ONNX Runtime 1.16) runs this file too: there the Q/DQ file comes from the main run
(SANET_CI_HANDOFF), as on a device, which gets the ONNX from the training host (ONNX Runtime 1.16 cannot quantize
from precomputed ranges).
"""
import inspect
import os
import shutil

import numpy as np
import pytest

from sanet.data import open_dataset

ROAD, SKY = 3, 0  # CamVid class ids (sanet.model.CAMVID_CLASSES)
FRAMES = 6  # val frames checked in PyTorch (every 16th: spread over the sequence)
ONNX_SIZE = (176, 240)  # the ONNX checks run at about half the native size (multiples of 8), to stay fast


def recall(prediction, label, cls):
    """Fraction of the pixels labelled ``cls`` that are predicted ``cls`` (None when the frame has none)."""
    mask = label == cls
    return float((prediction[mask] == cls).mean()) if mask.sum() > 500 else None


@pytest.fixture(scope="session")
def camvid_val(camvid):
    return open_dataset(str(camvid), "camvid", "val")


@pytest.fixture(scope="session")
def camvid_model(shipped_camvid):
    from sanet.checkpoints import load_model

    return load_model(shipped_camvid)


def test_shipped_model_sees_road_and_sky_on_real_frames(camvid_model, camvid_val):
    from sanet.evaluate import predict_full
    from sanet.metrics import ConfusionMatrix
    from sanet.runners import TorchRunner

    assert camvid_model.config.num_classes == 11 and camvid_model.config.class_names[ROAD] == "road"
    matrix, roads, skies = ConfusionMatrix(11), [], []
    with TorchRunner(camvid_model) as runner:
        for index in range(0, 16 * FRAMES, 16):
            image, label, _ = camvid_val.load(index)
            prediction = predict_full(runner, image, label.shape)  # native 360x480
            matrix.update(prediction, label)
            roads.append(recall(prediction, label, ROAD))
            skies.append(recall(prediction, label, SKY))
            top = prediction[: label.shape[0] // 8]  # the top eighth of a CamVid frame is mostly sky
            assert np.mean(top == SKY) > 0.5 or np.mean(label[: label.shape[0] // 8] == SKY) < 0.5, index
    roads, skies = [r for r in roads if r is not None], [s for s in skies if s is not None]
    assert len(roads) >= 4 and min(roads) > 0.85, roads
    assert len(skies) >= 4 and min(skies) > 0.85, skies
    assert matrix.summary(camvid_val.class_names)["pixel_accuracy"] > 0.8


def test_infer_without_a_model_runs_the_real_model(shipped_camvid, camvid, sanet_cli, tmp_path):
    from sanet.data import CAMVID_PALETTE, read_image

    frame = sorted((camvid / "val").iterdir())[0]
    result = sanet_cli("infer", frame, "-o", tmp_path / "out")
    assert result.returncode == 0 and "real-CamVid" in result.stdout, result.stderr
    mask = read_image(str(tmp_path / "out" / (frame.stem + "_mask.png")))
    height, width = mask.shape[:2]
    bottom = mask[height * 7 // 8:, width // 4: 3 * width // 4].reshape(-1, 3)  # the road ahead of the car
    assert np.mean(np.all(bottom == CAMVID_PALETTE[ROAD], axis=1)) > 0.6


def test_eval_camvid_without_a_model_runs_the_real_model(shipped_camvid, camvid, sanet_cli):
    result = sanet_cli("eval", "--data", camvid, "--dataset", "camvid", "--limit", 3)
    assert result.returncode == 0 and "real-CamVid" in result.stdout, result.stderr
    accuracy = float(result.stdout.split("pixel accuracy")[1].split("%")[0])
    assert accuracy > 80.0, result.stdout


@pytest.fixture(scope="session")
def real_onnx(camvid_model, shipped_camvid, camvid, ort, tmp_path_factory):
    """(FP32 ONNX, Q/DQ INT8 ONNX) of the shipped real model at ONNX_SIZE. The FP32 file is exported here (torch 2.1
    on the Jetson stack); the Q/DQ file is calibrated on 8 CamVid train crops, or, with SANET_CI_HANDOFF set and a
    file already there, taken from that folder (the Jetson-stack run), and left there for it otherwise."""
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.export import ExportConfig, export_onnx
    from sanet.fileio import sha256_file

    out = tmp_path_factory.mktemp("real_onnx")
    fp32 = str(out / "sanet_camvid_fp32.onnx")
    export_onnx(camvid_model, fp32, ExportConfig(*ONNX_SIZE), source_sha256=sha256_file(shipped_camvid))
    handoff = os.environ.get("SANET_CI_HANDOFF")
    shared = os.path.join(handoff, "sanet_camvid_int8_qdq.onnx") if handoff else None
    if shared and os.path.isfile(shared):
        return fp32, shared
    import onnxruntime.quantization as quantization

    if "calibration_cache_path" not in inspect.signature(quantization.quantize_static).parameters:
        message = "this ONNX Runtime cannot quantize from precomputed ranges and SANET_CI_HANDOFF holds no Q/DQ file"
        if handoff:  # CI: the main session must have left the file
            pytest.fail(message + ": run the main test session first, as .ci/run does")
        pytest.skip(message)
    manifest = plan_crops(str(camvid / "train"), CropConfig(*ONNX_SIZE, count=8))
    qdq = quantize_qdq(fp32, str(out / "sanet_camvid_int8_qdq.onnx"), manifest, QuantizeConfig())
    if shared:
        os.makedirs(handoff, exist_ok=True)
        shutil.copyfile(qdq, shared)
    return fp32, qdq


@pytest.mark.parametrize("kind, min_agreement", [("fp32", 0.999), ("int8", 0.97)])
def test_real_model_onnx_on_onnx_runtime_agrees_with_pytorch(real_onnx, camvid_model, camvid_val, kind, min_agreement):
    from sanet.parity import compare
    from sanet.runners import OrtRunner, TorchRunner

    path = real_onnx[0] if kind == "fp32" else real_onnx[1]
    with OrtRunner(path) as candidate:
        assert candidate.info.precision == kind and candidate.info.num_classes == 11
        result = compare(TorchRunner(camvid_model), candidate, camvid_val, size=ONNX_SIZE, limit=4, progress=False)
    assert result.pixel_agreement >= min_agreement, result.to_dict()
    assert result.miou_candidate is not None and result.miou_candidate > 0.3, result.to_dict()
