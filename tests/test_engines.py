"""TensorRT engines: provenance sidecars, system checks and the route table on CPU; every route built under the
TensorRT simulator per API listing; real builds where TensorRT exists."""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from sanet.engines import (
    EngineConfig,
    check_engine,
    check_platform,
    make_sidecar,
    parse_l4t_release,
    read_sidecar,
    sidecar_mismatches,
    sidecar_path,
)
from sanet.errors import SanetError
from sanet.export import read_metadata
from sanet.routes import check_source, route_for, strongly_typed_release, table

XAVIER = {"tensorrt": "8.5.2.2", "gpu": "Xavier", "compute_capability": "7.2", "machine": "aarch64", "l4t": "R35.4.1"}
RTX3090 = {"tensorrt": "10.3.0", "gpu": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6", "machine": "x86_64",
           "l4t": None}


@pytest.fixture(scope="module")
def onnx_128(tmp_path_factory, ort):
    """A seeded random-init SANet exported at 128x256 (sidecar and route tests need no trained weights)."""
    import torch

    from sanet.export import ExportConfig, export_onnx
    from sanet.model import build_model

    path = tmp_path_factory.mktemp("onnx_128") / "sanet_128x256.onnx"
    torch.manual_seed(0)
    export_onnx(build_model("sanet", 19, aux_head=False).eval(), path, ExportConfig(128, 256), source_sha256="test")
    return path


@pytest.fixture()
def fake_plan(onnx_128, tmp_path):
    """A plan file's bytes and a sidecar written as build_engine writes it (the bytes are opaque here)."""
    onnx_path = onnx_128
    plan = tmp_path / "sanet_128x256_b1_fp16.plan"
    plan.write_bytes(b"serialized engine bytes")
    sidecar = make_sidecar(str(plan), str(onnx_path), read_metadata(onnx_path), XAVIER, EngineConfig("fp16"), None, 12.3)
    (tmp_path / (plan.name + ".json")).write_text(json.dumps(sidecar))
    return plan, sidecar


def test_sidecar_records_provenance(fake_plan):
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


def test_names_and_l4t():
    from sanet.model import build_model
    from sanet.pipeline import Pipeline

    model = build_model("sanet", 19, aux_head=False)
    assert Pipeline(model, out_dir="out").path("engine", (1024, 2048), "fp16") == "out/sanet_1024x2048_b1_fp16.plan"
    dla = Pipeline(model, out_dir="out", engine_config=EngineConfig("int8", dla_core=0))
    assert dla.path("engine", (1024, 2048), "int8") == "out/sanet_1024x2048_b1_int8_dla0.plan"
    assert Pipeline(model, out_dir="out").path("onnx-fp16", (512, 1024)) == "out/sanet_512x1024_b1_fp16.onnx"
    assert Pipeline(model, out_dir="out").path("qdq-fp16", (512, 1024)) == "out/sanet_512x1024_b1_int8_qdq_fp16.onnx"
    assert parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64") == "R35.4.1"
    assert parse_l4t_release("") is None and parse_l4t_release("garbage") is None


# The route table (docs/tensorrt-routes.md): release x precision -> route, ONNX artifact, typing, builder flags.
ROUTES = [
    ("8.5.2", "fp32", "fp32", "onnx", "weak", "-"), ("8.5.2", "fp16", "fp16-flag", "onnx", "weak", "FP16"),
    ("8.5.2", "int8", "int8-classic", "onnx", "weak", "INT8+FP16"),
    ("10.3", "fp32", "fp32", "onnx", "weak", "-"), ("10.3", "fp16", "fp16-flag", "onnx", "weak", "FP16"),
    ("10.3", "int8", "int8-qdq", "qdq", "weak", "INT8+FP16"),
    ("10.13", "fp32", "fp32", "onnx", "strong", "-"), ("10.13", "fp16", "fp16-typed", "onnx-fp16", "strong", "-"),
    ("10.13", "int8", "int8-mixed", "qdq-fp16", "strong", "-"),
    ("11.4", "fp32", "fp32", "onnx", "strong", "-"), ("11.4", "fp16", "fp16-typed", "onnx-fp16", "strong", "-"),
    ("11.4", "int8", "int8-mixed", "qdq-fp16", "strong", "-"),
]


def test_route_table():
    assert table() == ROUTES
    assert [strongly_typed_release(v) for v in ("8.6.1", "10.0", "10.11.0", "10.12.0", "10.13.3.9", "11.0")] == [
        False, False, False, True, True, True]
    for version in ("8.5.2.2", "10.3.0", "10.13.3.9", "11.4.0.106"):  # nothing outside INT8 runs FP32 unless audited
        assert route_for(version, "int8").float_precision == "fp16" and route_for(version, "fp16").precision == "fp16"
    # the user's --int8-route is honoured or refused, never swapped
    assert route_for("10.3.0", "int8", "classic").name == "int8-classic"
    assert route_for("8.5.2", "int8", "qdq").name == "int8-qdq"
    assert route_for("10.13", "int8", "classic").name == "int8-classic"  # weakly typed, deprecated, still there
    assert route_for("8.5.2", "int8", onnx_meta={"sanet.quantization": "qdq", "sanet.precision": "int8"}).name == "int8-qdq"
    with pytest.raises(SanetError, match="no implicit INT8 calibration"):
        route_for("11.4", "int8", "classic")
    with pytest.raises(SanetError, match="already Q/DQ-quantized"):
        route_for("10.3", "int8", "classic", {"sanet.quantization": "qdq", "sanet.precision": "int8"})
    with pytest.raises(SanetError, match="unknown INT8 route"):
        route_for("10.3", "int8", "magic")
    with pytest.raises(SanetError, match="cannot read TensorRT version"):
        route_for("banana", "fp16")


def test_route_refuses_the_wrong_onnx():
    fp32, half = {"sanet.precision": "fp32"}, {"sanet.precision": "fp16", "sanet.float_precision": "fp16"}
    qdq = {"sanet.precision": "int8", "sanet.quantization": "qdq"}
    check_source(route_for("11.4", "fp16"), "m_fp16.onnx", half, "11.4")
    check_source(route_for("8.5.2", "fp16"), "m.onnx", fp32, "8.5.2")
    with pytest.raises(SanetError, match="from the FP16 ONNX .sanet-export --fp16 writes .stem._fp16.onnx., but m.onnx is"):
        check_source(route_for("11.4", "fp16"), "m.onnx", fp32, "11.4")
    with pytest.raises(SanetError, match="int8-mixed from the FP16 Q/DQ ONNX"):
        check_source(route_for("10.13", "int8"), "q.onnx", qdq, "10.13")
    with pytest.raises(SanetError, match="route fp32 from the FP32 export"):  # a Q/DQ file is no FP32 engine
        check_source(route_for("10.3", "fp32"), "q.onnx", qdq, "10.3")
    emulation = {"sanet.precision": "int8", "sanet.quantization": "classic-emulation"}  # sanet-parity's CPU stand-in
    for route in (route_for("8.5.2", "int8", "qdq"), route_for("10.3", "int8"), route_for("8.5.2", "int8")):
        with pytest.raises(SanetError, match="emulates TensorRT's classic calibration on the CPU"):
            check_source(route, "c.onnx", emulation, "8.5.2")


def test_platform_checks():
    classic, qdq, fp16 = route_for("8.5.2", "int8"), route_for("8.5.2", "int8", "qdq"), route_for("8.5.2", "fp16")
    with pytest.raises(SanetError, match="no DLA"):
        check_platform(fp16, True, True, 0, 0)
    with pytest.raises(SanetError, match="DLA cores 0..1"):
        check_platform(fp16, True, True, 2, 2)
    with pytest.raises(SanetError, match="cannot run explicit Q/DQ"):
        check_platform(qdq, True, True, 2, 0)
    check_platform(classic, True, True, 2, 0)
    with pytest.raises(SanetError, match="no fast INT8"):
        check_platform(classic, True, False, 0, None)
    with pytest.raises(SanetError, match="no fast FP16"):
        check_platform(fp16, False, True, 0, None)
    check_platform(route_for("11.4", "fp16"), None, None, 0, None)  # TensorRT 11 no longer reports fast FP16: assume it
    with pytest.raises(SanetError, match="DLA runs FP16 or INT8 only"):
        EngineConfig("fp32", dla_core=0)
    with pytest.raises(SanetError, match="unknown precision"):
        EngineConfig("int4")


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
@pytest.mark.filterwarnings("ignore:calibrating on only")
def test_build_refuses_onnx_runtime_only_int8_before_touching_tensorrt(onnx_128, synth_small, tmp_path):
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.engines import build_engine

    manifest = plan_crops(str(synth_small), CropConfig(128, 256, count=4))
    cpu_only = quantize_qdq(onnx_128, tmp_path / "u8.onnx", manifest, QuantizeConfig(activations="uint8"))
    with pytest.raises(SanetError, match="TensorRT needs symmetric int8"):
        build_engine(str(cpu_only), str(tmp_path / "x.plan"), EngineConfig("int8"))
    assert not (tmp_path / "x.plan").exists()


def export_cli(*argv):
    return subprocess.run([sys.executable, "-m", "sanet.cli", "export", *argv], capture_output=True, text=True, timeout=600)


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_export_cli_without_tensorrt_keeps_the_onnx_and_says_why(synth_small, tmp_path):
    """No TensorRT (subprocess, no simulator): the ONNX and Q/DQ files are complete and the CLI says why no plan.
    Untrained weights and no parity data: INT8 parity of a model is the calibration tests' business."""
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the engine is built instead")
    except ImportError:
        pass
    out = tmp_path / "exports"
    result = export_cli("--random-init", "--res", "64", "128", "-o", str(out), "--fp16", "--qdq", "--calib", str(synth_small),
                        "--calib-count", "4")
    assert result.returncode == 1 and "TensorRT is not installed" in result.stderr and "Traceback" not in result.stderr
    assert (out / "sanet_64x128_b1.onnx").is_file() and (out / "sanet_64x128_b1_int8_qdq.onnx").is_file()
    assert (out / "sanet_64x128_b1.calib.json").is_file() and "no parity data" in result.stdout
    assert not list(out.glob("*.plan"))
    # --fp16 without TensorRT: the FP16 ONNX the strongly typed releases build from, audited on the calibration images
    half = read_metadata(out / "sanet_64x128_b1_fp16.onnx")
    assert half["sanet.precision"] == "fp16" and json.loads(half["sanet.fp16_audit"])["images"] == 16
    assert "fp16 onnx" in result.stdout and "calibration image(s) of" in result.stdout


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
def test_engine_build_and_parity_on_gpu(tensorrt_gpu, synth_small, tmp_path, precision, request):
    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.data import open_dataset
    from sanet.engines import TrtRunner, build_engine, system_facts, tensorrt_major
    from sanet.parity import compare
    from sanet.runners import TorchRunner

    model, paths = request.getfixturevalue("exported")  # trains only where a real TensorRT GPU is present
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


# ------------------------------------------------------------------------------------------------------------
# Every engine path under the TensorRT simulator (tests/trtsim.py), once per API listing (SANET_TRT_API).
# ------------------------------------------------------------------------------------------------------------
SIM_SIZE = (64, 128)


@pytest.fixture(scope="session")
def small_onnx(synth_small, ort, tmp_path_factory):
    """A seeded random-init SANet as FP32 ONNX at 64x128, its calibration manifest (4 crops) and Q/DQ INT8 twin.
    The engine tests compare TensorRT (simulated) with ONNX Runtime on the same graph: no training needed."""
    import warnings

    import torch

    from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq
    from sanet.export import ExportConfig, export_onnx
    from sanet.model import build_model

    out = tmp_path_factory.mktemp("sim_onnx")
    path = out / "sanet_64x128_b1.onnx"
    torch.manual_seed(0)
    export_onnx(build_model("sanet", 19, aux_head=False).eval(), path, ExportConfig(*SIM_SIZE), source_sha256="test")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "calibrating on only")
        manifest = plan_crops(str(synth_small), CropConfig(*SIM_SIZE, count=4))
    if not ort_quantizes():  # ONNX Runtime 1.16 (the Jetson stack): no Q/DQ file; its TensorRT 8.5 calibrates classically
        return path, None, manifest
    qdq = quantize_qdq(path, out / "sanet_64x128_b1_int8_qdq.onnx", manifest, QuantizeConfig())
    return path, pathlib.Path(qdq), manifest


def ort_quantizes():
    """Whether this ONNX Runtime writes Q/DQ files from precomputed ranges (not 1.16, JetPack 5's)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


@pytest.fixture(scope="session")
def sources(small_onnx):
    """{ONNX kind: path}: small_onnx's FP32 and Q/DQ files and their FP16 twins, float32 islands from an FP16 range
    audit over the calibration crops (as the pipeline makes them)."""
    import onnx

    from sanet.calibration import iter_batches
    from sanet.numerics import fp16_range_audit, fp32_islands, to_fp16

    onnx_path, qdq, manifest = small_onnx
    islands = fp32_islands(fp16_range_audit(onnx_path, iter_batches(manifest, 1)), onnx_path)
    found = {"onnx": onnx_path, "qdq": qdq, "qdq-fp16": None}
    for kind, source in (("onnx-fp16", onnx_path), ("qdq-fp16", qdq)):
        if source is not None:
            found[kind] = source.with_name(source.stem + "_fp16.onnx")
            onnx.save(to_fp16(source, islands), str(found[kind]))
    return found


@pytest.fixture(scope="session")
def sim_engines(trt_session, small_onnx, sources, tmp_path_factory):
    """FP32, FP16 and INT8 plans built once per API listing, each from its route's ONNX: {precision: path or the
    SanetError refusing it}."""
    import trtsim

    from sanet.engines import EngineConfig, build_engine

    manifest = small_onnx[2]
    out = tmp_path_factory.mktemp("sim_engines_" + trt_session.version)
    plans = {}
    with trtsim.installed(trt_session):
        for precision in ("fp32", "fp16", "int8"):
            source = sources[route_for(trt_session.version, precision).onnx]
            plan = out / "{}.plan".format(precision)
            if source is None:
                plans[precision] = None  # needs a Q/DQ file this ONNX Runtime cannot write
                continue
            try:
                build_engine(str(source), str(plan), EngineConfig(precision, workspace_mib=64), manifest, report=lambda m: None)
                plans[precision] = plan
            except SanetError as exc:
                plans[precision] = exc
    return plans


def sample_images(manifest, count=2):
    """``count`` single-image batches (1, H, W, 3) of the calibration crops."""
    from sanet.calibration import iter_batches

    return list(iter_batches(manifest, 1))[:count]


def predictions(runner, images):
    """Class maps and logits of a batch-1 runner over a list of (1, H, W, 3) images, stacked."""
    results = [runner.predict(image) for image in images]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def build_events(simulation):
    return [event for kind, event in simulation.events if kind == "build"]


@pytest.mark.tensorrt
def test_simulated_module_is_the_listed_api(trt_sim):
    import trtsim

    trt, api = trt_sim.module, trt_sim.api
    listed = set(api.enums) | set(api.classes) | set(api.functions) | set(api.consts)
    assert set(trtsim.dump_names(trt)) == listed and trt.__version__ == api.version
    assert not hasattr(trt, "Simulation") and not hasattr(trt, "np")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        trt.Builder()  # argument count
    config = builder.create_builder_config()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(int(trt.BuilderFlag.GPU_FALLBACK))  # an int is not a BuilderFlag
    with pytest.raises(TypeError):
        config.default_device_type = "DLA"
    with pytest.raises(AttributeError, match="can't set attribute"):
        builder.num_DLA_cores = 4
    with pytest.raises(TypeError, match="No constructor"):
        trt.ICudaEngine()
    has_fp16 = "FP16" in api.enums["BuilderFlag"]
    assert hasattr(trt.BuilderFlag, "FP16") == has_fp16 == (trt_sim.major < 11)
    assert hasattr(trt, "IInt8EntropyCalibrator2") == (trt_sim.major < 11)
    # JetPack 5's 8.5 lacks what 8.6 added; the 8.6.1 listing stands for it
    assert hasattr(config, "builder_optimization_level") == (trt_sim.major >= 10)


@pytest.mark.tensorrt
def test_our_dtype_map_survives_85_nptype(trt_sim):
    from sanet.engines import numpy_dtype

    trt = trt_sim.module
    for name, expected in (("FLOAT", np.float32), ("HALF", np.float16), ("INT8", np.int8), ("BOOL", np.bool_)):
        assert numpy_dtype(getattr(trt.DataType, name)) == np.dtype(expected)
    if trt_sim.major == 8:
        with pytest.raises(AttributeError, match="bool"):
            trt.nptype(trt.float32)  # 8.5.2 with numpy >= 1.24: what TrtRunner used to call
    else:
        assert trt.nptype(trt.float32) is np.float32


@pytest.mark.tensorrt
def test_parser_mirrors_the_onnx(trt_sim, small_onnx):
    import onnx

    trt = trt_sim.module
    onnx_path, _, _ = small_onnx
    proto = onnx.load(str(onnx_path))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0 if trt_sim.major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    assert network.num_layers == len(proto.graph.node) and network.num_inputs == 1 and network.num_outputs == 1
    assert network.get_input(0).name == "images" and tuple(network.get_input(0).shape) == (1, 3) + SIM_SIZE
    assert [network.get_layer(i).name for i in range(network.num_layers)] == [n.name for n in proto.graph.node]
    assert network.get_input(0).dtype == trt.float32
    assert not parser.parse(b"not an onnx file") and parser.num_errors >= 1
    if trt_sim.major == 8:  # 8.5's ONNX parser needs an explicit-batch network
        implicit = trt.OnnxParser(builder.create_network(0), logger)
        assert not implicit.parse(onnx_path.read_bytes()) and "explicit batch" in str(implicit.get_error(0))


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_builds_and_runner_parity(trt_sim, sim_engines, small_onnx, precision):
    """FP16 builds on every release: the FP16 flag on the FP32 ONNX (8.5, 10.0-10.11), the FP16 ONNX strongly typed
    (10.12+, 11: no FP16 flag, each layer typed as in the ONNX)."""
    import trtsim

    from sanet.engines import TrtRunner, read_sidecar, system_facts
    from sanet.runners import OrtRunner

    plan = sim_engines[precision]
    assert not isinstance(plan, SanetError), plan
    route = route_for(trt_sim.version, precision)
    sidecar = read_sidecar(plan)
    assert sidecar["system"] == system_facts(trt_sim.module) and sidecar["precision"] == precision
    assert sidecar["unquantized_precision"] == precision and sidecar["route"]["name"] == route.name
    assert set(sidecar["groups"].values()) == {precision} and "sff1" in sidecar["groups"]
    header = trtsim.plan_header(plan)  # this plan's own build record (other tests build in the same session)
    assert header["fp16"] == (route.name == "fp16-flag") and not header["int8"]
    assert header["strongly_typed"] == route.strongly_typed == strongly_typed_release(trt_sim.version)
    if route.name == "fp16-typed":  # types from the ONNX: FP16 layers, FP32 only for the network input/output casts
        assert header["layer_types"]["HALF"] > 100 and header["layer_types"].get("FLOAT", 0) <= 2
    assert header["pools"] == {"WORKSPACE": 64 << 20} and header["tensorrt"] == trt_sim.version
    images = sample_images(small_onnx[2])
    runner = TrtRunner(str(plan))
    assert runner.info.input_size == SIM_SIZE and runner.info.precision == precision and runner.context is None
    with runner, OrtRunner(small_onnx[0]) as reference:
        classes, logits = predictions(runner, images)
        expected, expected_logits = predictions(reference, images)
    assert runner.context is None  # closed
    assert logits.shape == expected_logits.shape == (2, 19) + SIM_SIZE and logits.dtype == np.float32
    assert np.abs(logits - expected_logits).max() < (1e-4 if precision == "fp32" else 0.5)
    assert (classes == expected).mean() > 0.98


@pytest.mark.tensorrt
def test_runner_lifecycle(trt_sim, sim_engines):
    from sanet.engines import TrtRunner

    runner = TrtRunner(str(sim_engines["fp32"]))
    loaded = sum(kind == "deserialize" for kind, _ in trt_sim.events)
    with pytest.raises(SanetError, match="not active"):
        runner.infer(np.zeros((1, 3) + SIM_SIZE, np.float32))
    assert sum(kind == "deserialize" for kind, _ in trt_sim.events) == loaded  # construction is cheap
    runner.activate()
    assert runner.context is not None and sum(kind == "deserialize" for kind, _ in trt_sim.events) == loaded + 1
    assert runner.infer(np.zeros((1, 3) + SIM_SIZE, np.float32)).shape == (1, 19) + SIM_SIZE
    runner.close()
    runner.close()
    assert runner.context is None and runner.buffers == {}


@pytest.mark.tensorrt
def test_device_phases_and_active_flag(trt_sim, sim_engines):
    from sanet.engines import TrtRunner
    from sanet.runners import activated

    runner = TrtRunner(str(sim_engines["fp32"]))
    inputs = np.random.default_rng(0).standard_normal((1, 3) + SIM_SIZE).astype(np.float32)
    with runner:
        assert runner.active and runner.device_resident
        with activated(runner):  # a library call inside the caller's block must not close the caller's engine
            logits = runner.infer(inputs)
        assert runner.active and runner.context is not None
        runner.stage(inputs)
        runner.execute()
        class_map = runner.fetch(class_map=True)
        with pytest.raises(SanetError, match="expects float32"):
            runner.stage(inputs.astype(np.float64))
    assert not runner.active and runner.context is None
    assert class_map.dtype == np.uint8 and class_map.shape == (1,) + SIM_SIZE
    np.testing.assert_array_equal(class_map, logits.argmax(axis=1))


@pytest.mark.tensorrt
def test_stale_or_garbage_engines_are_refused(trt_sim, sim_engines, tmp_path):
    from sanet.engines import TrtRunner, sidecar_path
    from sanet.fileio import sha256_file

    plan = tmp_path / "copy.plan"
    plan.write_bytes(sim_engines["fp32"].read_bytes())
    sidecar = json.loads(pathlib.Path(sidecar_path(sim_engines["fp32"])).read_text())
    stale = dict(sidecar, system=dict(sidecar["system"], tensorrt="7.2.3"))
    pathlib.Path(sidecar_path(plan)).write_text(json.dumps(stale))
    with pytest.raises(SanetError, match="tensorrt 7.2.3 .built. vs {}".format(re.escape(trt_sim.version))):
        TrtRunner(str(plan))
    plan.write_bytes(b"garbage that is no plan")
    pathlib.Path(sidecar_path(plan)).write_text(json.dumps(dict(sidecar, engine_sha256=sha256_file(plan))))
    runner = TrtRunner(str(plan))
    with pytest.raises(SanetError, match="cannot deserialize .*magicTagRead"):  # TensorRT's own words, quoted
        runner.activate()
    assert runner.engine is None and runner.runtime is None and not runner.active


@pytest.mark.tensorrt
def test_failed_activation_frees_everything_and_can_be_retried(trt_sim, sim_engines, monkeypatch):
    """TensorRT refuses the output buffer's address (set_tensor_address -> False) after the context and the input
    buffer exist: nothing stays allocated, the runner is closed, and a later activate() works."""
    import trtsim

    from sanet.engines import TrtRunner

    accept = trtsim.ContextSim.set_tensor_address

    def refuse_output(context, name, memory):
        if name != "images":  # TensorRT logs why to the logger its runtime was given, and returns False
            context.sim.emit("ERROR", "setTensorAddress: address of {} is not 256-byte aligned".format(name), runner.logger)
            return False
        return accept(context, name, memory)

    runner = TrtRunner(str(sim_engines["fp32"]))
    monkeypatch.setattr(trtsim.ContextSim, "set_tensor_address", refuse_output)
    with pytest.raises(SanetError, match="refused the buffer of tensor logits .*not 256-byte aligned"):
        runner.activate()
    assert (runner.context, runner.engine, runner.runtime, runner.memory, runner.buffers) == (None, None, None, None, {})
    assert not runner.active
    monkeypatch.setattr(trtsim.ContextSim, "set_tensor_address", accept)
    with runner:  # retried
        assert runner.infer(np.zeros((1, 3) + SIM_SIZE, np.float32)).shape == (1, 19) + SIM_SIZE


@pytest.mark.tensorrt
def test_close_waits_for_the_stream_before_freeing(trt_sim, sim_engines, monkeypatch):
    """close() synchronizes the runner's stream while the buffers are still held, then drops them."""
    from sanet import engines, trtmemory

    runner = engines.TrtRunner(str(sim_engines["fp32"]))
    seen = []

    class Recording(trtmemory.HostMemory):
        def synchronize(self):
            seen.append(len(runner.buffers))

    monkeypatch.setattr(engines, "device_memory", Recording)
    runner.activate()
    runner.stage(np.zeros((1, 3) + SIM_SIZE, np.float32))
    runner.execute()
    seen.clear()
    runner.close()
    assert seen == [2] and runner.buffers == {}  # one wait, with input and output still allocated


@pytest.mark.tensorrt
def test_build_failure_quotes_tensorrt(trt_sim, small_onnx, tmp_path):
    """A classic INT8 build whose calibrator yields no batch: the error is TensorRT's own line, not a generic hint."""
    from sanet.engines import EngineConfig, build_engine

    onnx_path, _, manifest = small_onnx
    config = EngineConfig("int8", int8_route="classic")
    if trt_sim.major >= 11:
        with pytest.raises(SanetError, match="no implicit INT8 calibration"):
            build_engine(str(onnx_path), str(tmp_path / "x.plan"), config, manifest)
        return
    with pytest.raises(SanetError, match="failed to build .*Calibration failure occurred") as error:
        build_engine(str(onnx_path), str(tmp_path / "x.plan"), config, dict(manifest, crops=[]), report=lambda m: None)
    assert "workspace" not in str(error.value) and not (tmp_path / "x.plan").exists()


@pytest.mark.tensorrt
def test_timing_cache_reuse_and_checks(trt_sim, small_onnx, tmp_path):
    import trtsim

    from sanet.engines import EngineConfig, build_engine

    onnx_path = str(small_onnx[0])
    cache = tmp_path / "timing.cache"
    build_engine(onnx_path, str(tmp_path / "a.plan"), EngineConfig("fp32", timing_cache=str(cache)), report=lambda m: None)
    first = build_events(trt_sim)[-1]["timing_cache"]
    build_engine(onnx_path, str(tmp_path / "b.plan"), EngineConfig("fp32", timing_cache=str(cache)), report=lambda m: None)
    second = build_events(trt_sim)[-1]["timing_cache"]
    assert first["hits"] == 0 and first["misses"] > 0 and second == {"hits": first["misses"], "misses": 0}
    cache.write_bytes(b"\x00corrupt")
    with pytest.raises(SanetError, match="corrupt"):
        build_engine(onnx_path, str(tmp_path / "c.plan"), EngineConfig("fp32", timing_cache=str(cache)))
    # a well-formed cache from another TensorRT: set_timing_cache returns False, which must not be ignored
    cache.write_bytes(trtsim.CACHE_MAGIC + json.dumps({"tensorrt": "7.2.3", "entries": []}).encode())
    with pytest.raises(SanetError, match="another TensorRT version"):
        build_engine(onnx_path, str(tmp_path / "d.plan"), EngineConfig("fp32", timing_cache=str(cache)))
    assert not (tmp_path / "d.plan").exists()


@pytest.mark.tensorrt
def test_failed_cache_write_keeps_the_engine(trt_sim, small_onnx, tmp_path):
    from sanet.engines import EngineConfig, build_engine, read_sidecar

    (tmp_path / "not-a-dir").write_text("a file where the cache folder should be")
    notes = []
    plan = tmp_path / "kept.plan"
    build_engine(str(small_onnx[0]), str(plan), EngineConfig("fp32", timing_cache=str(tmp_path / "not-a-dir" / "t.cache")),
                 report=notes.append)
    assert read_sidecar(plan)["precision"] == "fp32"
    assert any("timing cache" in n and "not saved" in n for n in notes)


@pytest.mark.tensorrt
def test_int8_build_routes(trt_sim, sim_engines, small_onnx, sources):
    """INT8 with FP16 around it on every release: classic calibrator + FP16 flag (8.5), Q/DQ with INT8 and FP16 flags
    (10.0-10.11), the FP16 Q/DQ ONNX strongly typed (10.12+, 11)."""
    import trtsim

    from sanet.engines import TrtRunner, read_sidecar
    from sanet.runners import OrtRunner

    plan = sim_engines["int8"]
    if plan is None:
        pytest.skip("this ONNX Runtime cannot write the Q/DQ file TensorRT {} builds INT8 from".format(trt_sim.version))
    assert not isinstance(plan, SanetError), plan
    route = route_for(trt_sim.version, "int8")
    sidecar = read_sidecar(plan)
    header = trtsim.plan_header(plan)  # this plan's own build record
    assert sidecar["route"]["name"] == route.name and sidecar["unquantized_precision"] == "fp16"
    assert set(sidecar["groups"].values()) == {"int8"} and len(sidecar["groups"]) == 9  # every layer group quantized
    if route.name == "int8-mixed":  # strongly typed: no flags; float layers FP16 because the ONNX says so
        assert header["quantized"] and header["strongly_typed"] and not header["fp16"] and not header["int8"]
        assert header["layer_types"]["HALF"] > header["layer_types"].get("FLOAT", 0) + 100
        reference_path = sources["qdq"]
    elif route.name == "int8-qdq":  # weakly typed explicit quantization: INT8 and FP16 flags
        assert header["quantized"] and not header["strongly_typed"] and header["fp16"] and header["int8"]
        reference_path = sources["qdq"]
    else:  # classic calibrator: TensorRT drove get_batch over all 4 crops and stored the cache
        assert route.name == "int8-classic" and header["fp16"] and header["int8"]
        assert header["calibration"]["source"] == "batches" and header["calibration"]["batches"] == 4
        assert header["calibration"]["algorithm"] == "MINMAX_CALIBRATION"  # constants.CLASSIC_CALIBRATOR by default
        assert pathlib.Path(str(plan)[:-len(".plan")] + ".calib.cache").is_file()
        reference_path = small_onnx[0]
    images = sample_images(small_onnx[2])
    with TrtRunner(str(plan)) as runner, OrtRunner(reference_path) as reference:
        agreement = (predictions(runner, images)[0] == predictions(reference, images)[0]).mean()
    # the same file: > 98 %; FP16 float parts against the FP32 Q/DQ file, or classic INT8 at the calibrated scales
    # against FP32 (the simulator computes at them): the INT8 pixel budget (this random-init network's logits are
    # near ties; test_numerics checks the trained pilot on real frames, test_trtsim the calibrated scales)
    assert agreement > (0.90 if route.name in ("int8-mixed", "int8-classic") else 0.98)


@pytest.mark.tensorrt
def test_classic_calibration_protocol(trt_sim, small_onnx, tmp_path):
    from sanet.engines import EngineConfig, build_engine

    onnx_path, _, manifest = small_onnx
    config = EngineConfig("int8", int8_route="classic", calibration_method="minmax")
    if not hasattr(trt_sim.module, "IInt8MinMaxCalibrator"):  # 11: strongly typed only, no calibrators
        with pytest.raises(SanetError, match="no implicit INT8 calibration"):
            build_engine(str(onnx_path), str(tmp_path / "x.plan"), config, manifest)
        return
    build_engine(str(onnx_path), str(tmp_path / "m.plan"), config, manifest, report=lambda m: None)
    assert ("calibration", 4) in trt_sim.events
    build_engine(str(onnx_path), str(tmp_path / "m.plan"), config, manifest, report=lambda m: None)
    assert trt_sim.events[-2:][0] == ("calibration", "cache")  # second build: read_calibration_cache, no batches
    if trt_sim.major >= 10:
        assert any("deprecated" in message for _, message in trt_sim.log)


@pytest.mark.tensorrt
def test_calibrator_exception_is_not_swallowed(trt_sim, small_onnx, tmp_path):
    from sanet.engines import EngineConfig, build_engine

    onnx_path, _, manifest = small_onnx
    if not hasattr(trt_sim.module, "IInt8EntropyCalibrator2"):
        assert trt_sim.major >= 11  # nothing to calibrate: INT8 comes from Q/DQ only
        return
    # the third crop's file is gone: get_batch raises on its third call, after two good batches
    broken = dict(manifest, crops=manifest["crops"][:2] + [["missing.png"] + manifest["crops"][2][1:]] + manifest["crops"][3:])
    plan = tmp_path / "broken.plan"
    with pytest.raises(SanetError, match="INT8 calibration failed") as error:
        build_engine(str(onnx_path), str(plan), EngineConfig("int8", int8_route="classic"), broken, report=lambda m: None)
    assert error.value.__cause__ is not None and not plan.exists()
    assert any("Exception caught in get_batch()" in message for _, message in trt_sim.log)  # what TensorRT did with it


@pytest.mark.tensorrt
def test_dla_placement_comes_from_the_built_engine(trt_sim, small_onnx, sources, tmp_path):
    from sanet.benchplan import row_for
    from sanet.benchreport import markdown_table
    from sanet.engines import EngineConfig, TrtRunner, build_engine

    onnx_path = small_onnx[0]
    if trt_sim.dla is None:  # the x86 listings (10.13, 11.4): no DLA core to build for
        source = sources[route_for(trt_sim.version, "fp16").onnx]  # the file this release builds FP16 from
        with pytest.raises(SanetError, match="no DLA"):
            build_engine(str(source), str(tmp_path / "d.plan"), EngineConfig("fp16", dla_core=0))
        return
    notes = []
    plan = tmp_path / "dla1.plan"
    sidecar = build_engine(str(onnx_path), str(plan), EngineConfig("fp16", dla_core=1), report=notes.append)
    built = build_events(trt_sim)[-1]["placement"]  # what the simulated builder did
    layers = sidecar["layers"]
    assert layers["source"] == "engine inspector" and layers["dla_core"] == 1 and layers["unplaced"] == []
    assert sorted(layers["dla"]) == sorted(name for island in built["islands"] for name in island)
    assert layers["gpu"] == built["gpu"] and len(layers["subgraphs"]) == len(built["islands"])
    assert any(name.endswith("/Resize") for name in layers["gpu"])  # bilinear align_corners=True: GPU on 8.5 and 10
    assert set(layers["kept_on_gpu"]) <= set(layers["gpu"])
    assert notes[0].startswith("DLA core 1 (the built engine): {} of".format(len(layers["dla"])))
    with TrtRunner(str(plan), cuda_graph=True) as runner:  # no graph capture for DLA engines (NVIDIA/TensorRT#3524)
        assert runner.info.device == "dla1" and not runner.cuda_graph and "3524" in runner.info.extra["cuda_graph_note"]
        runner.infer(np.zeros((1, 3) + SIM_SIZE, np.float32))
        row = row_for("64x128", runner.info)  # the bench row says so, in bench.md and bench.json
        assert row.runner.startswith("tensorrt-dla1") and any("without CUDA graphs" in note for note in row.runner_notes)
        assert "without CUDA graphs" in markdown_table([row], {}, {"date": "today"})
    assert trt_sim.events[-1] == ("execute", {"stream": 0, "dla_core": 1})  # ran on the core it was built for


@pytest.mark.tensorrt
def test_pycuda_fallback_uses_the_primary_context(monkeypatch):
    """pycuda.autoinit makes a new context; TensorRT lives in the primary one (pycuda.autoprimaryctx)."""
    import types

    from sanet import trtmemory

    class Stream:
        handle = 7

    imported = []
    package = types.ModuleType("pycuda")
    package.__path__ = []
    driver = types.ModuleType("pycuda.driver")
    driver.Stream = Stream
    for name, module in (("pycuda", package), ("pycuda.driver", driver)):
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("pycuda.autoinit", "pycuda.autoprimaryctx"):
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(package, name.split(".")[1], module, raising=False)
    monkeypatch.setattr(trtmemory, "require", lambda name, hint: imported.append(name) or sys.modules[name])
    monkeypatch.setenv("SANET_DEVICE_MEMORY", "pycuda")
    memory = trtmemory.device_memory()
    assert memory.handle == 7 and "pycuda.autoprimaryctx" in imported and "pycuda.autoinit" not in imported


def test_device_memory_choice_is_explicit(monkeypatch):
    from sanet.trtmemory import HostMemory, device_memory

    monkeypatch.setenv("SANET_DEVICE_MEMORY", "host")
    memory = device_memory()
    assert isinstance(memory, HostMemory)
    buffer = memory.empty((2, 3), np.float32)
    memory.upload(buffer, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert memory.pointer(buffer) == buffer.ctypes.data and memory.download(buffer)[1, 2] == 5
    monkeypatch.setenv("SANET_DEVICE_MEMORY", "cuda-please")
    with pytest.raises(SanetError, match="SANET_DEVICE_MEMORY"):
        device_memory()


@pytest.mark.tensorrt
def test_parser_lint_refuses_before_building(trt_sim, small_onnx, tmp_path):
    trtlint = pytest.importorskip("sanet.trtlint", reason="sanet.trtlint is not in this checkout yet")
    import onnx

    from sanet.engines import EngineConfig, build_engine

    release = trtlint.release_for_version(trt_sim.version)
    assert trtlint.lint(str(small_onnx[0]), release) == []  # our export passes every release's parser rules
    proto = onnx.load(str(small_onnx[0]))
    proto.opset_import[0].version = 99  # no TensorRT parser knows opset 99
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    violations = trtlint.lint(str(bad), release)
    assert violations
    with pytest.raises(SanetError, match="cannot build") as error:  # refused before the parser runs
        build_engine(str(bad), str(tmp_path / "bad.plan"), EngineConfig("fp32"))
    assert str(error.value).splitlines()[1:] == ["  " + str(v) for v in violations]


# ---- reuse: an engine on disk is used again only when nothing that changes it changed
@pytest.fixture(scope="module")
def reuse_template(tmp_path_factory, ort):
    """A seeded random-init SANet and its FP32 ONNX exported once (copied into each test's folder and reused there)."""
    import torch

    from sanet.model import build_model
    from sanet.pipeline import Pipeline

    torch.manual_seed(0)
    model = build_model("sanet", 19, aux_head=False).eval()
    out = tmp_path_factory.mktemp("reuse_template")
    Pipeline(model, "test", out_dir=str(out), verify=False).onnx(SIM_SIZE)
    return model, out


# key -> (listing where the choice exists, precision, the setting that changes); builds are cheap in the simulator,
# so each key is checked once, on the release that has that choice (classic calibration: 8.5; DLA: Xavier's 8.5)
REUSE_KEYS = {
    "workspace": ("10.13", "fp32", dict(engine=dict(workspace_mib=128))),
    "opt_level": ("10.13", "fp32", dict(engine=dict(optimization_level=2))),
    "dla_core": ("8.6", "fp16", dict(engine=dict(dla_core=1))),
    "tensorrt": ("10.3", "fp32", {}),
    "route": ("8.6", "int8", dict(engine=dict(int8_route="qdq"))),
    "calibration": ("8.6", "int8", dict(calib=dict(count=5))),
    "method": ("8.6", "int8", dict(calib=dict(method="entropy"))),
    "keep": ("8.6", "int8", dict(calib=dict(keep=("conv_out32",)))),
}


@pytest.fixture(scope="module")
def simulations():
    """{listing prefix: simulation}, made on first use."""
    import trtsim

    made = {}

    def simulation(prefix):
        if prefix not in made:
            found = [path for path in trtsim.api_files() if path.stem.startswith("tensorrt-" + prefix)]
            if not found:
                pytest.skip("no TensorRT {} API listing here".format(prefix))
            made[prefix] = trtsim.simulate(found[0])
        return made[prefix]

    return simulation


@pytest.mark.tensorrt
@pytest.mark.filterwarnings("ignore:calibrating on only")
@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.recent_ort) if k == "route" else k for k in sorted(REUSE_KEYS)])
def test_engine_reuse_is_keyed_on_everything(simulations, reuse_template, synth_small, tmp_path, key):
    """An engine on disk is reused when nothing changed, and rebuilt (same file) when one thing that changes it did."""
    import shutil

    import trtsim

    from sanet.engines import EngineConfig, read_sidecar
    from sanet.pipeline import CalibSettings, Pipeline

    listing, precision, change = REUSE_KEYS[key]
    simulation = simulations(listing)
    model, template = reuse_template
    for onnx_file in template.glob("*.onnx"):
        shutil.copy(onnx_file, tmp_path)

    def engine(settings, where=simulation):
        engine_settings = dict(dict(workspace_mib=64, dla_core=0 if key == "dla_core" else None), **settings.get("engine", {}))
        calib = CalibSettings(str(synth_small), **dict(dict(count=4), **settings.get("calib", {})), quiet=True)
        pipeline = Pipeline(model, "test", out_dir=str(tmp_path), reuse=True, verify=False, calib_config=calib,
                            engine_config=EngineConfig(**engine_settings))
        before = len(build_events(where))
        with trtsim.installed(where):
            plan = pipeline.engine(SIM_SIZE, precision)
        return plan, len(build_events(where)) > before

    plan, built = engine({})
    assert built and engine({}) == (plan, False)  # nothing changed: reused
    if key == "tensorrt":  # the same folder on a machine with another TensorRT
        elsewhere = simulations("10.13")
        assert engine({}, elsewhere) == (plan, True) and read_sidecar(plan)["system"]["tensorrt"] == elsewhere.version
        return
    if key == "dla_core":  # the core is in the file name (another file), and in the key
        other, built = engine(change)
        assert other.endswith("_dla1.plan") and built and read_sidecar(other)["key"]["dla_core"] == 1
        return
    assert engine(change) == (plan, True), key
    assert engine(change) == (plan, False)  # the new engine is reused in turn
    assert read_sidecar(plan)["key"]["route"] == route_for(simulation.version, precision, change.get(
        "engine", {}).get("int8_route", "auto")).name


@pytest.mark.tensorrt
@pytest.mark.filterwarnings("ignore:calibrating on only")
def test_int8_settings_are_honoured_or_refused(trt_sim, small_onnx, sources, tmp_path):
    """--calib-method percentile is no TensorRT calibrator, an --int8-keep typo names no layer, keeping every group
    quantizes nothing: each refused in one line on the classic route (never turned into something else)."""
    from sanet.engines import EngineConfig, build_engine

    onnx_path, _, manifest = small_onnx
    if trt_sim.major >= 11:
        with pytest.raises(SanetError, match="no implicit INT8 calibration"):
            build_engine(str(onnx_path), str(tmp_path / "x.plan"), EngineConfig("int8", int8_route="classic"), manifest)
        return
    groups = ("conv_out32", "sff2", "sff1", "sce", "resnet.layer4", "resnet.layer3", "resnet.layer2", "resnet.layer1",
              "resnet.conv1")
    for settings, message in ((dict(calibration_method="percentile"), "percentile has no TensorRT calibrator"),
                              (dict(keep=("sff_1",)), "--int8-keep sff_1: no layers of that group"),
                              (dict(keep=groups), "nothing would run INT8")):
        with pytest.raises(SanetError, match=message) as error:
            build_engine(str(onnx_path), str(tmp_path / "x.plan"), EngineConfig("int8", int8_route="classic", **settings),
                         manifest)
        assert "\n" not in str(error.value) and not (tmp_path / "x.plan").exists()
    typed = route_for(trt_sim.version, "int8")
    if not typed.calibrator:  # Q/DQ: the kept groups are in the file; another list is refused, not ignored
        with pytest.raises(SanetError, match="keeps \\[\\] in float, not \\[sff1\\]"):
            build_engine(str(sources[typed.onnx]), str(tmp_path / "x.plan"), EngineConfig("int8", keep=("sff1",)))


@pytest.mark.filterwarnings("ignore:calibrating on only")
def test_nothing_quantized_is_not_int8(reuse_template, synth_small, tmp_path):
    """--int8-keep naming every layer group would write a Q/DQ file with nothing quantized: refused, no file named INT8
    (the auto-fallback's result goes through the same check)."""
    import shutil

    from sanet.calibration import FALLBACK_ORDER
    from sanet.pipeline import CalibSettings, Pipeline

    model, template = reuse_template
    for onnx_file in template.glob("*.onnx"):
        shutil.copy(onnx_file, tmp_path)
    pipeline = Pipeline(model, "test", out_dir=str(tmp_path), reuse=True, verify=False,
                        calib_config=CalibSettings(str(synth_small), 4, keep=FALLBACK_ORDER, quiet=True))
    with pytest.raises(SanetError, match="nothing is quantized and no INT8 model is written"):
        pipeline.qdq(SIM_SIZE)
    assert not list(tmp_path.glob("*qdq*"))


# ---- the CLI in-process under the simulator
@pytest.fixture(scope="session")
def sim_cli_exports(trt_session, synth_small, tmp_path_factory):
    """sanet-export --fp32 --fp16 --int8 --triton --trt-check at 64x128, the same command under every API listing."""
    import trtsim

    from sanet.cli import main

    out = tmp_path_factory.mktemp("sim_cli_" + trt_session.version)
    release = "8.5" if trt_session.major == 8 else str(trt_session.major)
    with trtsim.installed(trt_session):
        code = main(["export", "--random-init", "--res", *map(str, SIM_SIZE), "-o", str(out / "exports"), "--fp32",
                     "--fp16", "--int8", "--calib", str(synth_small), "--calib-count", "4", "--triton", str(out / "triton"),
                     "--trt-check", release])
    return code, out


ARTIFACT_NAMES = {"onnx": "sanet_64x128_b1.onnx", "onnx-fp16": "sanet_64x128_b1_fp16.onnx",
                  "qdq": "sanet_64x128_b1_int8_qdq.onnx", "qdq-fp16": "sanet_64x128_b1_int8_qdq_fp16.onnx"}


@pytest.mark.tensorrt
def test_cli_export_engines_and_triton(trt_session, sim_cli_exports):
    from sanet.engines import read_sidecar

    code, out = sim_cli_exports
    assert code == 0  # --trt-check of this release passed on every ONNX written
    plans = sorted(p.name for p in (out / "exports").glob("*.plan"))
    assert plans == ["sanet_64x128_b1_fp16.plan", "sanet_64x128_b1_fp32.plan", "sanet_64x128_b1_int8.plan"]
    onnx_files = sorted(p.name for p in (out / "exports").glob("*.onnx"))
    typed = strongly_typed_release(trt_session.version)
    int8_onnx = ["sanet_64x128_b1_int8_qdq.onnx"] if trt_session.major >= 10 else []
    half = ["sanet_64x128_b1_fp16.onnx", "sanet_64x128_b1_int8_qdq_fp16.onnx"] if typed else []
    assert onnx_files == sorted(["sanet_64x128_b1.onnx"] + int8_onnx + half)
    for name in plans:
        sidecar = read_sidecar(out / "exports" / name)
        route = route_for(trt_session.version, sidecar["precision"])
        assert sidecar["system"]["tensorrt"] == trt_session.version and sidecar["route"]["name"] == route.name
        assert sidecar["onnx"] == pathlib.Path(ARTIFACT_NAMES[route.onnx]).name
    models = sorted(p.parent.parent.name for p in (out / "triton").glob("*/1/model.plan"))
    assert models == ["sanet_64x128_b1_" + n.rsplit("_", 1)[1][:-len(".plan")] for n in plans]
    config = (out / "triton" / models[0] / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config


@pytest.mark.tensorrt
def test_cli_bench_and_infer_with_engines(trt_sim, sim_cli_exports, synth_small, tmp_path, capsys):
    from sanet.cli import main

    _, out = sim_cli_exports
    plan = out / "exports" / "sanet_64x128_b1_fp32.plan"
    code = main(["bench", "--res", *map(str, SIM_SIZE), "--backends", "onnxruntime", "--precisions", "fp32",
                 "--engine", str(plan), "--data", str(synth_small), "--warmup-seconds", "0.1", "--iterations", "2",
                 "--parity-images", "1", "-o", str(tmp_path / "bench")])
    printed = capsys.readouterr().out
    assert code == 0 and "tensorrt" in printed
    images = sorted((synth_small / "leftImg8bit" / "val").rglob("*.png"))[:1]
    code = main(["infer", str(images[0]), "--engine", str(plan), "-o", str(tmp_path / "pred")])
    assert code == 0 and list((tmp_path / "pred").rglob("*.png"))
