"""INT8 calibration: crops, their manifest, and the two quantization routes that use them.

1. Crops: boxes cut from Cityscapes ``leftImg8bit/train`` (or any image folder) at the engine's resolution,
   random or on a grid, deterministic by seed. The manifest lists every file (with its sha256) and box; its
   hash names the calibration, so a cache made from other crops is never reused.
2. Classic route (TensorRT 8.5/10, implicit quantization): an entropy or min-max calibrator in
   ``engines.py`` reads batches from here and stores its scales in a :class:`CalibrationCache`.
3. Explicit Q/DQ route: :func:`quantize_qdq` writes a quantized ONNX (per-channel int8 weights, calibrated
   activations, float biases) that ONNX Runtime CPU runs and TensorRT 10/11 builds as a strongly typed network.
   Activation ranges are collected by :func:`collect_ranges`, streamed crop by crop through graph segments,
   so memory stays bounded (~1.6-1.9 GB RSS at 1024x2048) whatever the method and crop count.
   :func:`quantize_with_fallback` keeps sensitive layer groups in float, one at a time, until the INT8
   parity budget against PyTorch holds.
"""
import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from .constants import layer_group_prefix
from .data import find_images, import_cv2, read_image
from .errors import SanetError, require
from .fileio import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic
from .runners import OrtRunner, RunnerInfo

MANIFEST_FORMAT = 1
CROP_MODES = ("random", "grid")
METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("int8", "uint8")
GRID_SIDE = 3  # grid mode walks a 3 x 3 lattice of box positions, one position per pass over the files
# Layer groups (module paths of SANet and SANet-Tiny) in the order the auto-fallback moves them back to float:
# the classifier first, then the attention/fusion weights, then the backbone from its deep end.
FALLBACK_ORDER = ("conv_out32", "sff2", "sff1", "sce", "resnet.layer4", "resnet.layer3", "resnet.layer2",
                  "resnet.layer1", "resnet.conv1")


@dataclass
class CropConfig:
    height: int
    width: int
    count: int = 500
    mode: str = "random"
    seed: int = 0
    batch: int = 1

    def __post_init__(self):
        if self.mode not in CROP_MODES:
            raise SanetError("unknown crop mode {!r}: use {}".format(self.mode, " or ".join(CROP_MODES)))
        if self.count < self.batch:
            raise SanetError("calibration needs at least one batch: --calib-count {} < batch {}".format(self.count, self.batch))


def find_calibration_images(root):
    """Calibration sources under ``root``: Cityscapes ``leftImg8bit/train`` if present, else every image found
    recursively outside label folders (a label map as a calibration frame would skew every range)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise SanetError("calibration folder not found: {} (give a Cityscapes root or an image folder)".format(root))
    cityscapes_train = os.path.join(root, "leftImg8bit", "train")
    files = find_images(cityscapes_train if os.path.isdir(cityscapes_train) else root)
    return sorted(os.path.relpath(f, root) for f in files)


def _box(image_size, crop, rng, position):
    """One (x, y, w, h) box with the crop's aspect ratio; images smaller than the crop give a smaller box
    that is later scaled up, so every crop comes out at exactly (crop.height, crop.width)."""
    img_h, img_w = image_size
    scale = max(1.0, crop.height / img_h, crop.width / img_w)
    box_h, box_w = min(img_h, round(crop.height / scale)), min(img_w, round(crop.width / scale))
    if crop.mode == "random":
        return [int(rng.integers(0, img_w - box_w + 1)), int(rng.integers(0, img_h - box_h + 1)), box_w, box_h]
    column, row = position % GRID_SIDE, (position // GRID_SIDE) % GRID_SIDE
    return [(img_w - box_w) * column // (GRID_SIDE - 1), (img_h - box_h) * row // (GRID_SIDE - 1), box_w, box_h]


def plan_crops(root, crop: CropConfig):
    """The calibration manifest: which file and box each of ``crop.count`` crops comes from."""
    files = find_calibration_images(root)
    if len(files) < crop.batch:
        raise SanetError("calibration folder {} has {} image(s), fewer than one batch of {}: point --calib at "
                         "Cityscapes leftImg8bit/train or a folder of street images".format(root, len(files), crop.batch))
    if len(files) < 100:
        warnings.warn("calibrating on only {} distinct images from {}: INT8 scales may not represent your scenes "
                      "(100+ recommended)".format(len(files), root), stacklevel=2)
    rng = np.random.default_rng(crop.seed)
    order = rng.permutation(len(files)) if crop.mode == "random" else np.arange(len(files))
    sizes, crops = {}, []
    for index in range(crop.count):
        name = files[order[index % len(files)]]
        if name not in sizes:
            sizes[name] = read_image(os.path.join(root, name)).shape[:2]
        crops.append([name] + _box(sizes[name], crop, rng, index // len(files)))
    manifest = {
        "format": MANIFEST_FORMAT, "resolution": [crop.height, crop.width], "mode": crop.mode, "seed": crop.seed,
        "count": crop.count, "crops": crops,
        "files": {name: sha256_file(os.path.join(root, name)) for name in sorted(sizes)},
    }
    manifest["sha256"] = manifest_hash(manifest)
    manifest["root"] = os.path.abspath(root)
    return manifest


def manifest_hash(manifest):
    """Hash of what determines the calibration (boxes and file contents), not of where the files live."""
    keys = ("format", "resolution", "mode", "seed", "count", "crops", "files")
    canonical = json.dumps({k: manifest[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(path, manifest):
    write_json_atomic(path, manifest)


def read_manifest(path):
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        valid = manifest.get("format") == MANIFEST_FORMAT and manifest_hash(manifest) == manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SanetError("calibration manifest {} is unreadable ({}): delete it to re-plan the crops".format(path, exc)) from exc
    if not valid:
        raise SanetError("calibration manifest {} is corrupt (hash mismatch): delete it to re-plan the crops".format(path))
    return manifest


def load_crop(root, entry, height, width):
    """One manifest entry ``[file, x, y, w, h]`` -> uint8 RGB (height, width, 3)."""
    cv2 = import_cv2()
    name, x, y, w, h = entry
    image = read_image(os.path.join(root, name))[y:y + h, x:x + w]
    if image.shape[:2] != (h, w):
        raise SanetError("calibration image {} changed since the manifest was written: delete the manifest".format(name))
    if (h, w) != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image


def iter_batches(manifest, batch, root=None):
    """Yield uint8 RGB batches (batch, H, W, 3) of the manifest's crops; a short last batch is dropped."""
    root = root or manifest["root"]
    height, width = manifest["resolution"]
    crops = manifest["crops"]
    for start in range(0, len(crops) - batch + 1, batch):
        yield np.stack([load_crop(root, entry, height, width) for entry in crops[start:start + batch]])


class CalibrationCache:
    """A calibration cache file plus a key file; the cache is used only while the key still matches.

    The key names everything the cached scales depend on (manifest hash, model hash, method), so new
    crops or a re-exported model rebuild the cache instead of silently reusing stale scales.
    """

    def __init__(self, path, key: dict):
        self.path = os.fspath(path)
        self.key_path = self.path + ".key.json"
        self.key = dict(key)

    def valid(self):
        if not (os.path.isfile(self.path) and os.path.isfile(self.key_path)):
            return False
        try:
            with open(self.key_path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError) as exc:
            raise SanetError("calibration cache key {} is corrupt ({}): delete it to recalibrate".format(self.key_path, exc)) from exc
        return stored == self.key

    def read(self):
        """Cached bytes when valid, else None (stale files are removed so they cannot be picked up)."""
        if self.valid():
            with open(self.path, "rb") as handle:
                return handle.read()
        self.discard()
        return None

    def write(self, data: bytes):
        write_bytes_atomic(self.path, data)
        write_json_atomic(self.key_path, self.key)

    def discard(self):
        for path in (self.path, self.key_path):
            if os.path.exists(path):
                os.remove(path)


@dataclass
class QuantizeConfig:
    method: str = "minmax"  # matched entropy's agreement on SANet in our trial, and calibrates far faster
    activations: str = "int8"  # int8: symmetric, what TensorRT needs; uint8: the ONNX Runtime x86 fast path
    per_channel: bool = True
    keep: Tuple[str, ...] = ()  # layer groups (module paths, e.g. conv_out32, sff1) kept in float
    # The FP32 export of the same network at the crops' (smaller) resolution: ranges are collected there and
    # applied to the model being quantized (same tensor names), as TensorRT calibrates a dynamic-shape engine at
    # one profile shape; calibrating at 512x1024 costs a quarter of 1024x2048. Parity is checked by the caller.
    ranges_from: Optional[str] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise SanetError("unknown calibration method {!r}: use {}".format(self.method, ", ".join(METHODS)))
        if self.activations not in ACTIVATION_TYPES:
            raise SanetError("unknown activation type {!r}: use int8 or uint8".format(self.activations))


def group_nodes(node_names, group):
    """The node names that belong to a layer group (the classic exporter names nodes by module path)."""
    prefix = layer_group_prefix(group)
    return [name for name in node_names if name.startswith(prefix)]


def quantize_qdq(onnx_path, out_path, manifest, config: QuantizeConfig, cache_dir=None, report=None):
    """Write a Q/DQ INT8 ONNX of ``onnx_path`` calibrated on the manifest's crops; returns ``out_path``.

    Activation ranges come from :func:`collect_ranges` (streamed, bounded memory) and are handed to ONNX
    Runtime's quantizer as its calibration cache; with ``cache_dir`` that file is kept (keyed by model, crops
    and method), so re-quantizing with other layers kept in float does not recalibrate. Biases stay float
    (``QuantizeBias=False``): TensorRT 10/11 dequantize only int8/fp8, never the INT32 bias tensors.
    With ``config.ranges_from`` the ranges are collected on that export at the manifest's resolution instead.
    """
    from .export import read_metadata, read_nodes

    require("onnxruntime", "pip install 'sanet[onnx]'")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    meta = read_metadata(onnx_path, required=True)
    calibrated = config.ranges_from or onnx_path
    calibrated_meta = read_metadata(calibrated, required=True) if config.ranges_from else meta
    same = ("sanet.variant", "sanet.classes", "sanet.source_sha256", "sanet.opset", "sanet.input_layout", "sanet.output")
    if any(calibrated_meta.get(key) != meta.get(key) for key in same):
        raise SanetError("{} and {} are not the same network (variant, classes, weights, opset, layout or output differ): "
                         "calibrate at the model's own resolution".format(calibrated, onnx_path))
    resolution = calibrated_meta.get("sanet.resolution")
    if resolution != "{}x{}".format(*manifest["resolution"]):
        raise SanetError("calibration crops are {}x{} but {} is {}: plan crops at the model's resolution".format(
            manifest["resolution"][0], manifest["resolution"][1], calibrated, resolution))
    if meta.get("sanet.precision", "fp32") != "fp32":
        raise SanetError("{} is already quantized: quantize the FP32 export".format(onnx_path))
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise SanetError("this onnxruntime cannot take precomputed activation ranges (no calibration_cache_path): "
                         "pip install -U onnxruntime")
    nodes = read_nodes(onnx_path)
    unknown = [g for g in config.keep if not group_nodes(nodes, g)]
    if unknown:
        raise SanetError("no layers named {} in {}: groups are {}".format(unknown[0], onnx_path, ", ".join(FALLBACK_ORDER)))
    excluded = [name for group in config.keep for name in group_nodes(nodes, group)]
    symmetric = config.activations == "int8"
    with contextlib.ExitStack() as stack:
        folder = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="sanet-calib-"))
        key = {"manifest": manifest["sha256"], "onnx": sha256_file(calibrated), "method": config.method,
               "activations": config.activations, "format": RANGES_FORMAT}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        cache = CalibrationCache(os.path.join(folder, "ort-ranges-{}.json".format(digest)), key)
        if cache.read() is None:
            info = RunnerInfo.from_metadata(meta, "onnxruntime", "cpu")
            batches = (info.preprocess.to_input(images) for images in iter_batches(manifest, int(meta.get("sanet.batch", "1"))))
            ranges = collect_ranges(calibrated, batches, config.method, report=report)
            from onnxruntime.quantization.calibrate import save_tensors_data

            save_tensors_data(ranges, cache.path)
            write_json_atomic(cache.key_path, cache.key)
        else:
            _check_json(cache.path)
        if config.ranges_from:
            _check_ranges_cover(cache.path, onnx_path, config.ranges_from)
        with atomic_path(out_path) as tmp, _quiet():
            quantize_static(
                onnx_path, tmp, None, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[config.method]),
                calibration_cache_path=cache.path,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": False})
            _stamp(tmp, meta, manifest, config)
    return out_path


def _check_ranges_cover(ranges_path, onnx_path, ranges_from):
    """Ranges collected on ``ranges_from`` must name every tensor the quantizer wants in ``onnx_path`` (else ONNX
    Runtime would silently leave those tensors in float)."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    proto = onnx.load(os.fspath(onnx_path), load_external_data=False)
    with open(ranges_path) as handle:
        have = set(json.load(handle).get("data", {}))
    missing = sorted(calibrated_tensors(proto, _tensor_types(proto)) - have)
    if missing:
        raise SanetError("ranges calibrated on {} lack {} tensors of {} (e.g. {}): the two exports are not the same "
                         "network; calibrate at the model's own resolution".format(ranges_from, len(missing), onnx_path, missing[0]))


# ----------------------------------------------------------------------------------------------
# Streamed range collection. ONNX Runtime's own calibrators keep every intermediate tensor of every crop
# (entropy/percentile: 4.9 GB of float tensors per 1024x2048 crop, all crops at once) before reducing them.
# Here the graph is cut into segments of at most SEGMENT_BYTES of produced tensors; each crop runs through the
# segments in order, and each segment's tensors are folded into running min/max or histograms and dropped.

RANGES_FORMAT = 2  # 2: streamed segments (bumped so caches from ONNX Runtime's own calibrator are not reused)
SEGMENT_BYTES = 256 * 2 ** 20  # produced float tensors one segment holds at once; peak RSS is ~2-3x this
# ONNX Runtime's create_calibrator defaults for each method (quantize_static passes no other options here).
HISTOGRAM_OPTIONS = {
    "entropy": dict(symmetric=False, num_bins=128, num_quantized_bins=128, percentile=99.999),
    "percentile": dict(symmetric=True, num_bins=2048, num_quantized_bins=128, percentile=99.999),
}


def _tensor_types(proto):
    """{tensor name: (elem_type, byte size or 0 when a dimension is symbolic)} after shape inference."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    inferred = onnx.shape_inference.infer_shapes(proto)
    found = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize if tensor.elem_type else 0
        found[value.name] = (tensor.elem_type, int(np.prod(dims)) * itemsize)
    return found


def calibrated_tensors(proto, types):
    """The tensors ONNX Runtime's quantizer wants ranges for (its select_tensors_to_calibrate with all op
    types): float inputs/outputs of every node that are not initializers."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    initializers = {init.name for init in proto.graph.initializer}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return {name for node in proto.graph.node for name in list(node.input) + list(node.output)
            if name in types and types[name][0] in floats and name not in initializers}


@dataclass
class _Segment:
    session: object
    inputs: list
    outputs: list


def graph_segments(proto, wanted, budget=SEGMENT_BYTES):
    """Cut ``proto`` (nodes in topological order) into consecutive sub-models whose produced tensors total at most
    ``budget`` bytes (a single larger node gets its own). Each returns the ``wanted`` tensors it produces and the
    ones later segments or the graph output need. -> [(ModelProto, input names, output names)]"""
    require("onnx", "pip install 'sanet[onnx]'")
    from onnx import helper

    types = _tensor_types(proto)
    groups, current, size = [], [], 0
    for node in proto.graph.node:
        produced = sum(types.get(name, (0, 0))[1] for name in node.output)
        if current and size + produced > budget:
            groups.append(current)
            current, size = [], 0
        current.append(node)
        size += produced
    groups.append(current)
    initializers = {init.name: init for init in proto.graph.initializer}
    graph_outputs = [value.name for value in proto.graph.output]
    segments = []
    for index, nodes in enumerate(groups):
        produced = [name for node in nodes for name in node.output if name]
        own = set(produced)
        inputs = list(dict.fromkeys(name for node in nodes for name in node.input
                                    if name and name not in own and name not in initializers))
        later = {name for group in groups[index + 1:] for node in group for name in node.input}
        outputs = [name for name in produced if name in wanted or name in later or name in graph_outputs]
        graph = helper.make_graph(
            nodes, "segment_{}".format(index),
            [helper.make_tensor_value_info(name, types[name][0], None) for name in inputs],
            [helper.make_tensor_value_info(name, types[name][0], None) for name in outputs],
            [initializers[name] for name in dict.fromkeys(n for node in nodes for n in node.input) if name in initializers])
        model = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
        segments.append((model, inputs, outputs))
    return segments


class _RangeAccumulator:
    """Running min/max (minmax) or ONNX Runtime's HistogramCollector (entropy, percentile), fed one tensor at a time."""

    def __init__(self, method):
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.method, self.extremes = method, {}
        self.histograms = None if method == "minmax" else HistogramCollector(
            method=method, scenario="same", **HISTOGRAM_OPTIONS[method])

    def add(self, name, array):
        if self.histograms is not None:
            self.histograms.collect({name: array})
            return
        low, high = np.float32(np.nanmin(array)), np.float32(np.nanmax(array))
        if name in self.extremes:
            low, high = min(low, self.extremes[name][0]), max(high, self.extremes[name][1])
        self.extremes[name] = (low, high)

    def result(self):
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import TensorsData

        method = getattr(CalibrationMethod, _ORT_METHODS[self.method])
        if self.histograms is None:
            return TensorsData(method, {name: (np.array(low, np.float32), np.array(high, np.float32))
                                        for name, (low, high) in self.extremes.items()})
        return TensorsData(method, self.histograms.compute_collection_result())


def collect_ranges(onnx_path, batches, method, budget=SEGMENT_BYTES, report=None):
    """Activation ranges of an FP32 ONNX over ``batches`` (input arrays in its layout) for ONNX Runtime's
    quantizer (a TensorsData), streamed: one crop and one graph segment in memory at a time."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    ort = require("onnxruntime", "pip install 'sanet[onnx]'")
    from .export import INPUT_NAME

    if method not in METHODS:
        raise SanetError("unknown calibration method {!r}: use {}".format(method, ", ".join(METHODS)))
    proto = onnx.load(os.fspath(onnx_path))
    wanted = calibrated_tensors(proto, _tensor_types(proto))
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # an arena per segment would keep each segment's peak for good
    segments = []
    for model, inputs, outputs in graph_segments(proto, wanted, budget):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        segments.append(_Segment(session, inputs, outputs))
    del proto
    last_use = {}
    for index, segment in enumerate(segments):
        last_use.update((name, index) for name in segment.inputs)
    accumulator, count = _RangeAccumulator(method), 0
    with _quiet():
        for batch in batches:
            values = {INPUT_NAME: batch}
            if INPUT_NAME in wanted:
                accumulator.add(INPUT_NAME, batch)
            for index, segment in enumerate(segments):
                results = segment.session.run(segment.outputs, {name: values[name] for name in segment.inputs})
                for name, array in zip(segment.outputs, results):
                    if name in wanted:
                        accumulator.add(name, array)
                    if last_use.get(name, -1) > index:
                        values[name] = array
                del results
                for name in [n for n in values if last_use.get(n, -1) <= index]:
                    del values[name]
            count += 1
            if report:
                report("calibration ({}): crop batch {}".format(method, count))
        if not count:
            raise SanetError("no calibration batches: plan at least one batch of crops")
        return accumulator.result()


@contextlib.contextmanager
def _quiet():
    """Silence the quantizer's generic advice (logged at WARNING on the root logger) and deprecation noise."""
    logging.disable(logging.WARNING)
    try:
        # HistogramCollector prints its progress; library code here reports through callbacks only.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


_ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _check_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    except ValueError as exc:
        raise SanetError("calibration cache {} is corrupt ({}): delete it to recalibrate".format(path, exc)) from exc


def _stamp(path, meta, manifest, config):
    """Carry the export's metadata over and say how the file was quantized."""
    from .export import set_metadata

    onnx = require("onnx", "pip install 'sanet[onnx]'")
    proto = onnx.load(path)
    set_metadata(proto, dict(meta, **{
        "sanet.precision": "int8", "sanet.quantization": "qdq", "sanet.int8_activations": config.activations,
        "sanet.calibration_method": config.method, "sanet.calibration_sha256": manifest["sha256"],
        "sanet.calibration_resolution": "{}x{}".format(*manifest["resolution"]),
        "sanet.float_groups": ",".join(config.keep),
    }))
    onnx.save(proto, path)


def quantize_with_fallback(onnx_path, out_path, manifest, config: QuantizeConfig, reference, dataset,
                           budget=None, cache_dir=None, limit=None, report=print):
    """Quantize, check parity against ``reference`` (PyTorch FP32); while over budget, keep the next group of
    FALLBACK_ORDER in float and try again. Returns (ParityResult, groups moved to float)."""
    from .export import read_nodes
    from .parity import BUDGETS, MemoRunner

    budget = budget or BUDGETS["int8"]
    reference = MemoRunner(reference)  # PyTorch FP32 predicts each image once, not once per attempt
    nodes = read_nodes(onnx_path)
    groups = [g for g in FALLBACK_ORDER if group_nodes(nodes, g)]
    keep, moved = list(config.keep), []
    with contextlib.ExitStack() as stack:  # ranges are collected once and reused by every attempt
        cache_dir = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="sanet-calib-"))
        return _fallback_loop(onnx_path, out_path, manifest, config, reference, dataset, budget, cache_dir, limit,
                              report, groups, keep, moved)


def _fallback_loop(onnx_path, out_path, manifest, config, reference, dataset, budget, cache_dir, limit, report,
                   groups, keep, moved):
    from .parity import compare

    while True:
        quantize_qdq(onnx_path, out_path, manifest, replace(config, keep=tuple(keep)), cache_dir)
        with OrtRunner(out_path) as candidate:
            result = compare(reference, candidate, dataset, limit=limit, budget=budget, progress=False)
        report("int8 with float groups [{}]: pixel agreement {:.3%}, delta mIoU {} -> {}".format(
            ", ".join(keep) or "none", result.pixel_agreement,
            "-" if result.delta_miou is None else "{:+.2f} pt".format(100 * result.delta_miou),
            "PASS" if result.passed else "FAIL"))
        if result.passed:
            return result, moved
        remaining = [g for g in groups if g not in keep]
        if not remaining:
            os.remove(out_path)
            raise SanetError("INT8 parity budget not met even with every layer group in float ({}): "
                             "check the calibration crops or use FP16".format("; ".join(result.failures)))
        keep.append(remaining[0])
        moved.append(remaining[0])
