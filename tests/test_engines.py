"""TensorRT engines: provenance sidecars, system checks and route choices on CPU; real builds where TensorRT exists."""
import json
import subprocess
import sys

import pytest

from sanet.engines import (
    EngineConfig,
    check_engine,
    check_platform,
    engine_path,
    int8_route,
    make_sidecar,
    parse_l4t_release,
    read_sidecar,
    sidecar_mismatches,
    sidecar_path,
)
from sanet.errors import SanetError
from sanet.export import read_metadata

XAVIER = {"tensorrt": "8.5.2.2", "gpu": "Xavier", "compute_capability": "7.2", "machine": "aarch64", "l4t": "R35.4.1"}
RTX3090 = {"tensorrt": "10.3.0", "gpu": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6", "machine": "x86_64",
           "l4t": None}


@pytest.fixture()
def fake_plan(exported, tmp_path):
    """A plan file's bytes and a sidecar written as build_engine writes it (the bytes are opaque here)."""
    _, paths = exported
    onnx_path = paths[(128, 256)]
    plan = tmp_path / "sanet_128x256_b1_fp16.plan"
    plan.write_bytes(b"serialized engine bytes")
    sidecar = make_sidecar(str(plan), str(onnx_path), read_metadata(onnx_path), XAVIER, EngineConfig("fp16"), None, 12.3)
    (tmp_path / (plan.name + ".json")).write_text(json.dumps(sidecar))
    return plan, sidecar


def test_sidecar_records_provenance(fake_plan, exported):
    plan, sidecar = fake_plan
    assert read_sidecar(plan) == sidecar
    assert sidecar["input"] == {"name": "images", "shape": [1, 3, 128, 256], "layout": "float-nchw"}
    assert sidecar["system"]["tensorrt"] == "8.5.2.2" and sidecar["precision"] == "fp16"
    assert sidecar["build"]["workspace_mib"] == 2048 and sidecar["model"]["sanet.classes"] == "19"
    assert len(sidecar["onnx_sha256"]) == 64 and sidecar["build_seconds"] == 12.3
    assert check_engine(plan, dict(XAVIER)) == sidecar


@pytest.mark.parametrize("change, field", [("tensorrt", "10.3.0"), ("compute_capability", "8.7"),
                                           ("machine", "x86_64"), ("l4t", "R35.2.1")])
def test_engine_from_another_system_is_refused(fake_plan, change, field):
    plan, _ = fake_plan
    with pytest.raises(SanetError, match="rebuild it on this machine") as error:
        check_engine(plan, dict(XAVIER, **{change: field}))
    assert change in str(error.value) and "\n" not in str(error.value)


def test_gpu_name_alone_does_not_invalidate(fake_plan):
    plan, sidecar = fake_plan
    assert sidecar_mismatches(sidecar, dict(XAVIER, gpu="Jetson AGX Xavier 32GB")) == []
    assert len(sidecar_mismatches(sidecar, RTX3090)) == 4


def test_missing_corrupt_or_replaced_engine_files(fake_plan, tmp_path):
    plan, sidecar = fake_plan
    with pytest.raises(SanetError, match="engine not found"):
        read_sidecar(tmp_path / "nope.plan")
    plan.write_bytes(b"another engine")
    with pytest.raises(SanetError, match="does not match its sidecar"):
        read_sidecar(plan)
    side = tmp_path / sidecar_path(plan.name)
    side.write_text("{truncated")
    with pytest.raises(SanetError, match="sidecar .* is corrupt"):
        read_sidecar(plan)
    side.write_text(json.dumps({"format": 1}))
    with pytest.raises(SanetError, match="incomplete"):
        read_sidecar(plan)
    side.unlink()
    with pytest.raises(SanetError, match="no provenance sidecar"):
        read_sidecar(plan)


def test_names_routes_and_platform_checks():
    assert engine_path("out/sanet_1024x2048_b1.onnx", "fp16") == "out/sanet_1024x2048_b1_fp16.plan"
    assert engine_path("out/sanet_1024x2048_b1_int8_qdq.onnx", "int8", 0) == "out/sanet_1024x2048_b1_int8_dla0.plan"
    assert parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64") == "R35.4.1"
    assert parse_l4t_release("") is None and parse_l4t_release("garbage") is None
    plain, quantized = {}, {"sanet.quantization": "qdq"}
    assert int8_route(EngineConfig("int8"), "8.5.2.2", plain) == "classic"
    assert int8_route(EngineConfig("int8"), "10.3.0", plain) == "qdq"
    assert int8_route(EngineConfig("int8", int8_route="classic"), "10.3.0", plain) == "classic"
    assert int8_route(EngineConfig("int8"), "8.5.2.2", quantized) == "qdq"
    with pytest.raises(SanetError, match="no implicit INT8 calibration"):
        int8_route(EngineConfig("int8", int8_route="classic"), "11.0.0", plain)
    with pytest.raises(SanetError, match="no DLA"):
        check_platform("fp16", True, True, 0, 0, False)
    with pytest.raises(SanetError, match="DLA cores 0..1"):
        check_platform("fp16", True, True, 2, 2, False)
    with pytest.raises(SanetError, match="cannot run explicit Q/DQ"):
        check_platform("int8", True, True, 2, 0, True)
    with pytest.raises(SanetError, match="no fast INT8"):
        check_platform("int8", True, False, 0, None, False)
    check_platform("fp16", None, None, 0, None, False)  # TensorRT 11 no longer reports fast FP16: assume it
    with pytest.raises(SanetError, match="DLA runs FP16 or INT8 only"):
        EngineConfig("fp32", dla_core=0)
    with pytest.raises(SanetError, match="unknown precision"):
        EngineConfig("int4")


@pytest.mark.filterwarnings("ignore:calibrating on only")
def test_build_refuses_onnx_runtime_only_int8_before_touching_tensorrt(exported, synth_small, tmp_path):
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.engines import build_engine

    _, paths = exported
    manifest = plan_crops(str(synth_small), CropConfig(128, 256, count=4))
    cpu_only = quantize_qdq(paths[(128, 256)], tmp_path / "u8.onnx", manifest, QuantizeConfig(activations="uint8"))
    with pytest.raises(SanetError, match="TensorRT needs symmetric int8"):
        build_engine(str(cpu_only), str(tmp_path / "x.plan"), EngineConfig("int8"))
    assert not (tmp_path / "x.plan").exists()


def export_cli(*argv):
    return subprocess.run([sys.executable, "-m", "sanet.cli", "export", *argv], capture_output=True, text=True, timeout=600)


def test_export_cli_without_tensorrt_keeps_the_onnx_and_says_why(trained, synth_small, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the engine is built instead")
    except ImportError:
        pass
    _, _, best = trained
    out = tmp_path / "exports"
    result = export_cli(str(best), "--res", "128", "256", "-o", str(out), "--fp16", "--qdq", "--calib", str(synth_small),
                        "--calib-count", "8", "--parity-data", str(synth_small))
    assert result.returncode == 1 and "TensorRT is not installed" in result.stderr and "Traceback" not in result.stderr
    assert (out / "sanet_128x256_b1.onnx").is_file() and (out / "sanet_128x256_b1_int8_qdq.onnx").is_file()
    assert (out / "sanet_128x256_b1.calib.json").is_file() and "delta mIoU" in result.stdout
    assert not list(out.glob("*.plan"))


def test_export_cli_int8_bad_input(tmp_path, synth_small):
    for argv, message in ((["--qdq"], "needs calibration images"),
                          (["--qdq", "--calib", str(tmp_path / "none")], "calibration folder not found"),
                          (["--qdq", "--calib", str(synth_small), "--int8-fallback", "auto"], "add --parity-data"),
                          (["--int8-route", "magic"], "invalid choice")):
        result = export_cli("--random-init", "--res", "64", "128", "-o", str(tmp_path / "o"), *argv)
        assert result.returncode in (1, 2) and message in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def tensorrt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack or an NVIDIA TensorRT container)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    return trt


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_build_and_parity_on_gpu(tensorrt_gpu, exported, synth_small, tmp_path, precision):
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.data import open_dataset
    from sanet.engines import TrtRunner, build_engine, system_facts, tensorrt_major
    from sanet.parity import compare
    from sanet.runners import TorchRunner

    model, paths = exported
    source = paths[(128, 256)]
    manifest = plan_crops(str(synth_small), CropConfig(128, 256, count=16))
    if precision == "int8" and tensorrt_major(tensorrt_gpu.__version__) >= 10:
        source = quantize_qdq(source, tmp_path / "q.onnx", manifest, QuantizeConfig())
    plan = tmp_path / "engine.plan"
    build_engine(str(source), str(plan), EngineConfig(precision, timing_cache=str(tmp_path / "timing.cache")), manifest)
    assert read_sidecar(plan)["system"] == system_facts(tensorrt_gpu)
    with TrtRunner(str(plan)) as runner:
        result = compare(TorchRunner(model), runner, open_dataset(str(synth_small), "cityscapes", "val"), progress=False)
    assert result.passed, result.failures
