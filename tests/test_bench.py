"""sanet-bench on CPU at reduced sizes: report files, consistent numbers, FAIL rows, skip messages."""
import copy
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from sanet.bench import latency_stats, parse_tegrastats_power
from sanet.checkpoints import load_model
from sanet.export import ExportConfig, export_onnx

QUICK = ["--res", "64", "128", "--res", "96", "192", "--seconds", "0.5", "--iterations", "5", "--warmup", "1",
         "--parity-images", "2"]


def bench(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "sanet.cli", "bench", *argv], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, ort):
    out = tmp_path_factory.mktemp("bench")
    result = bench(*QUICK, "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_default_run_writes_consistent_reports(default_run):
    out, result = default_run
    for name in ("bench.json", "bench.csv", "bench.md", "fps_vs_resolution.png", "fps_vs_miou.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "bench.json").read_text())
    rows = data["rows"]
    runners = {(r["resolution"], r["runner"]) for r in rows}
    assert runners == {(res, run) for res in ("64x128", "96x192")
                       for run in ("pytorch-cpu-fp32", "onnxruntime-cpu-fp32", "onnxruntime-cpu-int8")}
    for row in rows:
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["fps"] == pytest.approx(1000.0 / row["mean_ms"])
        if row["precision"] == "fp32":
            assert row["verdict"] == "PASS" and row["pixel_agreement"] >= 0.9999
        else:  # random-init weights: INT8 really differs (and may fail its budget on near-tied logits)
            assert row["pixel_agreement"] < 1.0 and row["verdict"] in ("PASS", "FAIL")
    assert data["settings"]["calibration_crops"] == 16
    assert data["host"]["cpu_count"] and data["host"]["torch"] == torch.__version__
    with open(out / "bench.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert (out / "bench.md").read_text().count("\n|") == len(rows) + 2  # header, separator, rows


def test_skip_messages_name_the_missing_package(default_run):
    _, result = default_run
    assert "skipped: tensorrt engines fp16/int8: tensorrt is not installed (JetPack ships it" in result.stdout
    assert "skipped: pytorch cuda" in result.stdout or torch.cuda.is_available()


def test_missing_onnxruntime_is_skipped_with_install_hint(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = bench("--res", "64", "128", "--seconds", "0.2", "--iterations", "2", "--warmup", "0", "--parity-images", "1",
                   "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime is not installed (pip install 'sanet[onnx]')" in result.stdout


def test_wrong_backend_row_fails_and_strict_exits_nonzero(trained, tmp_path):
    _, _, best = trained
    model = load_model(best)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in wrong.named_parameters():
            if name.startswith("conv_out32"):
                param.mul_(-1.0)  # flips the classifier: a really wrong backend
    bad = tmp_path / "wrong.onnx"
    export_onnx(wrong, bad, ExportConfig(64, 128))
    common = ["--checkpoint", str(best), "--res", "64", "128", "--backends", "pytorch", "--onnx", str(bad),
              "--seconds", "0.2", "--iterations", "2", "--warmup", "0", "--parity-images", "2", "-o", str(tmp_path / "o")]
    lenient = bench(*common)
    assert lenient.returncode == 0, lenient.stderr
    assert "FAIL" in lenient.stdout and "PASS" in lenient.stdout
    strict = bench(*common, "--strict")
    assert strict.returncode == 1 and "failed parity" in strict.stderr


def test_trained_int8_row_holds_its_budget(trained, synth_small, tmp_path):
    _, _, best = trained
    result = bench("--checkpoint", str(best), "--data", str(synth_small), "--res", "128", "256", "--backends",
                   "onnxruntime", "--precisions", "fp32", "int8", "--seconds", "0.3", "--iterations", "3",
                   "--warmup", "1", "--parity-images", "6", "--calib-count", "24", "--strict", "-o", str(tmp_path / "o"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["runner"]: r for r in json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]}
    assert set(rows) == {"onnxruntime-cpu-fp32", "onnxruntime-cpu-int8"}
    int8 = rows["onnxruntime-cpu-int8"]
    assert int8["verdict"] == "PASS" and abs(int8["delta_miou"]) <= 0.01


def test_bad_input_is_one_line(tmp_path):
    for argv, message in ((["--backends", "cuda-magic"], "invalid choice"),
                          (["--onnx", str(tmp_path / "missing.onnx")], "file not found"),
                          (["--engine", str(tmp_path / "missing.plan")], "file not found"),
                          (["--data", str(tmp_path / "nowhere")], "dataset root not found"),
                          (["--res", "100", "100"], "multiples of 8")):
        result = bench(*argv, "-o", str(tmp_path / "o"))
        assert result.returncode in (1, 2) and message in result.stderr and "Traceback" not in result.stderr


def test_latency_stats_and_tegrastats_parser():
    stats = latency_stats([10.0, 20.0, 30.0, 40.0])
    assert stats["mean_ms"] == 25.0 and stats["fps"] == 40.0 and stats["p50_ms"] <= stats["p99_ms"]
    line = "RAM 2000/15000MB GPU 50% VDD_GPU_SOC 4000mW/3900mW VDD_CPU_CV 1200mW/1100mW VIN_SYS_5V0 3000mW/2900mW"
    assert parse_tegrastats_power(line) == [5.2]
