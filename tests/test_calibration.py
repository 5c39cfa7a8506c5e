"""INT8 calibration: crops and manifests, caches, the Q/DQ route on ONNX Runtime CPU, the auto-fallback loop."""
import json
import math
import os

import numpy as np
import onnx
import pytest

from sanet.calibration import (
    FALLBACK_ORDER,
    HISTOGRAM_BINS,
    MAX_BINS,
    AbsHistogram,
    CalibrationCache,
    CropConfig,
    QuantizeConfig,
    classic_model,
    classic_plan,
    classic_qdq,
    collect_ranges,
    entropy_divergences,
    find_calibration_images,
    graph_segments,
    iter_batches,
    load_crop,
    plan_crops,
    quantize_qdq,
    quantize_with_fallback,
    read_manifest,
    write_manifest,
)
from sanet.data import open_dataset, write_png
from sanet.errors import SanetError
from sanet.export import read_metadata
from sanet.parity import BUDGETS, Budget, MemoRunner, compare
from sanet.runners import OrtRunner, TorchRunner

pytestmark = pytest.mark.filterwarnings("ignore:calibrating on only")


def test_crops_are_deterministic_in_bounds_and_at_engine_size(synth_small):
    random = plan_crops(str(synth_small), CropConfig(64, 96, count=30, seed=3))
    assert random["sha256"] == plan_crops(str(synth_small), CropConfig(64, 96, count=30, seed=3))["sha256"]
    assert random["sha256"] != plan_crops(str(synth_small), CropConfig(64, 96, count=30, seed=4))["sha256"]
    grid = plan_crops(str(synth_small), CropConfig(64, 96, count=30, mode="grid"))
    assert {name for name, *_ in grid["crops"]} == set(grid["files"])  # 30 crops cycle over the 24 train files
    assert all(name.startswith(os.path.join("leftImg8bit", "train")) for name in grid["files"])
    for manifest in (random, grid):
        for _, x, y, w, h in manifest["crops"]:
            assert (w, h) == (96, 64) and 0 <= x <= 256 - w and 0 <= y <= 128 - h
    first_pass, second_pass = grid["crops"][0], grid["crops"][24]
    assert first_pass[0] == second_pass[0] and first_pass[1:3] != second_pass[1:3]  # next grid position
    batches = list(iter_batches(grid, batch=4))
    assert len(batches) == 7 and batches[0].shape == (4, 64, 96, 3) and batches[0].dtype == np.uint8


def test_small_images_are_scaled_up_to_the_engine_size(synth_small):
    manifest = plan_crops(str(synth_small), CropConfig(256, 384, count=3))
    for entry in manifest["crops"]:
        assert entry[3:] == [192, 128]  # (w, h): the 384:256 aspect, scaled to fit the 256x128 image
        assert load_crop(manifest["root"], entry, 256, 384).shape == (256, 384, 3)


def test_real_cityscapes_crops_come_from_leftimg8bit_train(real_data):
    manifest = plan_crops(str(real_data / "cityscapes"), CropConfig(512, 1024, count=6, mode="grid"))
    assert sorted(manifest["files"]) == sorted(
        os.path.join("leftImg8bit", "train", "stuttgart", n) for n in
        ("stuttgart_000021_000019_leftImg8bit.png", "stuttgart_000072_000019_leftImg8bit.png"))
    assert {tuple(c[1:3]) for c in manifest["crops"]} == {(0, 0), (512, 0), (1024, 0)}


def test_manifest_round_trip_and_tampering(synth_small, tmp_path):
    manifest = plan_crops(str(synth_small), CropConfig(64, 96, count=5))
    path = tmp_path / "calib.json"
    write_manifest(path, manifest)
    assert read_manifest(path) == manifest
    manifest["crops"][0][1] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(SanetError, match="hash mismatch"):
        read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(SanetError, match="unreadable"):
        read_manifest(path)


def test_too_few_images_refused_and_few_images_warned(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SanetError, match="fewer than one batch"):
        plan_crops(str(empty), CropConfig(32, 32, count=4))
    with pytest.raises(SanetError, match="calibration folder not found"):
        plan_crops(str(tmp_path / "missing"), CropConfig(32, 32))
    write_png(str(empty / "a.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(SanetError, match="fewer than one batch"):
        plan_crops(str(empty), CropConfig(32, 32, count=4, batch=2))
    with pytest.warns(UserWarning, match="only 1 distinct images"):
        plan_crops(str(empty), CropConfig(32, 32, count=4))
    with pytest.raises(SanetError, match="at least one batch"):
        CropConfig(32, 32, count=1, batch=2)


def test_calibration_cache_is_reused_only_while_its_key_matches(tmp_path):
    key = {"manifest": "abc", "onnx": "123", "method": "entropy"}
    cache = CalibrationCache(tmp_path / "x.cache", key)
    assert cache.read() is None
    cache.write(b"scales")
    assert CalibrationCache(tmp_path / "x.cache", key).read() == b"scales"
    stale = CalibrationCache(tmp_path / "x.cache", dict(key, manifest="other crops"))
    assert stale.read() is None and not os.path.exists(tmp_path / "x.cache")  # stale file removed
    cache.write(b"scales")
    (tmp_path / "x.cache.key.json").write_text("{broken")
    with pytest.raises(SanetError, match="corrupt"):
        cache.read()


@pytest.fixture(scope="module")
def synth_manifest(synth_small):
    return plan_crops(str(synth_small), CropConfig(128, 256, count=24))


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_qdq_int8_holds_the_int8_budget_on_synthetic_val(exported, synth_small, synth_manifest, tmp_path, activations):
    model, paths = exported
    out = tmp_path / "int8.onnx"
    quantize_qdq(paths[(128, 256)], out, synth_manifest, QuantizeConfig(activations=activations), cache_dir=tmp_path)
    meta = read_metadata(out)
    assert meta["sanet.precision"] == "int8" and meta["sanet.calibration_sha256"] == synth_manifest["sha256"]
    graph = onnx.load(str(out)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    types = {init.name: init.data_type for init in graph.initializer}
    # Biases stay float (QuantizeBias=False): no INT32 DequantizeLinear; the TensorRT variant dequantizes int8 only.
    dequantized_types = {types[name] for name in dequantized if name in types}
    assert onnx.TensorProto.INT32 not in dequantized_types
    if activations == "int8":
        assert dequantized_types == {onnx.TensorProto.INT8}
    assert any(node.op_type == "Conv" and len(node.input) == 3 and types.get(node.input[2]) == onnx.TensorProto.FLOAT
               for node in graph.node)
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OrtRunner(out) as candidate:
        assert candidate.info.precision == "int8"
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert result.budget == BUDGETS["int8"]
    assert result.passed, result.failures
    assert abs(result.delta_miou) <= 0.01 and result.pixel_agreement < 1.0  # really quantized, still within 1 pt


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_qdq_calibrated_on_real_cityscapes_crops(exported, synth_small, real_data, tmp_path):
    model, paths = exported
    manifest = plan_crops(str(real_data / "cityscapes"), CropConfig(128, 256, count=16))
    out = tmp_path / "int8_real.onnx"
    quantize_qdq(paths[(128, 256)], out, manifest, QuantizeConfig())
    with OrtRunner(out) as candidate:
        result = compare(TorchRunner(model), candidate, open_dataset(str(synth_small), "cityscapes", "val"), progress=False)
    assert result.passed, result.failures


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_ort_range_cache_reused_until_the_crops_change(exported, synth_small, synth_manifest, tmp_path):
    _, paths = exported
    source = paths[(128, 256)]
    quantize_qdq(source, tmp_path / "a.onnx", synth_manifest, QuantizeConfig(), cache_dir=tmp_path / "cache")
    caches = sorted(p for p in os.listdir(tmp_path / "cache") if p.endswith(".json") and not p.endswith(".key.json"))
    assert len(caches) == 1
    stamp = os.stat(tmp_path / "cache" / caches[0]).st_mtime_ns
    quantize_qdq(source, tmp_path / "b.onnx", synth_manifest, QuantizeConfig(), cache_dir=tmp_path / "cache")
    assert os.stat(tmp_path / "cache" / caches[0]).st_mtime_ns == stamp  # reused, not recalibrated
    other = plan_crops(str(synth_small), CropConfig(128, 256, count=8, seed=9))
    quantize_qdq(source, tmp_path / "c.onnx", other, QuantizeConfig(), cache_dir=tmp_path / "cache")
    assert len([p for p in os.listdir(tmp_path / "cache") if p.endswith(".key.json")]) == 2


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_ranges_from_a_smaller_export_quantize_a_larger_one(exported, synth_small, synth_manifest, tmp_path):
    from sanet.export import ExportConfig, export_onnx
    from sanet.model import build_model

    model, paths = exported
    small_manifest = plan_crops(str(synth_small), CropConfig(96, 192, count=24))
    out = tmp_path / "int8_from_96x192.onnx"
    quantize_qdq(paths[(128, 256)], out, small_manifest, QuantizeConfig(ranges_from=str(paths[(96, 192)])),
                 cache_dir=tmp_path / "cache")
    meta = read_metadata(out)
    assert meta["sanet.resolution"] == "128x256" and meta["sanet.calibration_resolution"] == "96x192"
    assert meta["sanet.calibration_sha256"] == small_manifest["sha256"]
    with OrtRunner(out) as candidate:
        assert candidate.info.input_size == (128, 256)
        result = compare(TorchRunner(model), candidate, open_dataset(str(synth_small), "cityscapes", "val"), progress=False)
    assert result.passed and result.pixel_agreement < 1.0, result.failures
    with pytest.raises(SanetError, match="plan crops at the model's resolution"):  # crops must match ranges_from
        quantize_qdq(paths[(128, 256)], tmp_path / "x.onnx", synth_manifest, QuantizeConfig(ranges_from=str(paths[(96, 192)])))
    tiny = tmp_path / "tiny_96x192.onnx"  # other weights (and variant): refused from the metadata
    export_onnx(build_model("sanet-tiny", 19, aux_head=False).eval(), tiny, ExportConfig(96, 192), source_sha256="test")
    with pytest.raises(SanetError, match="not the same network"):
        quantize_qdq(paths[(128, 256)], tmp_path / "x.onnx", small_manifest, QuantizeConfig(ranges_from=str(tiny)))
    ranges = next(p for p in (tmp_path / "cache").iterdir() if p.suffix == ".json" and not p.name.endswith(".key.json"))
    data = json.loads(ranges.read_text())
    data["data"].pop(sorted(data["data"])[-1])  # a tensor the larger export needs is missing from the ranges
    ranges.write_text(json.dumps(data))
    with pytest.raises(SanetError, match="lack 1 tensors"):
        quantize_qdq(paths[(128, 256)], tmp_path / "x.onnx", small_manifest, QuantizeConfig(ranges_from=str(paths[(96, 192)])),
                     cache_dir=tmp_path / "cache")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_bad_quantization_requests(exported, synth_small, synth_manifest, tmp_path):
    _, paths = exported
    with pytest.raises(SanetError, match="no layers named"):
        quantize_qdq(paths[(128, 256)], tmp_path / "x.onnx", synth_manifest, QuantizeConfig(keep=("decoder",)))
    with pytest.raises(SanetError, match="plan crops at the model's resolution"):
        quantize_qdq(paths[(96, 192)], tmp_path / "x.onnx", synth_manifest, QuantizeConfig())
    with pytest.raises(SanetError, match="unknown calibration method"):
        QuantizeConfig(method="kl")
    assert not (tmp_path / "x.onnx").exists()


def float_convs(path):
    """Names of Conv nodes whose weight is a plain float initializer (not dequantized int8)."""
    graph = onnx.load(str(path)).graph
    initializers = {init.name for init in graph.initializer}
    return {node.name for node in graph.node if node.op_type == "Conv" and node.input[1] in initializers}


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_auto_fallback_moves_groups_in_order_until_parity_holds(exported, synth_small, synth_manifest, tmp_path):
    model, paths = exported
    val = open_dataset(str(synth_small), "cityscapes", "val")
    plain = tmp_path / "plain.onnx"
    quantize_qdq(paths[(128, 256)], plain, synth_manifest, QuantizeConfig(), cache_dir=tmp_path)
    with OrtRunner(plain) as candidate:
        baseline = compare(TorchRunner(model), candidate, val, progress=False).pixel_agreement
    # A budget the plain INT8 model misses, so the loop has to move layers back to float.
    budget = Budget(min_pixel_agreement=baseline + (1.0 - baseline) / 2)
    messages = []
    out = tmp_path / "auto.onnx"
    result, moved = quantize_with_fallback(paths[(128, 256)], out, synth_manifest, QuantizeConfig(), TorchRunner(model),
                                           val, budget=budget, cache_dir=tmp_path, report=messages.append)
    assert result.passed and result.pixel_agreement >= budget.min_pixel_agreement
    assert moved and moved == list(FALLBACK_ORDER[:len(moved)])
    assert len(messages) == len(moved) + 1 and "FAIL" in messages[0] and "PASS" in messages[-1]
    assert read_metadata(out)["sanet.float_groups"] == ",".join(moved)
    kept = float_convs(out)
    for group in moved:
        prefix = "/model/{}/".format(group.replace(".", "/"))
        assert any(name.startswith(prefix) for name in kept), group
    if "resnet.layer1" not in moved:
        assert not any(name.startswith("/model/resnet/layer1/") for name in kept)  # the rest stays INT8


def test_image_discovery_walks_folders_but_skips_label_folders(tmp_path):
    frame = np.zeros((40, 40, 3), np.uint8)
    for folder in ("seq1", "seq2/deeper", "gtFine/val", "trainannot", "labels", "label_maps", "GT"):
        (tmp_path / folder).mkdir(parents=True)
        write_png(str(tmp_path / folder / "x.png"), frame)
    assert find_calibration_images(tmp_path) == [os.path.join("seq1", "x.png"), os.path.join("seq2", "deeper", "x.png")]


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_streamed_ranges_match_onnx_runtimes_calibrator(synth_small, tmp_path, ort):
    """Several graph segments, one crop at a time: the same ranges ONNX Runtime's MinMax calibrator finds
    holding everything, and the same histograms as its entropy calibrator fed crop by crop."""
    import torch
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    from sanet.export import ExportConfig, export_onnx
    from sanet.model import build_model
    from sanet.runners import RunnerInfo

    torch.manual_seed(0)
    source = str(tmp_path / "random.onnx")
    export_onnx(build_model("sanet", 19, aux_head=False), source, ExportConfig(64, 128))
    info = RunnerInfo.from_metadata(read_metadata(source), "onnxruntime", "cpu")
    manifest = plan_crops(str(synth_small), CropConfig(64, 128, count=3))
    batches = [info.preprocess.to_input(images) for images in iter_batches(manifest, 1)]
    segments = graph_segments(onnx.load(source), set(), budget=1 << 20)
    assert len(segments) > 5 and segments[-1][2] == ["logits"]
    for method, ort_method in (("minmax", CalibrationMethod.MinMax), ("entropy", CalibrationMethod.Entropy)):
        ours = collect_ranges(source, iter(batches), method, budget=1 << 20)
        calibrator = create_calibrator(source, None, augmented_model_path=str(tmp_path / "augmented.onnx"),
                                       calibrate_method=ort_method)
        for batch in batches:
            calibrator.collect_data(_OneBatch(batch))
        theirs = calibrator.compute_data()
        assert set(ours.keys()) == set(theirs.keys()) and len(theirs.keys()) > 100
        for name in theirs.keys():
            got = [float(np.ravel(v)[0]) for v in ours[name].range_value]
            want = [float(np.ravel(v)[0]) for v in theirs[name].range_value]
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4), (method, name)


class _OneBatch:
    """ONNX Runtime's CalibrationDataReader protocol over a single input batch."""

    def __init__(self, batch):
        self.batch = batch

    def get_next(self):
        batch, self.batch = self.batch, None
        return None if batch is None else {"images": batch}


@pytest.mark.recent_ort  # quantize_qdq hands ranges to quantize_static(calibration_cache_path=...): not in ORT 1.16
def test_export_calibrates_once_with_calib_res(synth_small, tmp_path, sanet_cli):
    def export(*argv):
        return sanet_cli("export", "--random-init", "--res", "64", "128", "--res", "96", "192", "--qdq", "--calib",
                         synth_small, "--calib-count", "4", *argv)

    out = tmp_path / "exports"
    result = export("--calib-res", "64", "128", "-o", out)
    assert result.returncode == 0 and result.stdout.count("calibration: 4 crops") == 1  # one set of crops, at 64x128
    for size in ("64x128", "96x192"):
        meta = read_metadata(out / "sanet_{}_b1_int8_qdq.onnx".format(size))
        assert meta["sanet.resolution"] == size and meta["sanet.calibration_resolution"] == "64x128"
    result = export("--calib-res", "100", "100", "-o", tmp_path / "bad")
    assert result.returncode == 1 and "multiples of 8" in result.stderr and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------
# TensorRT 8.5's classic calibrators, emulated


def brute_force_divergences(hist, levels):
    """Migacz's entropy calibration written out literally, one candidate at a time (the reference for the
    vectorised search): P = the first i bins with the tail folded into the last, Q = those bins merged into
    ``levels`` groups and spread back over each group's non-empty bins, KL(P || Q) of the normalised pair."""
    divergences = []
    for i in range(levels, len(hist) + 1):
        p = [float(v) for v in hist[:i]]
        p[-1] += float(sum(hist[i:]))
        q = [0.0] * i
        for group in range(levels):
            members = [j for j in range(i) if j * levels // i == group]
            filled = [j for j in members if hist[j] > 0]
            for j in filled:
                q[j] = sum(float(hist[m]) for m in members) / len(filled)
        p_total, q_total, kl = sum(p), sum(q), 0.0
        for pj, qj in zip(p, q):
            if pj > 0:
                kl = kl + pj / p_total * math.log((pj / p_total) / (qj / q_total)) if qj > 0 else math.inf
        divergences.append(kl)
    return np.array(divergences)


def test_entropy_calibrator_agrees_with_a_brute_force_kl_search():
    rng = np.random.default_rng(0)
    hist = np.round(2000 * np.exp(-np.arange(300) / 20.0)).astype(np.int64)  # a decaying |x| histogram ...
    hist[rng.random(300) < 0.15] = 0  # ... with empty bins
    hist[[260, 285, 299]] = [3, 1, 2]  # and a sparse far tail
    hist[0] = 0
    ours, reference = entropy_divergences(hist, levels=64), brute_force_divergences(hist, levels=64)
    assert ours.shape == reference.shape == (300 - 64 + 1,)
    finite = np.isfinite(reference)
    assert np.array_equal(np.isfinite(ours), finite) and not finite.all() and finite.sum() > 50
    assert ours[finite] == pytest.approx(reference[finite], abs=1e-12)
    assert np.argmin(ours) == np.argmin(reference) and 64 + np.argmin(ours) < 260  # the tail is clipped


def test_streamed_histogram_entropy_and_minmax_ranges():
    rng = np.random.default_rng(1)
    values = rng.laplace(size=400_000).astype(np.float32)
    values[:10] = 60.0  # outliers that min-max keeps and entropy clips
    once, streamed = AbsHistogram(), AbsHistogram()
    once.add(values)
    streamed.add(values[10:] / 3)  # a first batch with a smaller range: later batches double the bin count ...
    streamed.add(values[:10])
    assert once.amax == streamed.amax == 60.0  # min-max: max |x| over every batch
    assert len(streamed.counts) > HISTOGRAM_BINS and len(streamed.counts) % HISTOGRAM_BINS == 0
    assert streamed.counts.sum() == once.counts.sum() == len(values)  # ... keeping every count
    assert streamed.width == pytest.approx(np.abs(values[10:] / 3).max() / HISTOGRAM_BINS)
    assert 3.0 < once.entropy_amax() < 20.0 and 3.0 < streamed.entropy_amax() < 20.0  # Laplace(1): clipped well below 60
    relu = AbsHistogram()
    relu.add(np.maximum(values, 0))
    assert 0 < relu.entropy_amax() < relu.amax  # bin 0 (the ReLU zeros) is discarded, the rest decides
    assert AbsHistogram().entropy_amax() == 0.0
    capped = AbsHistogram()  # a first batch of near zeros: the range grows 10^7 x, the bins stop at MAX_BINS
    capped.add(np.float32([1e-6, 0.0]))
    capped.add(values)
    assert len(capped.counts) == MAX_BINS and capped.counts.sum() == len(values) + 2 and capped.amax == 60.0


def _producers(graph):
    return {name: node for node in graph.node for name in node.output}


def test_classic_emulation_puts_qdq_where_tensorrt_runs_int8(exported, tmp_path):
    model, paths = exported
    proto = onnx.load(str(paths[(96, 192)]))
    plan = classic_plan(proto)
    ranges = {name: 4.0 + index for index, name in enumerate(plan.activations)}
    emulated = classic_model(proto, plan, ranges)
    graph = emulated.graph
    producers, initializers = _producers(graph), {init.name: init for init in graph.initializer}

    def scale_of(dequantized):
        return float(onnx.numpy_helper.to_array(initializers[producers[dequantized].input[1]]))

    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == len(plan.weights) == sum(node.op_type == "Conv" for node in proto.graph.node)
    source = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    for conv in convs:
        weight = producers[conv.input[1]]  # per-output-channel int8 weights, scale max |w| / 127
        assert weight.op_type == "DequantizeLinear" and initializers[weight.input[0]].data_type == onnx.TensorProto.INT8
        scales = onnx.numpy_helper.to_array(initializers[weight.input[1]])
        original = source[conv.input[1]]
        assert scales == pytest.approx(np.abs(original.reshape(len(original), -1)).max(axis=1) / 127, rel=1e-6)
        data = producers[conv.input[0]]  # the data input is read in int8 with its calibrated scale
        assert data.op_type == "DequantizeLinear" and producers[data.input[0]].op_type == "QuantizeLinear"
        name = producers[data.input[0]].input[0]
        assert scale_of(conv.input[0]) == pytest.approx(ranges[plan.pooled.get(name, name)] / 127, rel=1e-6)
        if len(conv.input) > 2:
            assert initializers[conv.input[2]].data_type == onnx.TensorProto.FLOAT  # bias stays float
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    residual = [node for node in graph.node if node.op_type == "Add" and "/resnet/" in node.name]
    assert len(residual) == 8  # one per BasicBlock: the add fuses into conv2, its other input is read in int8
    for add in residual:
        kinds = sorted(producers[name].op_type for name in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], add.name
        conv_output = next(name for name in add.input if producers[name].op_type == "Conv")
        assert "conv2" in producers[conv_output].name and conv_output in plan.fused
    pool = next(node for node in graph.node if node.op_type == "MaxPool")  # int8 in and out, one range
    assert producers[pool.input[0]].op_type == "DequantizeLinear"
    assert [reader.op_type for reader in readers[pool.output[0]]] == ["QuantizeLinear"]
    assert scale_of(pool.input[0]) == pytest.approx(scale_of(pool.output[0] + "_dequantized"))
    for node in graph.node:  # float layers read float constants; the logits are not quantized
        if node.op_type in ("MatMul", "Resize", "Sigmoid"):
            assert all(producers.get(name) is None or producers[name].op_type != "DequantizeLinear"
                       or name.replace("_dequantized", "") in plan.activations for name in node.input)
    assert producers["logits"].op_type == "DepthToSpace"
    assert producers[producers["logits"].input[0]].op_type == "Conv"
    kept = classic_model(proto, classic_plan(proto, keep=("sff2.conv_2",)), ranges)
    float_convs = [node.name for node in kept.graph.node if node.op_type == "Conv"
                   and node.input[1] not in _producers(kept.graph)]
    assert float_convs == ["/model/sff2/conv_2/Conv"]
    with pytest.raises(SanetError, match="no layers named"):
        classic_plan(proto, keep=("decoder",))
    path = tmp_path / "classic.onnx"
    onnx.save(emulated, str(path))
    import onnxruntime

    logits = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": np.zeros((1, 3, 96, 192), np.float32)})[0]
    assert logits.shape == (1, 19, 96, 192) and np.isfinite(logits).all()


REAL_SIZE = (120, 160)  # CamVid's 360x480 frames at a third: small enough for CI, large enough for SCE's grids


@pytest.fixture(scope="module")
def camvid_fp32(shipped_camvid, camvid, tmp_path_factory, ort):
    from sanet.checkpoints import load_model
    from sanet.export import ExportConfig, export_onnx

    model = load_model(shipped_camvid)
    path = tmp_path_factory.mktemp("classic") / "camvid_fp32.onnx"
    export_onnx(model, path, ExportConfig(*REAL_SIZE), source_sha256="camvid")
    return model, path


def test_classic_emulation_of_the_real_model_agrees_with_pytorch_on_real_frames(camvid_fp32, camvid, tmp_path):
    from sanet.numerics import EmulatedRunner

    model, source = camvid_fp32
    manifest = plan_crops(str(camvid / "train"), CropConfig(*REAL_SIZE, count=8))
    val = open_dataset(str(camvid), "camvid", "val")
    reference = MemoRunner(TorchRunner(model))
    cache = source.parent / "calibration-cache"  # where sanet-parity --emulate int8-classic looks (test below)
    for method in ("entropy", "minmax"):
        messages = []
        out = classic_qdq(source, tmp_path / "{}.onnx".format(method), manifest, method, cache_dir=cache,
                          report=messages.append)
        meta = read_metadata(out)
        assert meta["sanet.quantization"] == "classic-emulation" and meta["sanet.calibration_method"] == method
        # one streamed calibration gives both calibrators' ranges: the second method reads the cache
        assert sum("classic calibration: crop batch" in m for m in messages) == (8 if method == "entropy" else 0)
        with EmulatedRunner(out, "int8") as candidate:
            result = compare(reference, candidate, val, limit=3, progress=False)
        # Quantized for real, yet the real model's class maps survive it; a broken scale or placement would not.
        assert 0.95 <= result.pixel_agreement < 1.0, (method, result.to_dict())
        assert result.miou_reference > 0.3 and abs(result.delta_miou) < 0.02, (method, result.to_dict())


def test_parity_cli_emulates_the_classic_route(camvid_fp32, camvid, shipped_camvid, sanet_cli):
    _, source = camvid_fp32
    common = ("parity", shipped_camvid, "--onnx", source, "--data", camvid, "--dataset", "camvid", "--limit", "3")
    result = sanet_cli(*common, "--emulate", "int8-classic", "--calib", camvid / "train", "--calib-count", "8")
    written = source.parent / "camvid_fp32_int8_classic_minmax.onnx"  # constants.CLASSIC_CALIBRATOR
    assert result.returncode == 0, result.stdout + result.stderr
    assert "classic INT8 emulation written: {}".format(written) in result.stdout and "PASS" in result.stdout
    assert read_metadata(written)["sanet.calibration_method"] == "minmax"
    result = sanet_cli(*common, "--emulate", "int8-classic")
    assert result.returncode == 1 and "add --calib DIR" in result.stderr
    result = sanet_cli(*common, "--calib", camvid / "train")
    assert result.returncode == 1 and "are for --emulate int8-classic" in result.stderr
