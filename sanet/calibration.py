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
from typing import Dict, List, Optional, Tuple

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
    from .export import read_nodes

    require("onnxruntime", "pip install 'sanet[onnx]'")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    meta = _check_calibration_source(onnx_path, config.ranges_from, manifest)
    calibrated = config.ranges_from or onnx_path
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
        # Not keyed by the activation type: the ranges are the same, the quantizer derives int8 or uint8 scales from them.
        key = {"manifest": manifest["sha256"], "onnx": sha256_file(calibrated), "method": config.method, "format": RANGES_FORMAT}
        cache = _keyed_cache(folder, "ort-ranges", key)
        if cache.read() is None:
            ranges = collect_ranges(calibrated, _crop_inputs(meta, manifest), config.method, report=report)
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


def _check_calibration_source(onnx_path, ranges_from, manifest):
    """The metadata of the FP32 export ``onnx_path``, after checking that the crops fit the export calibrated
    (``ranges_from`` when given, which must be the same network at another resolution)."""
    from .export import read_metadata

    meta = read_metadata(onnx_path, required=True)
    calibrated = ranges_from or onnx_path
    calibrated_meta = read_metadata(calibrated, required=True) if ranges_from else meta
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
    return meta


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
    if method not in METHODS:
        raise SanetError("unknown calibration method {!r}: use {}".format(method, ", ".join(METHODS)))
    proto = onnx.load(os.fspath(onnx_path))
    wanted = calibrated_tensors(proto, _tensor_types(proto))
    accumulator = _RangeAccumulator(method)
    with _quiet():
        stream_tensors(proto, batches, wanted, accumulator.add, budget, report, "calibration ({})".format(method))
        return accumulator.result()


def stream_tensors(proto, batches, wanted, visit, budget=SEGMENT_BYTES, report=None, label="calibration"):
    """Run the FP32 graph ``proto`` over ``batches`` one graph segment at a time and call ``visit(name, array)`` with
    every ``wanted`` tensor (the input included) of each batch; a tensor is dropped after its last reader. Returns
    the number of batches."""
    ort = require("onnxruntime", "pip install 'sanet[onnx]'")
    from .export import INPUT_NAME

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # an arena per segment would keep each segment's peak for good
    segments = []
    for model, inputs, outputs in graph_segments(proto, wanted, budget):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        segments.append(_Segment(session, inputs, outputs))
    last_use = {}
    for index, segment in enumerate(segments):
        last_use.update((name, index) for name in segment.inputs)
    count = 0
    for batch in batches:
        values = {INPUT_NAME: batch}
        if INPUT_NAME in wanted:
            visit(INPUT_NAME, batch)
        for index, segment in enumerate(segments):
            results = segment.session.run(segment.outputs, {name: values[name] for name in segment.inputs})
            for name, array in zip(segment.outputs, results):
                if name in wanted:
                    visit(name, array)
                if last_use.get(name, -1) > index:
                    values[name] = array
            del results
            for name in [n for n in values if last_use.get(n, -1) <= index]:
                del values[name]
        count += 1
        if report:
            report("{}: crop batch {}".format(label, count))
    if not count:
        raise SanetError("no calibration batches: plan at least one batch of crops")
    return count


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
    """The content of the JSON cache file ``path``, or one SanetError when it is corrupt."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as exc:
        raise SanetError("calibration cache {} is corrupt ({}): delete it to recalibrate".format(path, exc)) from exc


def _keyed_cache(folder, prefix, key):
    """The CalibrationCache ``prefix-DIGEST.json`` in ``folder``, DIGEST naming ``key`` (what the ranges depend on)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return CalibrationCache(os.path.join(folder, "{}-{}.json".format(prefix, digest)), key)


def _crop_inputs(meta, manifest):
    """The manifest's crops as input batches of the export whose metadata is ``meta`` (its batch size and layout)."""
    info = RunnerInfo.from_metadata(meta, "onnxruntime", "cpu")
    return (info.preprocess.to_input(images) for images in iter_batches(manifest, int(meta.get("sanet.batch", "1"))))


def _stamp(path, meta, manifest, config):
    """Carry the export's metadata over and say how the file was quantized."""
    from .export import set_metadata

    onnx = require("onnx", "pip install 'sanet[onnx]'")
    proto = onnx.load(path)
    set_metadata(proto, _quantized_metadata(meta, manifest, "qdq", config.activations, config.method, config.keep))
    onnx.save(proto, path)


def _quantized_metadata(meta, manifest, quantization, activations, method, keep):
    """The export's metadata plus how it was quantized (``quantization``: qdq, or classic-emulation for CPU only)."""
    return dict(meta, **{
        "sanet.precision": "int8", "sanet.quantization": quantization, "sanet.int8_activations": activations,
        "sanet.calibration_method": method, "sanet.calibration_sha256": manifest["sha256"],
        "sanet.calibration_resolution": "{}x{}".format(*manifest["resolution"]),
        "sanet.float_groups": ",".join(keep),
    })


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


# ----------------------------------------------------------------------------------------------
# TensorRT 8.5's classic route (implicit quantization with IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator),
# emulated on CPU as a Q/DQ model that ONNX Runtime runs.
#
# Sources of the algorithm (read, not copied):
# - Szymon Migacz, "8-bit Inference with TensorRT", GTC 2017: per-tensor histogram of |x| (2048 bins), candidate
#   thresholds from bin 128 up, P = the first i bins with the clipped tail added to the last one, Q = those bins
#   merged into 128 levels and expanded back over their non-empty bins, threshold at the minimum of KL(P || Q).
# - NVIDIA's MLPerf Inference v0.5 calibration notes (mlcommons/inference_results_v0.5, closed/NVIDIA/calibration.md,
#   "TensorRT ... implements the scheme described above"): the histogram's range is set by the first batch and
#   doubled (bin width kept) when a later batch exceeds it; its first bin is discarded (ReLU zeros); the range is
#   the centre of the chosen bin; min-max is max |x|; weights are per output channel, max |w|; max-pooling takes
#   its output's range for its input.
# - TensorRT Developer Guide (8.5), "INT8 Calibration": EntropyCalibrator2 and MinMaxCalibrator calibrate before
#   layer fusion, so every tensor of the parsed network gets a range, and the builder then picks INT8 kernels.
# - NVIDIA/TensorRT tools/pytorch-quantization, calib/histogram.py (release/8.5): the same KL search with grouping
#   bin j -> j * 128 // i and empty bins left empty.

CLASSIC_METHODS = ("entropy", "minmax")
CLASSIC_FORMAT = 1  # bump when the ranges or their cache layout change
HISTOGRAM_BINS = 2048  # bins up to the first batch's max |x| (Migacz); later maxima double the count
QUANTIZED_BINS = 128  # levels of |x| in symmetric int8 (0..127)
MAX_BINS = 32 * HISTOGRAM_BINS  # a range 32x the first batch's; wider ranges merge bin pairs instead
KL_CHUNK = 4096  # candidate thresholds evaluated at once in the KL search
INT8_MAX = 127.0
CONV_OPS = ("Conv",)
POOL_OPS = ("MaxPool",)  # int8 kernels that do not change the range: the input takes the output's range


def entropy_divergences(hist, levels=QUANTIZED_BINS):
    """KL(P || Q) of the entropy calibration for every candidate bin count ``i = levels .. len(hist)``.

    ``hist``: (N,) counts of |x| in equal bins from 0 (the caller discards bin 0). P is ``hist[:i]`` with the counts
    beyond bin i-1 added to bin i-1 (what clipping at the threshold does); Q is ``hist[:i]`` merged into ``levels``
    groups (bin j -> group j * levels // i) and expanded back: each group's count spread evenly over its non-empty
    bins, empty bins left empty. Both normalised; KL is inf where P > 0 = Q (an empty last bin taking the tail).
    Computed per group from prefix sums, O(levels) per candidate:
    KL = [sum_j P'_j log P'_j - sum_g P'_g log(T_g / n_g)] / S - log S + log S_i, with P' the clipped counts,
    T_g and n_g a group's count and non-empty bins, S the total and S_i the count below the threshold.
    Returns (N - levels + 1,) float64; entry k belongs to ``i = levels + k``.
    """
    h = np.asarray(hist, np.float64)
    if h.ndim != 1 or len(h) < levels:
        raise SanetError("the entropy calibration needs a 1-D histogram of at least {} bins".format(levels))
    nonzero = h > 0

    def xlogx(x):
        return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)

    hlogh = xlogx(h)
    counts, filled, entropy_sums = (np.concatenate([[0.0], np.cumsum(v)]) for v in (h, nonzero, hlogh))
    total = counts[-1]
    result = []
    for start in range(levels, len(h) + 1, KL_CHUNK):  # (K, levels) arrays per chunk: memory stays bounded
        candidates = np.arange(start, min(start + KL_CHUNK, len(h) + 1))  # (K,) bins kept
        bounds = (np.arange(levels + 1)[None, :] * candidates[:, None] + levels - 1) // levels  # first bin of each group
        totals = counts[bounds[:, 1:]] - counts[bounds[:, :-1]]  # (K, levels) T_g
        bins = filled[bounds[:, 1:]] - filled[bounds[:, :-1]]  # (K, levels) n_g
        kept = counts[candidates]
        tail, last = total - kept, h[candidates - 1]
        clipped = totals.copy()
        clipped[:, -1] += tail  # the last group holds the last bin, which takes the tail
        per_bin = np.log(np.where(bins > 0, totals / np.maximum(bins, 1), 1.0))
        cross = np.sum(np.where(bins > 0, clipped * per_bin, 0.0), axis=1)
        own = entropy_sums[candidates] - hlogh[candidates - 1] + xlogx(last + tail)
        with np.errstate(divide="ignore"):
            divergence = (own - cross) / total - np.log(total) + np.log(kept)
        divergence[((last == 0) & (tail > 0)) | (kept == 0)] = np.inf
        result.append(divergence)
    return np.concatenate(result)


class AbsHistogram:
    """Streamed histogram of |x| for one tensor: ``HISTOGRAM_BINS`` equal bins up to the first non-zero batch's max;
    a later batch beyond the range doubles the bin count (same width) until it fits. Beyond ``MAX_BINS`` (a first
    batch of near zeros) pairs of bins merge instead, so memory stays bounded. Also keeps max |x|."""

    def __init__(self, bins=HISTOGRAM_BINS):
        self.initial_bins, self.width, self.counts, self.amax = bins, None, None, 0.0

    def add(self, array):
        magnitude = np.abs(np.asarray(array, np.float32).ravel())
        peak = float(magnitude.max()) if magnitude.size else 0.0
        if not np.isfinite(peak):
            raise SanetError("a calibration tensor holds inf/NaN: the FP32 model overflows on the calibration crops")
        self.amax = max(self.amax, peak)
        if self.width is None:
            if peak == 0.0:
                return  # all zeros: they fall in bin 0, which the entropy calibration discards anyway
            self.width = peak / self.initial_bins
            self.counts = np.zeros(self.initial_bins, np.int64)
        while peak > self.width * len(self.counts):
            if len(self.counts) >= MAX_BINS:
                self.counts, self.width = self.counts.reshape(-1, 2).sum(axis=1), self.width * 2
            self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
        index = np.minimum((magnitude / np.float32(self.width)).astype(np.intp), len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))

    def entropy_amax(self, levels=QUANTIZED_BINS):
        """The entropy calibrator's |x| threshold: the centre of the last kept bin at the minimum divergence."""
        if self.counts is None:
            return 0.0
        hist = self.counts.copy()
        hist[0] = 0  # mostly exact zeros (ReLU): they say nothing about where to clip
        if not hist.any():
            return self.amax
        best = levels + int(np.argmin(entropy_divergences(hist, levels)))
        return min(self.amax, (best - 0.5) * self.width)


@dataclass
class ClassicPlan:
    """Where TensorRT's implicit INT8 would run, on the tensors of an FP32 export (see :func:`classic_plan`)."""

    activations: List[str]  # tensors an INT8 layer reads: stored in INT8 with a calibrated per-tensor scale
    weights: Dict[str, str]  # convolution weight initializer -> its Conv node: per-output-channel INT8
    pooled: Dict[str, str]  # MaxPool input -> its output: the input takes the output's range
    fused: List[str]  # tensors inside a fused INT8 layer (conv -> ReLU / residual Add): float32, never stored


def classic_plan(proto, keep=()):
    """The INT8 layers of TensorRT's implicit quantization in an FP32 SANet export, and the tensors they read.
    Layers of the groups in ``keep`` (module paths, e.g. sff2.conv_2) run in float, as ``--int8-keep`` pins them.

    Assumptions (TensorRT picks kernels by timing, so these are the stated model, not a trace of a build):
    - Every Conv runs INT8 (BatchNorm is already folded into it by the export): its data input is stored in INT8,
      its weights are quantized per output channel with max |w|, its bias stays float.
    - A Conv whose only reader is a ReLU fuses it; a Conv whose only reader is an Add fuses that residual add (and a
      ReLU after it): the add's other input is read in INT8. Where both inputs of the add are such convs (a ResNet
      block with a downsample branch), the later one in graph order takes the add and the other is stored in INT8.
    - MaxPool runs INT8 in and out with one range (its output's, propagated to its input).
    - Every other layer (SCE's MatMuls, Resize, Sigmoid, the GeM chain, element-wise Mul/Add between float tensors,
      Concat, Slice, Reshape, DepthToSpace) runs in float; an INT8 layer whose readers are all float writes float
      (TensorRT's INT8 convolutions have float-output kernels), so the classifier's logits are not quantized.
    - A tensor stored in INT8 is seen quantized by every reader, float ones included.
    """
    from .export import INPUT_NAME

    names = [node.name for node in proto.graph.node]
    unknown = [group for group in keep if not group_nodes(names, group)]
    if unknown:
        raise SanetError("no layers named {} in this export: groups are module paths such as {}".format(
            unknown[0], ", ".join(FALLBACK_ORDER)))
    floats = {name for group in keep for name in group_nodes(names, group)}
    initializers = {init.name for init in proto.graph.initializer}
    readers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    producer = {name: node for node in proto.graph.node for name in node.output}
    order = {id(node): index for index, node in enumerate(proto.graph.node)}

    def only_reader(name, op_type):
        found = readers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type and found[0].name not in floats else None

    stored, fused, weights, pooled = set(), set(), {}, {}
    for node in proto.graph.node:
        if node.name in floats:
            continue
        if node.op_type in CONV_OPS:
            stored.add(node.input[0])
            weights[node.input[1]] = node.name
            if only_reader(node.output[0], "Relu") is not None:
                fused.add(node.output[0])
        elif node.op_type in POOL_OPS:
            stored.update((node.input[0], node.output[0]))
            pooled[node.input[0]] = node.output[0]
        elif node.op_type == "Add":
            convs = [name for name in node.input if name in producer and producer[name].op_type in CONV_OPS
                     and producer[name].name not in floats and only_reader(name, "Add") is node]
            if not convs:
                continue
            taken = max(convs, key=lambda name: order[id(producer[name])])
            fused.add(taken)
            stored.update(name for name in node.input if name != taken and name not in initializers)
            if only_reader(node.output[0], "Relu") is not None:
                fused.add(node.output[0])
    graph_order = [INPUT_NAME] + [name for node in proto.graph.node for name in node.output]
    return ClassicPlan([name for name in graph_order if name in stored], weights, pooled,
                       [name for name in graph_order if name in fused])


def classic_ranges(proto, batches, tensors, budget=SEGMENT_BYTES, report=None):
    """{"entropy": {name: amax}, "minmax": {name: amax}} of ``tensors`` of the FP32 graph over ``batches``, in one
    streamed pass (TensorRT calibrates the FP32 network; both calibrators read the same histograms)."""
    histograms = {name: AbsHistogram() for name in tensors}
    stream_tensors(proto, batches, set(tensors), lambda name, array: histograms[name].add(array), budget, report,
                   "classic calibration")
    return {"entropy": {name: float(h.entropy_amax()) for name, h in histograms.items()},
            "minmax": {name: float(h.amax) for name, h in histograms.items()}}


def _scale(amax):
    """Symmetric int8 scale of a range; a range of 0 (a tensor that was 0 on every crop) keeps it 0."""
    return np.where(amax > 0, amax / INT8_MAX, np.finfo(np.float32).tiny).astype(np.float32)


def classic_model(proto, plan: ClassicPlan, amax):
    """The FP32 graph with Q/DQ where ``plan`` runs INT8: per-tensor symmetric int8 on each stored activation (scale
    amax / 127 from ``amax`` {tensor: range}, MaxPool inputs taking their output's), per-output-channel int8
    weights (max |w| / 127), float biases. Readers of a stored tensor read its dequantized copy. -> new ModelProto"""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    from onnx import helper, numpy_helper

    ranges = dict(amax)
    ranges.update((source, ranges[output]) for source, output in plan.pooled.items() if output in ranges)
    missing = [name for name in plan.activations if name not in ranges]
    if missing:
        raise SanetError("no calibrated range for {} tensors (e.g. {}): recalibrate this export".format(len(missing), missing[0]))
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    stored = set(plan.activations)
    nodes, initializers = [], []
    for init in graph.initializer:
        if init.name not in plan.weights:
            continue
        weight = numpy_helper.to_array(init).astype(np.float32)  # (C_out, C_in/groups, k...)
        scale = _scale(np.abs(weight.reshape(len(weight), -1)).max(axis=1))
        quantized = np.clip(np.round(weight / scale.reshape(-1, *[1] * (weight.ndim - 1))), -INT8_MAX, INT8_MAX)
        initializers += [numpy_helper.from_array(quantized.astype(np.int8), init.name + "_int8"),
                         numpy_helper.from_array(scale, init.name + "_scale"),
                         numpy_helper.from_array(np.zeros(len(weight), np.int8), init.name + "_zero")]
        nodes.append(helper.make_node("DequantizeLinear", [init.name + "_int8", init.name + "_scale", init.name + "_zero"],
                                      [init.name], name=init.name + "_dequantize", axis=0))
    kept = [init for init in graph.initializer if init.name not in plan.weights]
    del graph.initializer[:]
    graph.initializer.extend(kept + initializers)

    def quantize(name):
        """Q/DQ of one stored tensor: ``name`` -> ``name``_int8 -> ``name``_dequantized."""
        graph.initializer.extend([numpy_helper.from_array(_scale(np.float32(ranges[name])), name + "_scale"),
                                  numpy_helper.from_array(np.int8(0), name + "_zero")])
        args = [name + "_scale", name + "_zero"]
        return [helper.make_node("QuantizeLinear", [name] + args, [name + "_int8"], name=name + "_quantize"),
                helper.make_node("DequantizeLinear", [name + "_int8"] + args, [name + "_dequantized"],
                                 name=name + "_dequantize")]

    for value in graph.input:
        if value.name in stored:
            nodes.extend(quantize(value.name))
    for node in proto.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for position, name in enumerate(copy.input):
            if name in stored:
                copy.input[position] = name + "_dequantized"
        nodes.append(copy)
        for name in node.output:
            if name in stored:
                nodes.extend(quantize(name))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def classic_qdq(onnx_path, out_path, manifest, method="entropy", keep=(), cache_dir=None, report=None):
    """Write the CPU emulation of TensorRT 8.5's classic INT8 route for the FP32 export ``onnx_path``, calibrated on
    the manifest's crops with ``method`` (entropy: IInt8EntropyCalibrator2, minmax: IInt8MinMaxCalibrator), layer
    groups in ``keep`` left in float; returns ``out_path``. Layers outside INT8 stay float32 here (the engine runs
    them in FP16: the FP16 emulation measures that part). Both methods' ranges come from one streamed pass; with
    ``cache_dir`` they are kept, keyed by model, crops and the tensors calibrated."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    from .export import set_metadata

    if method not in CLASSIC_METHODS:
        raise SanetError("TensorRT calibrators are {}, not {!r}".format(" or ".join(CLASSIC_METHODS), method))
    meta = _check_calibration_source(onnx_path, None, manifest)
    proto = onnx.load(os.fspath(onnx_path))
    plan = classic_plan(proto, keep)
    wanted = sorted({name for name in plan.activations if name not in plan.pooled} | set(plan.pooled.values()))
    with contextlib.ExitStack() as stack:
        folder = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="sanet-calib-"))
        key = {"manifest": manifest["sha256"], "onnx": sha256_file(onnx_path), "route": "classic", "format": CLASSIC_FORMAT,
               "tensors": hashlib.sha256("\n".join(wanted).encode()).hexdigest()}
        cache = _keyed_cache(folder, "classic-ranges", key)
        if cache.read() is None:
            ranges = classic_ranges(proto, _crop_inputs(meta, manifest), wanted, report=report)
            cache.write(json.dumps(ranges, sort_keys=True).encode())
        else:
            ranges = _check_json(cache.path)
    if report:
        report("classic INT8 emulation ({}): {} convolutions with int8 weights, {} tensors stored in int8, {} fused into "
               "their convolution".format(method, len(plan.weights), len(plan.activations), len(plan.fused)))
    model = classic_model(proto, plan, ranges[method])
    set_metadata(model, _quantized_metadata(meta, manifest, "classic-emulation", "int8", method, keep))
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp:
        onnx.save(model, tmp)
    return out_path


def classic_emulation(onnx_path, calib_root, count=64, method="entropy", keep=(), report=None):
    """``sanet-parity --emulate int8-classic``: calibrate ``count`` random crops of ``calib_root`` at the export's
    resolution and write the classic-route emulation next to the FP32 export, as ``{stem}_int8_classic_{method}.onnx``
    (ranges cached in its folder's calibration-cache/); returns its path."""
    from .export import read_metadata

    resolution = read_metadata(onnx_path, required=True).get("sanet.resolution", "dynamic")
    if "x" not in resolution:
        raise SanetError("{} has dynamic H x W: the classic emulation calibrates a static export (drop --dynamic)".format(onnx_path))
    height, width = (int(v) for v in resolution.split("x"))
    manifest = plan_crops(calib_root, CropConfig(height, width, count=count))
    folder = os.path.dirname(os.path.abspath(onnx_path))
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    out = os.path.join(folder, "{}_int8_classic_{}.onnx".format(stem, method))
    classic_qdq(onnx_path, out, manifest, method, tuple(keep), os.path.join(folder, "calibration-cache"), report)
    if report:
        report("classic INT8 emulation written: {}".format(out))
    return out
