"""TensorRT engines: build (FP32/FP16/INT8, DLA), provenance sidecars, and the TensorRT runner.

One code path for TensorRT 8.5 (Jetson AGX Xavier, JetPack 5), 10 and 11: ``build_serialized_network``,
memory-pool limits, named tensors and ``execute_async_v3``; version gates only where the API differs. Which ONNX
an engine is built from, its typing and its precision flags come from ``sanet.routes.route_for``.
Engines are plain plan files (``trtexec --loadEngine`` reads them). Each has a JSON sidecar recording what
it was built from and for; loading refuses an engine whose sidecar does not match the running system.
Sidecar, naming and system checks are plain Python so the CPU tests exercise them.
"""
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import numpy as np

from . import __version__
from .constants import CLASSIC_CALIBRATOR, PRECISIONS
from .errors import SanetError, require
from .fileio import sha256_file, write_bytes_atomic, write_json_atomic
from .routes import INT8_ROUTES, Route, check_source, route_for, tensorrt_version
from .runners import DeviceRunner, RunnerInfo, TorchRunner, class_map_dtype, class_map_of
from .trtmemory import TorchMemory, device_memory, memory_backend, numpy_dtype

SIDECAR_FORMAT = 2  # 2: route, layer-group precisions and the reuse key
CALIBRATORS = ("entropy", "minmax")  # TensorRT's own calibrators (the classic route)
TENSORRT_HINT = ("install TensorRT's Python package (JetPack ships it; on x86 use an NVIDIA TensorRT container) "
                 "and run on an NVIDIA GPU")
# What must be identical between the build machine and the runtime for a plan file to be valid.
MUST_MATCH = ("tensorrt", "compute_capability", "machine", "l4t")


@dataclass
class EngineConfig:
    precision: str = "fp16"
    workspace_mib: int = 2048
    timing_cache: Optional[str] = None  # file reused (and extended) across builds
    optimization_level: Optional[int] = None  # builder optimisation level 0-5 (TensorRT >= 8.6)
    dla_core: Optional[int] = None  # Xavier: 0 or 1; layers DLA cannot run fall back to the GPU
    int8_route: str = "auto"  # auto | classic | qdq: sanet.routes.route_for decides what each means per release
    calibration_method: Optional[str] = None  # classic route: minmax (constants.CLASSIC_CALIBRATOR) or entropy; percentile refused
    keep: Tuple[str, ...] = ()  # classic INT8: layer groups pinned to FP16
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SanetError("unknown precision {!r}: use {}".format(self.precision, ", ".join(PRECISIONS)))
        if self.int8_route not in INT8_ROUTES:
            raise SanetError("unknown INT8 route {!r}: use {}".format(self.int8_route, ", ".join(INT8_ROUTES)))
        if self.dla_core is not None and self.precision == "fp32":
            raise SanetError("DLA runs FP16 or INT8 only: add --fp16 or --int8 to use --dla-core")


def sidecar_path(engine):
    return os.fspath(engine) + ".json"


def import_tensorrt():
    return require("tensorrt", TENSORRT_HINT)


def tensorrt_major(version):
    return tensorrt_version(version)[0]


def parse_l4t_release(text):
    """'# R35 (release), REVISION: 4.1, GCID: ...' (/etc/nv_tegra_release) -> 'R35.4.1'; None if unparseable."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    parts = [p.strip() for p in first.lstrip("#").split(",")]
    if not parts or not parts[0].startswith("R") or len(parts) < 2 or not parts[1].startswith("REVISION:"):
        return None
    return "{}.{}".format(parts[0].split()[0], parts[1].split(":", 1)[1].strip())


def l4t_release():
    """This Jetson's L4T release as 'R35.4.1' (what an engine is tied to), or None off L4T."""
    from .power import l4t_release as release_line  # the one reader of /etc/nv_tegra_release

    line = release_line()
    return parse_l4t_release(line) if line else None


def system_facts(trt=None):
    """What a plan file is tied to on this machine: TensorRT version, GPU, CPU architecture, L4T release."""
    trt = trt or import_tensorrt()
    gpu, capability = _gpu()
    return {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": capability,
            "machine": platform.machine(), "l4t": l4t_release()}


def _gpu():
    backend = memory_backend()
    if backend == "host":
        return "host memory (SANET_DEVICE_MEMORY=host)", "host"
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            raise SanetError("SANET_DEVICE_MEMORY=torch but this torch has no CUDA: install a CUDA build of torch")
        major, minor = torch.cuda.get_device_capability(0)
        return torch.cuda.get_device_name(0), "{}.{}".format(major, minor)
    cuda = require("pycuda.driver", "TensorRT needs a CUDA GPU: install a CUDA build of torch or pycuda")
    cuda.init()
    device = cuda.Device(0)
    return device.name(), "{}.{}".format(*device.compute_capability())


def sidecar_mismatches(sidecar, system):
    """Human-readable differences that make the engine unusable here (empty when it matches)."""
    built = sidecar.get("system", {})
    return ["{} {} (built) vs {} (here)".format(key, built.get(key), system.get(key))
            for key in MUST_MATCH if built.get(key) != system.get(key)]


def read_sidecar(engine):
    """The sidecar of ``engine`` after checking that both exist and belong together."""
    engine, path = os.fspath(engine), sidecar_path(engine)
    if not os.path.isfile(engine):
        raise SanetError("engine not found: {} (build it with sanet-export CHECKPOINT --fp16 or --int8)".format(engine))
    if not os.path.isfile(path):
        raise SanetError("{} has no provenance sidecar {}: rebuild it with sanet-export".format(engine, path))
    try:
        with open(path, encoding="utf-8") as handle:
            sidecar = json.load(handle)
        complete = sidecar["format"] == SIDECAR_FORMAT and all(k in sidecar for k in ("system", "engine_sha256", "model"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SanetError("engine sidecar {} is corrupt ({}): rebuild the engine with sanet-export".format(path, exc)) from exc
    if not complete:
        raise SanetError("engine sidecar {} is incomplete or from another release: rebuild the engine".format(path))
    if sha256_file(engine) != sidecar["engine_sha256"]:
        raise SanetError("{} does not match its sidecar (replaced or truncated): rebuild the engine".format(engine))
    return sidecar


def check_engine(engine, system):
    """Read and verify the sidecar against ``system`` (see system_facts); refuse a stale engine."""
    sidecar = read_sidecar(engine)
    problems = sidecar_mismatches(sidecar, system)
    if problems:
        raise SanetError("{} was built elsewhere ({}): engines are tied to TensorRT version, GPU and platform; "
                         "rebuild it on this machine with sanet-export".format(engine, "; ".join(problems)))
    return sidecar


def make_sidecar(engine, onnx_path, meta, system, config: EngineConfig, manifest_sha256, seconds, layers=None, route=None,
                 key=None):
    """The engine's provenance: what it was built from, by which route, for which system, and each layer group's
    precision. ``route`` defaults to what sanet.routes decides for this system's TensorRT."""
    height, width = (int(v) for v in meta["sanet.resolution"].split("x"))
    batch = int(meta.get("sanet.batch", "1"))
    layout = meta.get("sanet.input_layout", "float-nchw")
    shape = [batch, height, width, 3] if layout == "uint8-nhwc" else [batch, 3, height, width]
    route = route or route_for(system["tensorrt"], config.precision, config.int8_route, meta)
    return {
        "format": SIDECAR_FORMAT, "engine_sha256": sha256_file(engine), "system": system,
        "precision": route.precision, "dla_core": config.dla_core,
        "input": {"name": "images", "shape": shape, "layout": layout},
        "onnx": os.path.basename(onnx_path), "onnx_sha256": key["onnx_sha256"] if key else sha256_file(onnx_path),
        "calibration_sha256": manifest_sha256, "build": dict(asdict(config), keep=list(config.keep)),
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sanet_version": __version__,
        "model": meta, "layers": layers or {},
        "route": {"name": route.name, "onnx": route.onnx, "typing": "strong" if route.strongly_typed else "weak",
                  "builder_flags": list(route.builder_flags), "why": route.why},
        # what layers outside Q/DQ pairs or INT8 kernels compute in, and per layer group (calibration.FALLBACK_ORDER)
        "unquantized_precision": route.float_precision,
        "groups": group_precisions(onnx_path, meta, route, config.keep),
        "fp32_nodes": [n for n in meta.get("sanet.fp32_nodes", "").split(",") if n],
        "key": key,
    }


def group_precisions(onnx_path, meta, route, keep=()):
    """{layer group: precision} of an engine: "int8" for a quantized group (its convolutions and matmuls; the
    elementwise layers between them run in the route's float precision), else the float precision, "fp16+fp32"
    where the FP16 ONNX keeps some of the group's nodes in float32 (its FP16 range audit said so)."""
    from .calibration import FALLBACK_ORDER, group_nodes
    from .export import read_nodes

    nodes = read_nodes(onnx_path)
    islands = set(meta.get("sanet.fp32_nodes", "").split(","))
    floats = set(keep) | set(meta.get("sanet.float_groups", "").split(","))
    found = {}
    for group in FALLBACK_ORDER:
        names = group_nodes(nodes, group)
        if not names:
            continue
        if route.quantized and group not in floats:
            found[group] = "int8"
        elif route.float_precision == "fp16" and islands.intersection(names):
            found[group] = "fp16+fp32"
        else:
            found[group] = route.float_precision
    return found


def build_key(route: Route, config: EngineConfig, onnx_path, meta, manifest, tensorrt):
    """Everything that changes what an engine computes or how it was tuned: an engine on disk is reused only when
    its sidecar's key equals the key of the build that would replace it. The calibration is the manifest's crops
    (classic route) or the ones the Q/DQ file records it was calibrated on (``meta``, its sanet metadata)."""
    if route.calibrator:
        calibration = manifest["sha256"] if manifest else None
    else:
        calibration = meta.get("sanet.calibration_sha256")
    return {"route": route.name, "onnx_sha256": sha256_file(onnx_path), "calibration_sha256": calibration,
            "calibration_method": (config.calibration_method or CLASSIC_CALIBRATOR) if route.calibrator else None,
            "keep": sorted(config.keep) if route.precision == "int8" else [],
            "workspace_mib": config.workspace_mib, "optimization_level": config.optimization_level,
            "dla_core": config.dla_core, "tensorrt": tensorrt}


def check_platform(route: Route, fast_fp16, fast_int8, dla_cores, dla_core):
    """Refuse precisions or DLA settings this GPU lacks, before a long build fails obscurely."""
    if route.float_precision == "fp16" and fast_fp16 is False:  # FP16 engines, and INT8 with FP16 around it
        raise SanetError("this GPU has no fast FP16: build --fp32")
    if route.precision == "int8" and fast_int8 is False:
        raise SanetError("this GPU has no fast INT8 (needs compute capability 6.1+): use --fp16")
    if dla_core is not None:
        if dla_cores == 0:
            raise SanetError("--dla-core {}: this device has no DLA (Jetson AGX Xavier/Orin have 2)".format(dla_core))
        if dla_core >= dla_cores:
            raise SanetError("--dla-core {}: this device has DLA cores 0..{}".format(dla_core, dla_cores - 1))
        if route.onnx.startswith("qdq"):
            raise SanetError("DLA on TensorRT 8.5 cannot run explicit Q/DQ networks: use --int8-route classic")


def check_int8_settings(route: Route, config: EngineConfig, onnx_path, meta):
    """Refuse INT8 settings the route cannot honour (never substitute another): a calibration method TensorRT has
    no calibrator for, kept groups that name no layer (typos) or that leave nothing to quantize, kept groups a Q/DQ
    file does not have."""
    from .calibration import FALLBACK_ORDER, group_nodes
    from .export import read_nodes

    if route.precision != "int8":
        return
    if route.calibrator and (config.calibration_method or CLASSIC_CALIBRATOR) not in CALIBRATORS:
        raise SanetError("--calib-method {} has no TensorRT calibrator (they are entropy and minmax): use one of those, "
                         "or --int8-route qdq, whose Q/DQ quantizer has it".format(config.calibration_method))
    if not route.calibrator:
        baked = [g for g in meta.get("sanet.float_groups", "").split(",") if g]
        if config.keep and sorted(config.keep) != sorted(baked):
            raise SanetError("{} keeps [{}] in float, not [{}]: re-quantize with --int8-keep {}".format(
                onnx_path, ", ".join(baked), ", ".join(config.keep), " ".join(config.keep)))
        return
    nodes = read_nodes(onnx_path)
    present = [g for g in FALLBACK_ORDER if group_nodes(nodes, g)]
    unknown = [g for g in config.keep if not group_nodes(nodes, g)]
    if unknown:
        raise SanetError("--int8-keep {}: no layers of that group in {}: groups are {}".format(
            unknown[0], onnx_path, ", ".join(present)))
    if present and set(present) <= set(config.keep):
        raise SanetError("--int8-keep names every layer group: nothing would run INT8; build --fp16 instead")


def make_logger(trt):
    """A ``trt.ILogger`` that prints TensorRT's warnings and errors to stderr (as ``trt.Logger(WARNING)`` does) and
    keeps the error lines, so a failed build or load can quote TensorRT's own words."""
    severe = (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR)

    class KeepingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity in severe:
                self.errors.append(str(msg))
            if severity in severe or severity == trt.ILogger.WARNING:
                print("[TensorRT] {}: {}".format(severity.name, msg), file=sys.stderr)

        def quote(self, since=0):
            """The error lines logged after the first ``since`` ones, joined; a phrase when there are none."""
            lines = self.errors[since:]
            return " | ".join(lines[-3:]) if lines else "TensorRT logged no error"

    return KeepingLogger()


def build_engine(onnx_path, out_path, config: EngineConfig, manifest=None, report=print):
    """Build ``out_path`` (plan + sidecar) from an exported ONNX; returns the sidecar dict.

    The route (sanet.routes.route_for) says which ONNX this must be: the FP32 export (fp32, fp16 with the FP16 flag,
    classic INT8 with ``manifest``'s crops), the FP16 ONNX (strongly typed FP16), the Q/DQ ONNX or its FP16 twin.
    """
    from .calibration import CalibrationCache
    from .export import INPUT_NAME, read_metadata

    meta = read_metadata(onnx_path, required=True)
    if meta.get("sanet.resolution") == "dynamic":
        raise SanetError("{} has dynamic H x W; engines are built per resolution: export with --res H W, "
                         "without --dynamic".format(onnx_path))
    if meta.get("sanet.batch") == "dynamic":  # TensorRT would need an optimisation profile; sidecars record one shape
        raise SanetError("{} has a dynamic batch (a Triton ONNX); engines are built for a static batch: build from the "
                         "static export (sanet-export --batch N)".format(onnx_path))
    if meta.get("sanet.int8_activations") == "uint8":
        raise SanetError("{} has uint8 activations (the ONNX Runtime CPU variant); TensorRT needs symmetric int8: "
                         "re-quantize with --qdq-activations int8".format(onnx_path))
    trt = import_tensorrt()
    route = route_for(trt.__version__, config.precision, config.int8_route, meta)
    check_source(route, onnx_path, meta, trt.__version__)
    check_int8_settings(route, config, onnx_path, meta)
    if route.calibrator and manifest is None:
        raise SanetError("classic INT8 calibration needs crops: pass --calib DIR")
    key = build_key(route, config, onnx_path, meta, manifest, trt.__version__)  # the only read of the ONNX's sha256
    check_parser_rules(onnx_path, trt.__version__)
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    check_platform(route, getattr(builder, "platform_has_fast_fp16", None), getattr(builder, "platform_has_fast_int8", None),
                   builder.num_DLA_cores, config.dla_core)
    network = builder.create_network(_network_flags(trt, tensorrt_major(trt.__version__), route.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as handle:
        if not parser.parse(handle.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise SanetError("TensorRT cannot parse {}: {}".format(onnx_path, errors[0] if errors else logger.quote()))
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME or network.num_outputs != 1:
        raise SanetError("{} must have one input '{}' and one output: re-export it with sanet-export".format(onnx_path, INPUT_NAME))
    build = builder.create_builder_config()
    build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.optimization_level is not None:
        if hasattr(build, "builder_optimization_level"):
            build.builder_optimization_level = config.optimization_level
        else:
            report("note: TensorRT {} has no builder optimisation level; ignored".format(trt.__version__))
    cache = _attach_timing_cache(build, config.timing_cache)
    for flag in route.builder_flags:  # weak typing only; with INT8, FP16 too: layers without an INT8 kernel run FP16
        build.set_flag(getattr(trt.BuilderFlag, flag))
    calibrator = None
    if route.calibrator:
        method = config.calibration_method or CLASSIC_CALIBRATOR
        cache_key = {"manifest": manifest["sha256"], "onnx": key["onnx_sha256"], "method": method, "tensorrt": trt.__version__}
        cache_file = CalibrationCache(os.path.splitext(out_path)[0] + ".calib.cache", cache_key)
        calibrator = make_calibrator(trt, method, manifest, meta, cache_file)
        build.int8_calibrator = calibrator
        _pin_groups(trt, network, build, config.keep)
    planned = _place_on_dla(trt, network, build, config.dla_core) if config.dla_core is not None else None
    started, logged = time.perf_counter(), len(logger.errors)
    serialized = builder.build_serialized_network(network, build)
    if calibrator is not None and calibrator.error is not None:
        # TensorRT logs and swallows exceptions raised in Python calibrator methods and ends calibration early:
        # an engine calibrated on part of the crops (or none) must not pass silently.
        raise SanetError("INT8 calibration failed while reading crops ({}: {}): fix the calibration images and "
                         "rebuild".format(type(calibrator.error).__name__, calibrator.error)) from calibrator.error
    if serialized is None:
        said = logger.quote(logged)
        hint = "; a larger --workspace may help" if any(w in said.lower() for w in ("memory", "workspace")) else ""
        raise SanetError("TensorRT failed to build {}: {}{}".format(out_path, said, hint))
    seconds = time.perf_counter() - started
    layers = engine_placement(trt, logger, serialized, planned, config.dla_core, report) if planned else {}
    write_bytes_atomic(out_path, bytes(serialized))
    sidecar = make_sidecar(out_path, onnx_path, meta, system_facts(trt), config, key["calibration_sha256"], seconds, layers,
                           route, key)
    write_json_atomic(sidecar_path(out_path), sidecar)  # an engine without a valid sidecar is refused at load
    if cache is not None:  # after the engine: losing the cache only costs the next build time
        try:
            write_bytes_atomic(config.timing_cache, bytes(build.get_timing_cache().serialize()))
        except (OSError, SanetError) as exc:
            report("warning: timing cache {} not saved ({}); the engine is complete".format(config.timing_cache, exc))
    return sidecar


def check_parser_rules(onnx_path, version):
    """Refuse, before a build, an ONNX the parser of this TensorRT release rejects (sanet.trtlint), listing
    every violation one per line. Skipped when this installation has no sanet.trtlint."""
    try:
        from .trtlint import lint, release_for_version
    except ImportError:
        return
    violations = lint(os.fspath(onnx_path), release_for_version(version))
    if violations:
        raise SanetError("TensorRT {} cannot build {}: re-export with a supported opset/options\n{}".format(
            version, onnx_path, "\n".join("  " + str(v) for v in violations)))


def _network_flags(trt, major, strongly_typed):
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and major < 10:  # required on 8.5, ignored on 10, gone on 11
        flags |= 1 << int(explicit)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and typed is not None:  # 10: opt-in; 11: always on (flag kept, ignored)
        flags |= 1 << int(typed)
    return flags


def _attach_timing_cache(build, path):
    if not path:
        return None
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            data = handle.read()
    cache = build.create_timing_cache(data)
    if cache is None:
        raise SanetError("timing cache {} is corrupt or from another TensorRT: delete it".format(path))
    if not build.set_timing_cache(cache, False):
        raise SanetError("timing cache {} was written by another TensorRT version or GPU: delete it".format(path))
    return cache


def _pin_groups(trt, network, build, groups):
    """Keep the named layer groups (module paths) in FP16 inside an INT8 build."""
    if not groups:
        return
    prefixes = tuple("/model/{}/".format(g.replace(".", "/")) for g in groups)
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.name.startswith(prefixes):
            layer.precision = trt.float16
    build.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def _place_on_dla(trt, network, build, core):
    """Default every layer to DLA core ``core`` with GPU fallback and ask for detailed layer information (what
    engine_placement reads back). A DLA-capable layer with no DLA-capable neighbour is kept on the GPU: alone it
    would cost a DLA subgraph (16 per core) and two GPU<->DLA copies for one layer. The pre-check
    (``can_run_on_DLA``) only decides that; where layers run is read from the built engine.
    Returns {"network": layer names in order, "kept_on_gpu": names}."""
    build.default_device_type = trt.DeviceType.DLA
    build.DLA_core = core
    build.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    build.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    capable = [build.can_run_on_DLA(layer) for layer in layers]
    producer, consumers = {}, {}
    for index, layer in enumerate(layers):
        for tensor in (layer.get_output(j) for j in range(layer.num_outputs)):
            producer[tensor.name] = index
        for tensor in (layer.get_input(j) for j in range(layer.num_inputs)):
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(index)
    kept = []
    for index, layer in enumerate(layers):
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        near = [producer[t.name] for t in inputs if t is not None and t.name in producer]
        near += [c for j in range(layer.num_outputs) for c in consumers.get(layer.get_output(j).name, ())]
        if capable[index] and near and not any(capable[n] for n in near):
            build.set_device_type(layer, trt.DeviceType.GPU)
            kept.append(layer.name)
    return {"network": [layer.name for layer in layers], "kept_on_gpu": kept}


# The LayerType the engine inspector gives a DLA subgraph ("{ForeignNode[first...last]}"). Unverified on a device:
# docs/simulator.md says how to check it with trtexec --dumpLayerInfo --profilingVerbosity=detailed.
DLA_LAYER_TYPES = ("DLA",)
FOREIGN_NODE = re.compile(r"^\{ForeignNode\[(.*)\.\.\.(.*)\]\}$")


def engine_placement(trt, logger, serialized, planned, core, report):
    """Where the layers of a built DLA engine run, read back from it (IEngineInspector, detailed verbosity): TensorRT
    moves layers to the GPU beyond what the per-layer pre-check predicts (subgraph limits, fusions)."""
    runtime = trt.Runtime(logger)
    runtime.DLA_core = core
    engine = runtime.deserialize_cuda_engine(bytes(serialized))
    if engine is None:
        raise SanetError("TensorRT cannot read back the DLA engine it built (see its log above)")
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    placement = placement_from_inspector(info, planned["network"])
    placement.update(dla_core=core, kept_on_gpu=planned["kept_on_gpu"])
    report("DLA core {} (the built engine): {} of {} layers on DLA in {} subgraphs, {} on the GPU{}".format(
        core, len(placement["dla"]), len(planned["network"]), len(placement["subgraphs"]), len(placement["gpu"]),
        " ({} kept there: alone between GPU layers)".format(len(planned["kept_on_gpu"])) if planned["kept_on_gpu"] else ""))
    for name in placement["gpu"]:
        report("  GPU: " + name)
    return placement


def placement_from_inspector(info, names):
    """{"source", "subgraphs", "dla", "gpu", "unplaced"} from an engine inspector's JSON (detailed verbosity) and the
    network's layer names in order. A GPU layer of the engine names the network layers it runs (fused ones joined,
    e.g. "conv + relu"); a DLA subgraph names only its first and last layer, so the DLA layers are those in that
    range that no GPU layer names. "unplaced": layers neither names (removed or folded by the builder)."""
    entries = [e for e in info.get("Layers", []) if isinstance(e, dict)]
    if len(entries) != len(info.get("Layers", [])):
        raise SanetError("the engine inspector gave layer names only: the engine was not built with detailed "
                         "profiling verbosity")
    index = {name: i for i, name in enumerate(names)}
    subgraphs, gpu_text = [], []
    for entry in entries:
        kind, name = str(entry.get("LayerType", "")), str(entry.get("Name", ""))
        match = FOREIGN_NODE.match(name)
        if kind in DLA_LAYER_TYPES and match and match.group(1) in index and match.group(2) in index:
            subgraphs.append((name, index[match.group(1)], index[match.group(2)]))
        elif kind != "Reformat":
            gpu_text.append(name)
    gpu = [n for n in names if any(re.search(r"(?<![\w/.]){}(?![\w/.])".format(re.escape(n)), text) for text in gpu_text)]
    on_gpu = set(gpu)
    dla = [n for i, n in enumerate(names) if n not in on_gpu and any(lo <= i <= hi for _, lo, hi in subgraphs)]
    placed = on_gpu | set(dla)
    return {"source": "engine inspector", "subgraphs": [name for name, _, _ in subgraphs], "dla": dla, "gpu": gpu,
            "unplaced": [n for n in names if n not in placed]}


def make_calibrator(trt, method, manifest, meta, cache):
    """A TensorRT entropy/min-max calibrator over the manifest's crops, with a manifest-keyed cache."""
    from .calibration import iter_batches
    from .runners import to_input

    base = trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator
    batch = int(meta.get("sanet.batch", "1"))
    info = RunnerInfo.from_metadata(meta, "tensorrt", "calibration", "int8")

    class Calibrator(base):
        def __init__(self):
            base.__init__(self)
            self.batches = iter_batches(manifest, batch)
            self.memory = device_memory()
            self.buffer = None
            self.error = None  # TensorRT swallows exceptions raised here; build_engine re-raises this one

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            try:
                images = next(self.batches, None)
                if images is None:
                    return None
                array = to_input(images, info)
                if self.buffer is None:
                    self.buffer = self.memory.empty(array.shape, array.dtype)
                self.memory.upload(self.buffer, array)
                self.memory.synchronize()
                return [self.memory.pointer(self.buffer)]
            except Exception as exc:
                self.error = exc
                raise

        def read_calibration_cache(self):
            return cache.read()

        def write_calibration_cache(self, data):
            cache.write(bytes(data))

    return Calibrator()


class TrtRunner(DeviceRunner):
    """A TensorRT plan file behind the runner contract; refuses engines built for another system.

    Construction only checks the sidecar against this system and sets ``info``; ``activate()`` deserializes
    the engine and allocates its I/O buffers; ``close()`` frees them.

    Args:
        engine: a plan file built by sanet-export (``Pipeline.engine``), with its ``.json`` sidecar beside it.
        cuda_graph: replay one captured CUDA graph per run (ignored, and noted in ``info.extra``, for DLA engines).
    ``info`` comes from the sidecar: the engine's fixed (H, W) and batch, layout, output kind, precision and device
    ("cuda" or "dlaN"). ``infer`` takes exactly that input (float32 normalised (B, 3, H, W), or uint8 (B, H, W, 3))
    and returns a host array, logits (B, C, H, W) or classes (B, H, W) in the engine's output type. Needs TensorRT
    and a GPU; a stale or foreign engine raises SanetError (rebuild it).
    """

    def __init__(self, engine, cuda_graph=False):
        self.path = os.fspath(engine)
        trt = import_tensorrt()
        self.sidecar = check_engine(self.path, system_facts(trt))
        self.input_shape = tuple(self.sidecar["input"]["shape"])
        meta = self.sidecar["model"]
        size = self.input_shape[1:3] if meta.get("sanet.input_layout") == "uint8-nhwc" else self.input_shape[2:4]
        dla_core = self.sidecar["dla_core"]
        # A DLA engine is not captured into a CUDA graph: the capture fails (NVIDIA/TensorRT#3524) and trtexec's
        # --useCudaGraph then launches normally (samples/common/sampleInference.cpp); so does this runner, and says so.
        self.cuda_graph = cuda_graph and dla_core is None
        extra = {"path": self.path, "gpu": self.sidecar["system"]["gpu"], "tensorrt": self.sidecar["system"]["tensorrt"],
                 "cuda_graph": self.cuda_graph, "route": self.sidecar["route"]["name"], "groups": self.sidecar["groups"]}
        if cuda_graph and dla_core is not None:
            extra["cuda_graph_note"] = "not captured: DLA engines run without CUDA graphs (NVIDIA/TensorRT#3524)"
        self.info = RunnerInfo.from_metadata(
            meta, "tensorrt", "cuda" if dla_core is None else "dla{}".format(dla_core),
            self.sidecar["precision"], input_size=tuple(size), batch=self.input_shape[0], extra=extra)
        self.engine = self.context = self.runtime = self.memory = self.graph = self.logger = None
        self.buffers = {}

    def activate(self):
        """Deserialize the engine, create its context and bind its I/O buffers. A failure part-way frees everything
        made so far (nothing stays allocated) and leaves the runner closed, so activate() can be called again."""
        if self.context is not None:
            return self
        trt = import_tensorrt()
        try:
            self._load(trt)
        except BaseException:
            self.close()
            raise
        return super().activate()

    def _load(self, trt):
        self.logger = make_logger(trt)  # kept: TensorRT calls it for as long as the runtime lives
        self.runtime = trt.Runtime(self.logger)
        if self.sidecar["dla_core"] is not None:  # a DLA engine runs on the runtime's core, not the one it was built for
            self.runtime.DLA_core = int(self.sidecar["dla_core"])
        with open(self.path, "rb") as handle:
            self.engine = self.runtime.deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise SanetError("TensorRT cannot deserialize {} ({}): rebuild it with sanet-export".format(
                self.path, self.logger.quote()))
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != ["images"] or len(outputs) != 1:
            raise SanetError("{} has inputs {} and outputs {}: expected one 'images' input and one output".format(
                self.path, inputs, outputs))
        shape = tuple(self.engine.get_tensor_shape(inputs[0]))
        if shape != self.input_shape:
            raise SanetError("{} takes {} but its sidecar says {}: rebuild the engine".format(self.path, shape, self.input_shape))
        self.memory = device_memory()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise SanetError("TensorRT cannot create an execution context for {} ({})".format(self.path, self.logger.quote()))
        self.input_name, self.output_name = inputs[0], outputs[0]
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            self.buffers[name] = self.memory.empty(shape, numpy_dtype(self.engine.get_tensor_dtype(name)))
            if not self.context.set_tensor_address(name, self.memory.pointer(self.buffers[name])):
                raise SanetError("TensorRT refused the buffer of tensor {} of {} ({})".format(name, self.path, self.logger.quote()))
        self.input_dtype = numpy_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.graph = self._capture() if self.cuda_graph else None

    def close(self):
        """Wait for the work queued on the runner's stream, then free the graph, context, engine and buffers, in
        that order (idempotent); activate() can load them again."""
        if self.memory is not None:
            self.memory.synchronize()  # no buffer is freed while a kernel queued on the stream may still read it
        self.graph = None
        self.context = None  # a context before its engine, an engine before its runtime
        self.engine = None
        self.buffers = {}
        self.runtime = self.memory = None
        super().close()

    @property
    def cuda_stream(self):
        return self.memory.stream if isinstance(self.memory, TorchMemory) else None

    def _capture(self):
        """Record one execution in a CUDA graph; replays skip per-launch CPU overhead (torch buffers only)."""
        if not isinstance(self.memory, TorchMemory):
            raise SanetError("CUDA graphs for TensorRT need a CUDA build of torch")
        torch = self.memory.torch
        self._execute()  # TensorRT allocates lazily on the first run; that must not be captured
        self.memory.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.memory.stream):
            self._execute()
        return graph

    def _execute(self):
        logged = len(self.logger.errors)
        if not self.context.execute_async_v3(self.memory.handle):
            raise SanetError("TensorRT execution failed for {} ({})".format(self.path, self.logger.quote(logged)))

    def synchronize(self):
        if self.memory is not None:
            self.memory.synchronize()

    def stage(self, inputs):
        """Copy the input array into the engine's input buffer (asynchronously on the runner's stream)."""
        self.check_active()
        inputs = np.asarray(inputs)
        if inputs.shape != self.input_shape or inputs.dtype != self.input_dtype:
            raise SanetError("{} expects {} {}, got {} {}".format(
                self.path, self.input_dtype.name, self.input_shape, inputs.dtype, inputs.shape))
        self.memory.upload(self.buffers[self.input_name], inputs)

    def execute(self):
        """Enqueue the engine on the runner's stream; fetch() waits for it."""
        if self.graph is not None:
            with self.memory.torch.cuda.stream(self.memory.stream):
                self.graph.replay()
        else:
            self._execute()

    def fetch(self, class_map=False):
        """The engine's output (logits or argmax) as a host array, or the class map with the argmax on the device."""
        output = self.buffers[self.output_name]
        if class_map and self.memory.argmax_on_device:
            return self.memory.class_map(output, self.info.output != "argmax", class_map_dtype(self.info.num_classes))
        self.memory.synchronize()
        host = self.memory.download(output)
        return class_map_of(host, self.info) if class_map else host


class Torch2trtRunner(TorchRunner):
    """The reference repo's speed method (kaigelee/SANet ``Tensorrt_speed_eval``): torch2trt converts the PyTorch
    model layer by layer into a TensorRT engine for one input shape (``fp16_mode`` for FP16), then runs it on
    torch CUDA tensors. Conversion (``sanet.torch2trt_route.convert``: our converters for what torch2trt lacks, and a
    refusal instead of an engine with frozen values) happens on the first ``activate()``; the engine's serialized
    state is kept on the host, so later activations only deserialize it. Needs CUDA, TensorRT and torch2trt (built
    from NVIDIA-AI-IOT's repository against the device's TensorRT; it has no PyPI release)."""

    def __init__(self, model, resolution, precision="fp16"):
        from .torch2trt_route import check_precision, require_torch2trt

        check_precision(precision)
        require_torch2trt()
        super().__init__(model, "cuda", "fp32")  # fp32 tensors in and out; fp16_mode makes the engine compute in half
        self.resolution, self.state = tuple(resolution), None
        self.info = RunnerInfo("torch2trt", precision, "cuda", model.config.num_classes, input_size=self.resolution, batch=1,
                               mean=model.config.mean, std=model.config.std, extra=dict(self.info.extra))

    def activate(self):
        if not self.active:
            from torch2trt import TRTModule

            from .torch2trt_route import convert

            if self.state is None:
                self.state = convert(self.source, self.resolution, self.info.precision, self.device)
            self.model = TRTModule()
            self.model.load_state_dict(self.state)
        return DeviceRunner.activate(self)  # not TorchRunner's: that would put a PyTorch copy in place of the engine
