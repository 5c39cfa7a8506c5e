"""The TensorRT simulator's own rules (tests/trtsim.py): pybind11's argument and attribute rules, per-platform DLA,
optimisation profiles, the engine inspector. Each rule is what a product test leans on; the product tests themselves
live beside the code they test (test_engines.py, test_calibration.py)."""
import json

import numpy as np
import pytest
import trtsim


def network_of(trt_sim, proto):
    """(builder, network, logger) with ``proto`` (an onnx ModelProto) parsed into it."""
    trt = trt_sim.module
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if trt_sim.major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(proto.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    return builder, network, logger


def graph(nodes, shape=(1, 8, 16, 16), out_shape=None, initializers=(), opset=17):
    """A one-input one-output ONNX model: input 'x', output 'y'."""
    import onnx
    from onnx import TensorProto, helper

    made = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or shape))],
                             initializer=list(initializers))
    proto = helper.make_model(made, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def dla_build(trt_sim, proto, fallback=True, verbosity="DETAILED"):
    """Build ``proto`` for DLA core 0 in FP16 (GPU fallback by default): (serialized plan or None, build header)."""
    trt = trt_sim.module
    builder, network, logger = network_of(trt_sim, proto)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = 0
    if fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, verbosity)
    plan = builder.build_serialized_network(network, config)
    return plan, (trt_sim.events[-1][1] if plan is not None else None)


def listing(name):
    path = trtsim.API_DIR / name
    if not path.is_file():
        pytest.skip("{} is absent".format(path))
    return path


# ---- pybind11's rules
@pytest.mark.tensorrt
def test_arguments_are_checked_like_pybind(trt_sim):
    trt = trt_sim.module
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        builder.create_network(1.5)  # type_caster<int> refuses floats
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2.5)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, "1024")
    with pytest.raises(TypeError):
        config.DLA_core = 0.0  # properties take the same casters
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, np.int64(1 << 20))  # __index__ is an int
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 1 << 20
    builder.create_network(True)  # bool is an int to pybind11
    with pytest.raises(TypeError, match="incompatible function arguments"):
        trt.Runtime(trt.Logger()).deserialize_cuda_engine("not a buffer")  # str has no buffer protocol
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(None)  # None reaches pointer arguments only, never enums
    builder.error_recorder = None  # a pointer property takes None (nullptr)
    bind = trt_sim.accepts
    assert bind("bool", 1, convert=True) and not bind("bool", 1, convert=False) and not bind("bool", "yes", True)
    assert bind("float", 2, convert=True) and not bind("float", 2, convert=False)
    assert bind("List[int]", (1, 3), True) and not bind("List[int]", [1.0], True) and not bind("List[int]", "13", True)
    assert bind("trt.Dims", (1, 3, 64, 128), convert=True)  # Dims is implicitly convertible from a sequence


@pytest.mark.tensorrt
def test_keywords_bind_by_name_after_an_omitted_optional(trt_sim):
    sim = trt_sim
    # add_scale(input, mode, shift=None, scale=None, power=None): scale given by keyword, shift omitted
    signatures = sim.api.classes["INetworkDefinition"].methods["add_scale"]
    tensor = sim.new("ITensor", trtsim.TensorSim(sim, "t", [1, 3], sim.member("DataType", "FLOAT")))
    mode = sim.member("ScaleMode", "UNIFORM")
    weights = sim.classes["Weights"]()
    bound = sim._bind("INetworkDefinition", "add_scale", signatures, (tensor, mode), {"scale": weights})
    assert bound[:2] == [tensor, mode] and bound[2] is None and bound[3] is weights
    with pytest.raises(TypeError):
        sim._bind("INetworkDefinition", "add_scale", signatures, (tensor, mode), {"input": tensor})  # given twice
    with pytest.raises(TypeError):
        sim._bind("INetworkDefinition", "add_scale", signatures, (tensor, mode), {"scales": weights})  # unknown name
    trt = sim.module
    assert trt.Logger(min_severity=trt.Logger.ERROR).min_severity == trt.Logger.ERROR


@pytest.mark.tensorrt
def test_simulated_objects_have_no_dict(trt_sim):
    trt = trt_sim.module
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.DLA_Core = 1  # a typo is an error, as on pybind11 objects without dynamic attributes
    assert not hasattr(config, "__dict__")
    if trt_sim.major >= 10:
        with pytest.raises(AttributeError):
            config.max_workspace_size = 1 << 30  # removed in 10
    else:
        assert "max_workspace_size" in dir(config)

    class Forgetful(trt.ILogger):
        def __init__(self):
            self.lines = []  # never calls trt.ILogger.__init__

        def log(self, severity, msg):
            self.lines.append(msg)

    with pytest.raises(TypeError, match="__init__.. must be called when overriding __init__"):
        Forgetful()


@pytest.mark.tensorrt
@pytest.mark.parametrize("platform, cores", [("x86", 0), ("xavier", 2), ("orin", 2)])
def test_platform_facts(platform, cores):
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), platform)
    trt = sim.module
    builder = trt.Builder(trt.Logger())
    assert builder.num_DLA_cores == cores and builder.platform_has_tf32 == (platform != "xavier")
    config = builder.create_builder_config()
    config.DLA_core = 1
    assert config.DLA_core == (1 if cores else -1)  # setDLACore "does nothing" without DLA cores
    assert sim.dla == {"x86": None, "xavier": "1.0", "orin": "2.0"}[platform]
    assert trtsim.default_platform("8.6.1", {}) == "xavier" and trtsim.default_platform("10.3.0", {}) == "orin"
    assert trtsim.default_platform("10.13.3.9", {}) == "x86"
    assert trtsim.default_platform("10.13.3.9", {"SANET_TRT_PLATFORM": "Orin"}) == "orin"
    with pytest.raises(ValueError, match="SANET_TRT_PLATFORM"):
        trtsim.default_platform("8.6.1", {"SANET_TRT_PLATFORM": "nano"})


# ---- DLA
def conv_chain(pairs):
    """x -> [Relu, Relu, MatMul] x pairs -> y: every Relu pair a DLA subgraph between GPU matrix products."""
    from onnx import helper, numpy_helper

    nodes, current = [], "x"
    eye = numpy_helper.from_array(np.eye(16, dtype=np.float32), "eye")
    for index in range(pairs):
        nodes += [helper.make_node("Relu", [current], ["a{}".format(index)], name="relu_a{}".format(index)),
                  helper.make_node("Relu", ["a{}".format(index)], ["b{}".format(index)], name="relu_b{}".format(index)),
                  helper.make_node("MatMul", ["b{}".format(index), "eye"], ["c{}".format(index)], name="mm{}".format(index))]
        current = "c{}".format(index)
    nodes[-1].output[0] = "y"
    return graph(nodes, initializers=[eye])


@pytest.mark.tensorrt
def test_dla_subgraph_limit_moves_layers_to_the_gpu():
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    with trtsim.installed(sim):
        plan, header = dla_build(sim, conv_chain(20))
    placement = header["placement"]
    assert len(placement["islands"]) == trtsim.DLA_SUBGRAPHS_PER_CORE == 16
    switched = [m for s, m in sim.log if m.startswith("DLA supports only 16 subgraphs per DLA core. Switching to GPU")]
    assert len(switched) == 8 and "relu_a16" in placement["gpu"] and "relu_b19" in placement["gpu"]
    builder, network, _ = network_of(sim, conv_chain(20))
    config = builder.create_builder_config()
    assert all(config.can_run_on_DLA(network.get_layer(i)) for i in range(0, 60, 3))  # the pre-check cannot know
    with trtsim.installed(sim):
        assert dla_build(sim, conv_chain(20), fallback=False)[0] is None
    assert "GPU fallback is disabled" in sim.log[-1][1]


@pytest.mark.tensorrt
def test_dla_generations_differ_where_nvidia_says():
    from onnx import helper

    softmax = graph([helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=1)])
    average = graph([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    for proto, name in ((softmax, "softmax"), (average, "pool")):
        placed = {}
        for platform in ("xavier", "orin"):
            sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), platform)
            with trtsim.installed(sim):
                placed[platform] = dla_build(sim, proto)[1]["placement"]
        assert placed["xavier"]["gpu"] == [name] and placed["orin"]["islands"] == [[name]]
    inclusive = graph([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                        count_include_pad=1)])
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    with trtsim.installed(sim):
        assert dla_build(sim, inclusive)[1]["placement"]["islands"] == [["pool"]]


@pytest.mark.tensorrt
@pytest.mark.parametrize("attrs, scales, sizes, on_dla", [
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 8, 32, 32], False),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, [1, 1, 2, 2], None, False),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, None, [1, 8, 32, 32], False),  # sizes
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, [1, 1, 2, 2], None, True),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, [1, 1, 8, 8], None, False),  # linear <= 4
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 8, 8], None, True),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_floor"},
     [1, 1, 2, 2], None, False),
])
def test_dla_resize_rules(attrs, scales, sizes, on_dla):
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(scales or [], np.float32), "scales")]
    inputs = ["x", "", "scales"]
    if sizes:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        inputs.append("sizes")
    factor = (scales or [1, 1, 2, 2])[2] if not sizes else sizes[2] // 16
    proto = graph([helper.make_node("Resize", inputs, ["y"], name="resize", **attrs)],
                  out_shape=(1, 8, 16 * factor, 16 * factor), initializers=inits)
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    with trtsim.installed(sim):
        placement = dla_build(sim, proto)[1]["placement"]
    assert (placement["islands"] == [["resize"]]) == on_dla
    if attrs["coordinate_transformation_mode"] == "align_corners":
        assert any("For bilinear resize, DLA only supports kHALF_PIXEL" in m for _, m in sim.log)


@pytest.mark.tensorrt
def test_no_dla_on_x86():
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "x86")
    with trtsim.installed(sim):
        plan, header = dla_build(sim, conv_chain(2))
        assert header["placement"]["islands"] == [] and len(header["placement"]["gpu"]) == 6 and header["dla_core"] is None
        assert dla_build(sim, conv_chain(2), fallback=False)[0] is None


@pytest.mark.tensorrt
@pytest.mark.parametrize("verbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
def test_engine_inspector_follows_the_profiling_verbosity(verbosity):
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    trt = sim.module
    with trtsim.installed(sim):
        plan, header = dla_build(sim, conv_chain(2), verbosity=verbosity)
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    if verbosity == "NONE":
        assert info["Layers"] == []
        return
    names = [layer if isinstance(layer, str) else layer["Name"] for layer in info["Layers"]]
    assert "{ForeignNode[relu_a0...relu_b0]}" in names and "mm0" in names and "x to nvm" in names
    assert all(isinstance(layer, dict) for layer in info["Layers"]) == (verbosity == "DETAILED")
    assert engine.num_layers == len(names)


# ---- shapes
@pytest.mark.tensorrt
def test_dynamic_dimensions_need_an_optimisation_profile(trt_sim):
    from onnx import helper

    proto = graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], shape=("batch", 8, 16, 16))
    builder, network, _ = network_of(trt_sim, proto)
    assert tuple(network.get_input(0).shape) == (-1, 8, 16, 16)
    config = builder.create_builder_config()
    assert builder.build_serialized_network(network, config) is None
    assert "no optimization profile has been defined" in trt_sim.log[-1][1]
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 8, 16, 16), (2, 8, 16, 16), (4, 8, 16, 16))
    assert config.add_optimization_profile(profile) == 0
    assert builder.build_serialized_network(network, config) is not None


# ---- calibration
@pytest.mark.tensorrt
@pytest.mark.filterwarnings("ignore:calibrating on only")
def test_calibration_runs_the_network_and_its_scales_set_int8_parity(exported, synth_small, tmp_path):
    """Classic INT8 (Xavier's route) on the trained shipped model: TensorRT runs the network on the calibrator's
    batches for every activation's scale and the engine computes at those scales. Crops from the scenes pass the
    INT8 budget; flat grey frames (the normalisation's mean colour) give ranges far too small for real frames, and
    parity shows it."""
    import cv2

    from sanet.calibration import CropConfig, plan_crops
    from sanet.data import open_dataset
    from sanet.engines import EngineConfig, TrtRunner, build_engine
    from sanet.parity import compare
    from sanet.runners import TorchRunner

    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    model, paths = exported
    grey = tmp_path / "grey"
    grey.mkdir()
    mean_bgr = [round(255 * v) for v in reversed(model.config.mean)]
    for index in range(8):
        cv2.imwrite(str(grey / "grey{}.png".format(index)), np.full((128, 256, 3), mean_bgr, np.uint8))
    results, scales = {}, {}
    with trtsim.installed(sim):
        for kind, root in (("scenes", synth_small), ("grey", grey)):
            manifest = plan_crops(str(root), CropConfig(128, 256, count=8))
            plan = tmp_path / "{}.plan".format(kind)
            build_engine(str(paths[(128, 256)]), str(plan), EngineConfig("int8", int8_route="classic"), manifest,
                         report=lambda m: None)
            calibration = trtsim.plan_header(plan)["calibration"]
            assert calibration["source"] == "batches" and calibration["batches"] == 8
            scales[kind] = calibration["scales"]
            with TrtRunner(str(plan)) as runner:
                results[kind] = compare(TorchRunner(model), runner, open_dataset(str(synth_small), "cityscapes", "val"),
                                        progress=False)
    assert len(scales["scenes"]) > 100  # every activation, not just the input
    ratio = float(np.median([scales["grey"].get(name, 0.0) / scales["scenes"][name] for name in scales["scenes"]]))
    summary = (ratio, results["scenes"].pixel_agreement, results["grey"].pixel_agreement, results["scenes"].failures)
    assert ratio < 0.9, summary  # flat frames, smaller ranges
    assert results["scenes"].passed, summary
    assert not results["grey"].passed and results["grey"].pixel_agreement < results["scenes"].pixel_agreement - 0.05, summary


# ---- the DLA-friendly export
def test_dla_resample_is_exact_where_it_replaces_matrices():
    import torch

    from sanet.model import adaptive_pool_matrix, dla_resample, nearest_upsample_matrix, separable_map, small_factors

    assert small_factors(32) == [8, 4] and small_factors(12) == [6, 2] and small_factors(23) == [23]
    x = torch.randn(2, 3, 16, 24)
    for rows, cols in (((16, 2), (24, 4)), ((16, 1), (24, 1)), ((16, 6), (24, 12))):  # uniform, global, not uniform
        pool = (adaptive_pool_matrix(*rows), adaptive_pool_matrix(*cols))
        assert torch.allclose(dla_resample(x, *pool), separable_map(x, *pool), atol=1e-6)
        up = (nearest_upsample_matrix(rows[1], rows[0]), nearest_upsample_matrix(cols[1], cols[0]))
        small = separable_map(x, *pool)
        assert torch.equal(dla_resample(small, *up), separable_map(small, *up))


@pytest.mark.tensorrt
def test_dla_friendly_export_runs_more_on_xaviers_dla(ort, tmp_path):
    """The same random-init SANet at 128x256, as exported today and DLA-friendly, built for Xavier's DLA core 0:
    the friendly graph trades SCE's uniform matrix products and SFF's align_corners Resize for ops DLA runs."""
    import onnx
    import torch

    from sanet.engines import EngineConfig, build_engine
    from sanet.errors import SanetError
    from sanet.export import ExportConfig, export_onnx, read_metadata
    from sanet.model import build_model

    with pytest.raises(SanetError, match="static H x W"):
        ExportConfig(128, 256, dynamic=True, dla_friendly=True)
    torch.manual_seed(0)
    model = build_model("sanet", 11, aux_head=False).eval()
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    placed, ops = {}, {}
    with trtsim.installed(sim):
        for friendly in (False, True):
            path = tmp_path / "sanet_{}.onnx".format(friendly)
            export_onnx(model, path, ExportConfig(128, 256, dla_friendly=friendly), source_sha256="test")  # verified
            assert (read_metadata(path).get("sanet.dla_friendly") == "1") == friendly
            ops[friendly] = [n.op_type for n in onnx.load(str(path)).graph.node]
            placed[friendly] = build_engine(str(path), str(tmp_path / "{}.plan".format(friendly)),
                                            EngineConfig("fp16", dla_core=0), report=lambda m: None)["layers"]
    # feat32 is 4x8: grids 2x4 and 1x2 pool uniformly (AveragePool, nearest Resize), 6x12 and 3x6 stay matrices
    assert ops[False].count("MatMul") == 16 and ops[True].count("MatMul") == 8 and "AveragePool" in ops[True]
    assert len(placed[True]["subgraphs"]) < len(placed[False]["subgraphs"])
    assert len(placed[True]["dla"]) > len(placed[False]["dla"])
    assert not any(name.endswith("sff1/Resize") for name in placed[True]["gpu"])
    assert any(name.endswith("sff1/Resize") for name in placed[False]["gpu"])


# ---- device memory through pycuda
class FakeDriver:
    """pycuda.driver over host memory (no GPU here): allocations are ctypes buffers whose address the simulator
    reads and writes, copies are memmoves. Records what the runner asked of it."""

    def __init__(self):
        import types

        self.calls = []
        driver = self

        class Stream:
            handle = 11

            def synchronize(self):
                driver.calls.append("synchronize")

        class Device:
            def __init__(self, index):
                self.index = index

            def name(self):
                return "host (fake pycuda)"

            def compute_capability(self):
                return (7, 2)

        self.module = types.SimpleNamespace(Stream=Stream, Device=Device, init=lambda: None,
                                            mem_alloc=self.mem_alloc, memcpy_htod_async=self.htod,
                                            memcpy_dtoh_async=self.dtoh)

    def mem_alloc(self, size):
        import ctypes

        self.calls.append("mem_alloc")
        buffer = ctypes.create_string_buffer(int(size))
        allocation = type("DeviceAllocation", (), {"__int__": lambda self: ctypes.addressof(buffer), "buffer": buffer})()
        return allocation

    def htod(self, dest, src, stream):
        import ctypes

        self.calls.append("htod")
        ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)

    def dtoh(self, dest, src, stream):
        import ctypes

        self.calls.append("dtoh")
        ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


@pytest.mark.tensorrt
def test_pycuda_buffers_feed_the_engine(exported, monkeypatch, tmp_path):
    """A machine whose torch has no CUDA runs engines through pycuda: buffers from mem_alloc in the device's
    primary context (pycuda.autoprimaryctx, never pycuda.autoinit's second context), copies on the runner's stream,
    and the engine (here the simulator) reads its input from and writes its output to those buffers."""
    import sys
    import types

    from sanet.engines import EngineConfig, TrtRunner, build_engine
    from sanet.runners import TorchRunner

    fake = FakeDriver()
    package = types.ModuleType("pycuda")
    package.__path__ = []
    for name, module in (("pycuda", package), ("pycuda.driver", fake.module),
                         ("pycuda.autoprimaryctx", types.ModuleType("pycuda.autoprimaryctx"))):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "pycuda.autoinit", raising=False)
    model, paths = exported
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"), "xavier")
    plan = tmp_path / "fp32.plan"
    with trtsim.installed(sim):
        monkeypatch.setenv("SANET_DEVICE_MEMORY", "pycuda")
        build_engine(str(paths[(128, 256)]), str(plan), EngineConfig("fp32"), report=lambda m: None)
        image = np.random.default_rng(0).integers(0, 256, (1, 128, 256, 3), dtype=np.uint8)
        with TrtRunner(str(plan)) as runner, TorchRunner(model) as reference:
            classes, logits = runner.predict(image)
            expected, expected_logits = reference.predict(image)
    assert "pycuda.autoinit" not in sys.modules
    assert fake.calls.count("mem_alloc") == 2 and "htod" in fake.calls and "dtoh" in fake.calls
    assert sim.events[-1] == ("execute", {"stream": 11, "dla_core": None})  # the runner's stream
    assert np.abs(logits - expected_logits).max() < 1e-3 and (classes == expected).mean() > 0.999


@pytest.mark.tensorrt
def test_engines_refuse_a_dynamic_batch_before_tensorrt(ort, tmp_path):
    """The Triton ONNX has a dynamic batch: TensorRT refuses it without an optimisation profile (the simulator too,
    test above); the builder says which file to build from instead of quoting TensorRT."""
    import torch

    from sanet.engines import EngineConfig, build_engine
    from sanet.errors import SanetError
    from sanet.export import ExportConfig, export_onnx
    from sanet.model import build_model

    torch.manual_seed(0)
    path = tmp_path / "triton.onnx"
    export_onnx(build_model("sanet", 11, aux_head=False).eval(), path, ExportConfig(64, 128, dynamic_batch=True),
                source_sha256="test", verify=False)
    sim = trtsim.simulate(listing("tensorrt-8.6.1.txt"))
    with trtsim.installed(sim), pytest.raises(SanetError, match="dynamic batch .* --batch N"):
        build_engine(str(path), str(tmp_path / "x.plan"), EngineConfig("fp32"))
    assert not [kind for kind, _ in sim.events if kind == "build"] and not (tmp_path / "x.plan").exists()
