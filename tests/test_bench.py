"""sanet-bench on CPU at reduced sizes: timing statistics and protocol, interleaved rounds, the end-to-end >=
compute invariant, reports and plots, parity verdicts, skip messages, the default model and the GPU check."""
import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sanet import bench, benchreport, checkpoints
from sanet.checkpoints import load_model
from sanet.errors import SanetError
from sanet.export import ExportConfig, export_onnx
from sanet.model import build_model
from sanet.parity import BUDGETS, DELTA_MIOU_MIN_IMAGES

# No CPU cap: every row gets its 4 iterations however busy the host is (the cap has its own test)
QUICK = ["--res", "64", "128", "--res", "96", "192", "--iterations", "4", "--rounds", "2", "--warmup-seconds", "0.1",
         "--cpu-max-seconds", "0"]


def has_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def has_openvino():
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def run_cli(module, *argv, env=None):
    return subprocess.run([sys.executable, "-m", *module, *argv], capture_output=True, text=True, env=env, timeout=600)


def bench_cli(*argv, env=None):
    return run_cli(["sanet.cli", "bench"], *argv, env=env)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, ort):
    out = tmp_path_factory.mktemp("bench")
    result = bench_cli(*QUICK, "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out, result, json.loads((out / "bench.json").read_text())


def test_latency_stats_match_hand_computed_values():
    stats = bench.latency_stats([10.0, 20.0, 30.0, 40.0])
    assert stats["mean_ms"] == 25.0 and stats["fps"] == 40.0
    assert stats["p50_ms"] == pytest.approx(25.0) and stats["p90_ms"] == pytest.approx(37.0)
    assert stats["p99_ms"] == pytest.approx(39.7)
    assert stats["cv"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1) / 25.0)
    assert bench.latency_stats([5.0])["cv"] == 0.0 and bench.latency_stats([5.0, 5.0])["cv"] == 0.0
    assert bench.latency_stats([500.0, 1000.0, 510.0])["fps"] == pytest.approx(1000.0 / 510.0)  # one burst: median holds


def test_visit_order_interleaves_rounds():
    order = bench.visit_order(4, 3)
    assert len(order) == 12
    for round_index in range(3):
        visited = [row for r, row in order if r == round_index]
        assert sorted(visited) == [0, 1, 2, 3]  # every row once per round
    assert [row for r, row in order if r == 1] == [0, 1, 2, 3]  # the same order: a row's visits are a round apart
    assert [r for r, _ in order] == sorted(r for r, _ in order)  # a round ends before the next begins


def test_timed_iteration_yields_uint8_class_map_and_e2e_covers_compute(exported):
    from sanet.runners import OrtRunner

    model, paths = exported
    frame = np.random.default_rng(1).integers(0, 256, size=(1, 128, 256, 3), dtype=np.uint8)
    with OrtRunner(paths[(128, 256)]) as runner:
        runner.stage(runner.prepare(frame))
        runner.execute()
        class_map = runner.fetch(class_map=True)
        expected = runner.predict(frame)[0]
        clock = bench.clock_of(runner)
        samples = [bench.time_iteration(runner, clock, frame) for _ in range(3)]
    assert class_map.dtype == np.uint8 and class_map.shape == (1, 128, 256)
    np.testing.assert_array_equal(class_map, expected)
    for e2e, h2d, compute, d2h in samples:
        assert e2e >= compute + h2d + d2h > 0


def test_cpu_rows_stop_at_their_time_cap_and_say_so(exported):
    from sanet.runners import OrtRunner

    _, paths = exported
    frame = np.zeros((1, 128, 256, 3), np.uint8)
    with OrtRunner(paths[(128, 256)]) as runner:
        capped, _, _ = bench.time_visit(runner, frame, bench.BenchConfig(warmup_seconds=0, iterations=1000, rounds=2,
                                                                         cpu_max_seconds=1e-6))
        full, _, _ = bench.time_visit(runner, frame, bench.BenchConfig(warmup_seconds=0, iterations=6, rounds=2,
                                                                       cpu_max_seconds=0))
    assert len(capped) == 1 and len(full) == 3  # the cap keeps one iteration per visit; 0 lifts it
    with OrtRunner(paths[(128, 256)]) as runner:
        floored, _, _ = bench.time_visit(runner, frame, bench.BenchConfig(warmup_seconds=0, cpu_max_seconds=1e-6), floor=2)
    assert len(floored) == 2  # a visit's floor holds past the cap
    three = bench.BenchConfig(min_samples=3, rounds=2)
    assert [bench.visit_floor(three, 0, 0), bench.visit_floor(three, 1, 2)] == [2, 1]  # 3 samples over 2 rounds
    default = bench.BenchConfig()  # the default: one sample per visit over three rounds, each a round apart
    assert (default.min_samples, default.rounds) == (3, 3) and [bench.visit_floor(default, r, r) for r in range(3)] == [1, 1, 1]
    assert bench.visit_floor(three, 1, 5) == 1 and bench.visit_floor(bench.BenchConfig(min_samples=3, iterations=2,
                                                                                       rounds=1), 0, 0) == 2

    class Counting(OrtRunner):
        executed = 0

        def execute(self):
            self.executed += 1
            super().execute()

    config = bench.BenchConfig(warmup_seconds=60, iterations=2, rounds=1)
    with Counting(paths[(128, 256)]) as runner:
        bench.time_visit(runner, frame, config, warm_since=time.perf_counter() - 60)
    assert runner.executed == 2  # warm for 60 s already (the parity check ran): no warm-up iteration
    row = benchreport.Row("128x256", "r", "onnxruntime", "cpu", "fp32", iterations=2, capped=True)
    assert benchreport.table_rows([row])[0][2] == "2 (cap)"


def test_every_visit_activates_once_and_a_new_activation_warms_up(exported, synth_small, tmp_path, monkeypatch):
    """Two rows, two rounds: each visit activates its runner (one activated runner at a time) and closes it, except
    the PyTorch CPU one, which keeps warm; the first visit's parity inference is its warm-up, a second activation
    warms up for at least one iteration; the PyTorch CPU FP32 row runs the reference maps itself."""
    from sanet.data import open_dataset
    from sanet.runners import OrtRunner, TorchRunner

    model, _ = exported
    activations, executions, runners = [], [], []
    for cls in (OrtRunner, TorchRunner):
        def activate(self, original=cls.activate):
            activations.append(type(self).__name__)
            runners.append(self)
            assert sum(r.active and not r.keeps_warm for r in set(runners)) == 0, "another runner is still activated"
            assert all(r.outputs is None for r in runners if r.active), "a runner kept warm holds its last logits"
            return original(self)

        def execute(self, original=cls.execute):
            executions.append(type(self).__name__)
            return original(self)

        monkeypatch.setattr(cls, "activate", activate)
        monkeypatch.setattr(cls, "execute", execute)
    config = bench.BenchConfig(resolutions=[(64, 128)], backends=("pytorch", "onnxruntime"), precisions=("fp32",),
                               warmup_seconds=0.0, iterations=2, rounds=2, parity_images=1, out=str(tmp_path))
    rows, _ = bench.run_bench(model, config, open_dataset(str(synth_small), "cityscapes", "val"), report=lambda _: None)
    assert [r.runner for r in rows] == ["pytorch-cpu-fp32", "onnxruntime-cpu-fp32"] and all(r.iterations == 2 for r in rows)
    # PyTorch is the reference itself: its first visit makes the reference maps, no separate activation for them; on
    # the CPU it keeps warm, activated once for both rounds
    assert activations.count("TorchRunner") == 1 and activations.count("OrtRunner") == 2
    assert not any(r.active for r in runners)  # all closed at the end
    # ONNX Runtime: the parity inference (the warm-up) + 1 timed, then 1 warm-up + 1 timed after its second activation
    assert executions.count("OrtRunner") == 4
    assert executions.count("TorchRunner") == 3  # parity + 1 timed, then 1 timed: still warm from its first visit


def test_compare_marks_rows_that_moved(default_run, tmp_path):
    out, _, data = default_run
    before = benchreport.read_runs(str(out / "bench.json"))
    rows = [benchreport.Row(**{k: v for k, v in r.items()}) for r in data["rows"]]
    rows[0].fps, rows[0].e2e_fps = rows[0].fps * 1.30, rows[0].e2e_fps * 1.05  # one row 30 % faster now
    table, summary = benchreport.compare_runs(rows, before)
    assert len(table) == len(rows) and summary.startswith("1 of {} row(s) moved".format(len(rows)))
    assert summary.endswith("the median row's FPS changed by +0.0 % (the host's drift between the runs)")
    slower = [benchreport.Row(**dict(r, fps=r["fps"] * 0.9)) for r in data["rows"]]  # the whole host 10 % slower
    summary = benchreport.compare_runs(slower, before)[1]
    assert summary.startswith("0 of") and "changed by -10.0 %" in summary
    assert table[0][4] == "+30.0 moved" and table[0][7] == "+5.0" and table[1][4] == "+0.0"
    (tmp_path / "bad.json").write_text("{\"rows\": 3}")
    with pytest.raises(SanetError, match="cannot read an earlier bench.json"):
        benchreport.read_runs(str(tmp_path / "bad.json"))


def test_compare_pairs_rows_by_a_key_that_cannot_collide(tmp_path):
    """--compare pairs by Row.key (resolution/runner, where an extra file's runner names the file); an older run that
    holds one (resolution, runner) twice (extra rows under built-in labels) pairs neither of them."""
    def row(runner, fps):
        return benchreport.Row("64x128", runner, "onnxruntime", "cpu", "fp32", fps=fps, e2e_fps=fps / 2)

    old = [row("onnxruntime-cpu-fp32", 10.0), row("openvino-cpu-fp32", 20.0), row("openvino-cpu-fp32", 5.0)]
    old_rows = [{k: v for k, v in json.loads(json.dumps(r.__dict__)).items() if k != "key"} for r in old]  # pre-key files
    (tmp_path / "old.json").write_text(json.dumps({"rows": old_rows}))
    before = benchreport.read_runs(str(tmp_path / "old.json"))
    assert set(before) == {"64x128/onnxruntime-cpu-fp32"}  # the doubled key pairs with nothing
    now = [row("onnxruntime-cpu-fp32", 11.0), row("onnxruntime-cpu-fp32 [mine.onnx]", 99.0), row("openvino-cpu-fp32", 20.0)]
    table, summary = benchreport.compare_runs(now, before)
    assert [t[1] for t in table] == ["onnxruntime-cpu-fp32"] and table[0][4] == "+10.0"
    assert summary.startswith("0 of 1 row(s)")


def test_copy_columns_are_medians_like_fps():
    """One slow copy among three (a shared host's burst) moves neither FPS nor the H2D/D2H columns."""
    row = benchreport.Row("64x128", "r", "onnxruntime", "cpu", "fp32")
    samples = [(12.0, 1.0, 10.0, 0.5), (80.0, 60.0, 10.0, 9.0), (12.5, 1.2, 11.0, 0.6)]  # (e2e, h2d, compute, d2h)
    bench.summarize(row, samples, [samples])
    assert (row.h2d_p50_ms, row.d2h_p50_ms, row.fps) == (1.2, 0.6, 100.0)
    assert row.e2e_p50_ms == 12.5 and row.mean_ms == pytest.approx(31.0 / 3)


def test_extra_files_run_at_their_own_size_under_their_own_label(exported, tmp_path, sanet_cli):
    """An --onnx file whose size is not in --res gets its own row at its size (with a note), under a label naming the
    file, next to the built-in row of the same backend; the same file given twice is one row."""
    _, paths = exported
    extra = str(paths[(96, 192)])
    result = sanet_cli("bench", "--res", "64", "128", "--backends", "onnxruntime", "--precisions", "fp32", "--onnx", extra,
                       extra, "--iterations", "2", "--rounds", "1", "--warmup-seconds", "0", "--parity-images", "1",
                       "-o", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    rows = {r["key"]: r for r in json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]}
    assert set(rows) == {"64x128/onnxruntime-cpu-fp32", "96x192/onnxruntime-cpu-fp32 [{}]".format(extra)}
    assert all(r["verdict"] == "PASS" and r["iterations"] == 2 for r in rows.values())
    assert "note: {} is 96x192, not in --res: its row runs at that size".format(extra) in result.stdout
    assert "skipped: {}: given twice, run once".format(extra) in result.stdout


def test_torch2trt_route_names_what_to_install(exported):
    import importlib.util

    from sanet.engines import Torch2trtRunner

    if importlib.util.find_spec("torch2trt") is not None:
        pytest.skip("torch2trt is installed here")
    with pytest.raises(SanetError, match="NVIDIA-AI-IOT/torch2trt"):
        Torch2trtRunner(exported[0], (128, 256), "fp16")
    with pytest.raises(SanetError, match="fp32 or fp16"):
        Torch2trtRunner(exported[0], (128, 256), "int8")


def test_default_run_reports_protocol_and_consistent_rows(default_run):
    out, _, data = default_run
    assert data["protocol"] == json.loads(json.dumps(benchreport.PROTOCOL))
    assert {"compute", "end_to_end", "h2d", "d2h", "warmup", "rounds", "statistics", "power", "parity", "rows"} <= set(data["protocol"])
    keys = [r["key"] for r in data["rows"]]
    assert len(set(keys)) == len(keys) and all(r["key"] == "{}/{}".format(r["resolution"], r["runner"]) for r in data["rows"])
    rows = [r for r in data["rows"] if r["device"] == "cpu"]  # a GPU host adds its own rows; these are the CPU ones
    runners = ["pytorch-cpu-fp32", "onnxruntime-cpu-fp32", "onnxruntime-cpu-int8"]
    if has_openvino():  # the same ONNX and Q/DQ files; bf16 only where the CPU has it natively
        from sanet.runners import openvino_bf16

        runners += ["openvino-cpu-fp32", "openvino-cpu-int8"] + (["openvino-cpu-bf16"] if openvino_bf16() else [])
    assert {(r["resolution"], r["runner"]) for r in rows} == {(res, run) for res in ("64x128", "96x192") for run in runners}
    for row in rows:
        assert row["iterations"] >= 4 and len(row["round_fps"]) == 2 and not row["capped"]
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["fps"] == pytest.approx(1000.0 / row["p50_ms"])  # the median: robust to one burst in three
        assert row["unstable"] == (row["cv"] > benchreport.UNSTABLE_CV)
        assert not row["copies_in_compute"]  # CPU rows: nothing to copy
        assert 0 <= row["h2d_p50_ms"] <= row["e2e_p50_ms"] and 0 < row["d2h_p50_ms"] <= row["e2e_p50_ms"]
        # The invariant of the protocol: end-to-end contains compute, so it is never faster.
        assert row["e2e_mean_ms"] >= row["mean_ms"] and row["e2e_p50_ms"] >= row["p50_ms"] and row["e2e_fps"] <= row["fps"]
    assert data["settings"]["calib_count"] == bench.BenchConfig.calib_count and data["settings"]["rounds"] == 2
    assert data["host"]["cpu_count"] and data["host"]["torch"] == torch.__version__
    with open(out / "bench.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(data["rows"])
    markdown = (out / "bench.md").read_text()
    assert markdown.count("\n|") == len(data["rows"]) + 2 and "CV" in markdown  # header, separator, rows


def test_every_budget_is_judged_on_labelled_frames_and_the_reference_says_so(default_run):
    """The default run (shipped checkpoint, generated labelled scenes) judges every row on DELTA_MIOU_MIN_IMAGES frames,
    so the |delta mIoU| budgets (INT8's among them) are applied: no row carries a "not judged" note. The PyTorch CPU
    FP32 row is the reference: its mIoU against the labels, no agreement with itself, no PASS."""
    _, result, data = default_run
    assert data["settings"]["parity_images"] == DELTA_MIOU_MIN_IMAGES and data["settings"]["checkpoint"].endswith(
        "sanet_synth.safetensors")
    rows = [r for r in data["rows"] if r["device"] == "cpu"]
    for reference in [r for r in rows if r["runner"] == "pytorch-cpu-fp32"]:
        assert reference["verdict"] == benchreport.REFERENCE and reference["miou"] > 0.2
        assert reference["agreement_miou"] is None and reference["pixel_agreement"] is None and reference["delta_miou"] is None
    assert "| reference |" in (default_run[0] / "bench.md").read_text() and "reference" in result.stdout
    for row in [r for r in rows if r["runner"] != "pytorch-cpu-fp32"]:
        budget = BUDGETS[row["precision"]]
        assert row["parity_images"] == DELTA_MIOU_MIN_IMAGES and row["parity_notes"] == [] and row["delta_miou"] is not None
        below = row["pixel_agreement"] < budget.min_pixel_agreement
        over = abs(row["delta_miou"]) > budget.max_delta_miou
        assert row["verdict"] == ("FAIL" if below or over else "PASS"), row
        assert any("pixel agreement" in f for f in row["failures"]) == below
        assert any("delta mIoU" in f for f in row["failures"]) == over
        if row["precision"] == "int8":
            assert row["pixel_agreement"] < 1.0  # INT8 really differs from FP32


def test_plots_are_written_and_readable(default_run):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    out, _, _ = default_run
    for name in ("fps_vs_resolution.png", "fps_vs_miou.png"):
        pixels = matplotlib.image.imread(str(out / name))
        assert pixels.shape[0] >= 400 and pixels.shape[1] >= 700, name
        assert pixels[..., :3].std() > 0.05, name  # not a blank canvas


def test_progress_names_every_step(default_run):
    out, result, data = default_run
    assert "exporting" in result.stdout and "quantizing" in result.stdout
    # Calibrated once, at the smallest resolution; 96x192 reuses its ranges.
    assert result.stdout.count("calibration: {} crops".format(bench.BenchConfig.calib_count)) == 1
    from sanet.export import read_metadata

    for path in (out / "artifacts").glob("*_qdq.onnx"):
        assert read_metadata(path)["sanet.calibration_resolution"] == "64x128", path
    visits = [line for line in result.stdout.splitlines() if "] round " in line]
    assert len(visits) == 2 * len(data["rows"]) and visits[0].startswith("[1/{}]".format(len(visits)))


def test_skip_messages_name_the_missing_package(default_run):
    _, result, _ = default_run
    if has_tensorrt():
        pytest.skip("TensorRT is installed here: its rows run instead of being skipped")
    assert "skipped: tensorrt engines fp16/int8: tensorrt is not installed (JetPack ships it" in result.stdout
    assert "skipped: torch2trt rows: torch2trt is not installed (build it from NVIDIA-AI-IOT/torch2trt" in result.stdout
    if not torch.cuda.is_available():
        assert "skipped: pytorch cuda fp32/fp16: no CUDA device" in result.stdout
    if not has_openvino():
        assert "skipped: openvino rows: openvino is not installed (pip install 'sanet[openvino]')" in result.stdout


def test_missing_onnxruntime_is_skipped_with_install_hint(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = bench_cli("--res", "64", "128", "--backends", "pytorch", "onnxruntime", "--iterations", "2", "--rounds", "1",
                       "--warmup-seconds", "0", "--parity-images", "1", "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime is not installed (pip install 'sanet[onnx]')" in result.stdout


def test_wrong_backend_row_fails_and_strict_exits_nonzero(shipped, tmp_path):
    best = shipped
    model = load_model(best)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in wrong.named_parameters():
            if name.startswith("conv_out32"):
                param.mul_(-1.0)  # flips the classifier: a really wrong backend
    bad = tmp_path / "wrong.onnx"
    export_onnx(wrong, bad, ExportConfig(64, 128))
    common = ["--checkpoint", str(best), "--res", "64", "128", "--backends", "pytorch", "--onnx", str(bad),
              "--iterations", "2", "--rounds", "1", "--warmup-seconds", "0", "--parity-images", "2", "-o", str(tmp_path / "o")]
    lenient = bench_cli(*common)
    assert lenient.returncode == 0, lenient.stderr
    rows = {r["runner"]: r for r in json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]}
    extra = "onnxruntime-cpu-fp32 [{}]".format(bad)  # an extra file's row names the file: never a built-in label
    assert set(rows) == {"pytorch-cpu-fp32", extra}
    assert rows["pytorch-cpu-fp32"]["verdict"] == benchreport.REFERENCE and rows[extra]["verdict"] == "FAIL"
    strict = bench_cli(*common, "--strict")
    assert strict.returncode == 1 and "failed parity" in strict.stderr


def test_trained_int8_row_holds_its_budget(shipped, synth_small, tmp_path):
    result = bench_cli("--checkpoint", shipped, "--data", str(synth_small), "--res", "128", "256", "--backends",
                       "onnxruntime", "--precisions", "fp32", "int8", "--iterations", "2", "--rounds", "1",
                       "--warmup-seconds", "0", "--parity-images", "6", "--calib-count", "24", "--strict", "-o", str(tmp_path / "o"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["runner"]: r for r in json.loads((tmp_path / "o" / "bench.json").read_text())["rows"] if r["device"] == "cpu"}
    assert set(rows) == {"onnxruntime-cpu-fp32", "onnxruntime-cpu-int8"}
    int8 = rows["onnxruntime-cpu-int8"]
    assert int8["verdict"] == "PASS" and abs(int8["delta_miou"]) <= 0.01


def test_bad_input_is_one_line(tmp_path, sanet_cli):
    for argv, message in ((["--backends", "cuda-magic"], "invalid choice"),
                          (["--onnx", str(tmp_path / "missing.onnx")], "not found"),
                          (["--engine", str(tmp_path / "missing.plan")], "not found"),
                          (["--data", str(tmp_path / "nowhere")], "dataset root not found"),
                          (["--res", "100", "100"], "multiples of 8"),
                          (["--rounds", "0"], "--rounds must be at least 1"),
                          (["--compare", str(tmp_path / "missing.json")], "cannot read an earlier bench.json")):
        result = sanet_cli("bench", *argv, "-o", tmp_path / "o")
        assert result.returncode in (1, 2) and message in result.stderr, argv


def test_flags_compose_into_a_config():
    parser = bench.add_arguments(argparse.ArgumentParser())
    for flag in ("--warmup-seconds", "--iterations", "--seconds", "--rounds"):
        assert "default" in next(a.help for a in parser._actions if flag in a.option_strings), flag
    config = bench.config_from_args(parser.parse_args(["--rounds", "3", "--seconds", "2.5", "--precisions", "fp32"]))
    assert (config.rounds, config.seconds, config.precisions) == (3, 2.5, ("fp32",))
    assert config.resolutions == list(bench.BENCH_RESOLUTIONS) and config.iterations == 20
    for flag in ("--seconds", "--cpu-max-seconds"):
        with pytest.raises(SanetError, match="--cpu-max-seconds must be >= 0"):
            bench.config_from_args(parser.parse_args([flag, "-1"]))
    assert bench.config_from_args(parser.parse_args(["--cpu-max-seconds", "0"])).cpu_max_seconds == 0


def test_reference_maps_are_filled_before_candidates_and_closed(synth_small):
    import cv2

    from sanet.data import open_dataset
    from sanet.parity import MemoRunner
    from sanet.runners import TorchRunner

    model = bench.resolve_model(None, report=lambda _: None)[0]
    dataset = open_dataset(str(synth_small), "cityscapes", "val")
    reference = MemoRunner(TorchRunner(model, "cpu", "fp32"))
    bench.fill_reference(reference, dataset, (64, 128), 4)
    assert len(reference.cache) == 4 and not reference.runner.active  # closed again: one activated runner at a time
    assert all(m.dtype == np.uint8 and m.shape == (1, 64, 128) for m in reference.cache.values())
    image = dataset.load(0)[0]
    resized = cv2.resize(image, (128, 64), interpolation=cv2.INTER_LINEAR)[None]
    class_map, logits = reference.predict(resized)  # what compare asks for: a cache hit, no activation
    assert logits is None and not reference.runner.active and class_map.shape == (1, 64, 128)


def test_default_model_is_the_shipped_checkpoint_when_present(tmp_path, monkeypatch):
    best = tmp_path / "other.safetensors"  # not the real shipped weights, so loading them is visible
    checkpoints.save_checkpoint(best, build_model("sanet", 19, aux_head=False))
    notes = []
    monkeypatch.setitem(checkpoints.SHIPPED_CHECKPOINTS, "synth", str(best.parent / "absent.safetensors"))
    model, name = bench.resolve_model(None, report=notes.append)
    assert name == "random-init" and "random-init" in notes[0]
    monkeypatch.setitem(checkpoints.SHIPPED_CHECKPOINTS, "synth", str(best))
    model, name = bench.resolve_model(None, report=notes.append)
    reference = load_model(best)
    assert name == str(best)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_gpucheck_without_cuda_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the self-check runs instead of refusing")
    for quick in ([], ["--quick"]):
        result = run_cli(["sanet.gpucheck"], "-o", str(tmp_path / "gc"), *quick)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0 and "no CUDA device" in result.stderr
        assert not (tmp_path / "gc" / "gpucheck.json").exists()


def test_gpucheck_torch_rows_record_a_broken_cuda_path_as_a_fail_row(tmp_path):
    """The PyTorch CUDA variant rows are built and run through the bench's own Row and timing code; without CUDA each
    becomes a FAIL row naming why (on a GPU the same code times them), never an exception that ends the check."""
    from sanet import gpucheck
    from sanet.model import build_model

    config = gpucheck.check_config(str(tmp_path), quick=True)
    config.resolutions, config.parity_images = [(64, 128)], 1
    _, dataset = bench.generated_scenes(str(tmp_path), config)
    rows = gpucheck.torch_variant_rows(build_model("sanet", 19, aux_head=False).eval(), (64, 128), config, dataset, print)
    assert [row.runner for row in rows] == ["pytorch-cuda-fp16-channels_last", "pytorch-cuda-fp16-CUDA-graph",
                                            "pytorch-cuda-fp16-channels_last-CUDA-graph"]
    if not torch.cuda.is_available():
        assert all(row.verdict == "FAIL" and "CUDA" in row.failures[0] and "\n" not in row.failures[0] for row in rows)


def test_gpucheck_quick_is_one_size_fp16_without_calibration(tmp_path):
    """--quick: 512x1024 only, FP16 only (no INT8 row, so no calibration), 10 iterations in one round; the full check
    covers the three bench sizes in every precision."""
    from sanet import gpucheck

    quick, full = gpucheck.check_config(str(tmp_path), quick=True), gpucheck.check_config(str(tmp_path))
    assert quick.resolutions == [bench.BENCH_RESOLUTIONS[0]] and quick.precisions == ("fp16",) and quick.calib is None
    assert (quick.iterations, quick.rounds, quick.cpu_rows) == (10, 1, False)
    assert full.resolutions == list(bench.BENCH_RESOLUTIONS) and "int8" in full.precisions and not full.cpu_rows
    assert [label for label, options in gpucheck.TORCH_VARIANTS if options["precision"] in quick.precisions] == [
        "fp16 channels_last", "fp16 CUDA graph", "fp16 channels_last CUDA graph"]
