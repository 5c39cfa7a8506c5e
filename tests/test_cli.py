"""The command line: one-line errors for bad input across all eight commands, flags and help from one place,
runners that leave the caller's model alone, the artifact pipeline, and the generated README reference."""
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from sanet import cli
from sanet.checkpoints import save_checkpoint
from sanet.errors import SanetError
from sanet.export import ExportConfig
from sanet.model import build_model
from sanet.pipeline import ARTIFACTS, Pipeline, weights_digest
from sanet.runners import OrtRunner, TorchRunner
from sanet.synth import SynthConfig, generate_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Evil:
    """A pickle that creates a file when unpickled: a checkpoint loader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad inputs, made once: a tiny checkpoint and dataset, and broken files of every kind."""
    base = tmp_path_factory.mktemp("cli")
    model = build_model("sanet-tiny", 19, aux_head=False).eval()
    save_checkpoint(base / "tiny.safetensors", model)
    data = base / "data"
    generate_dataset(str(data), SynthConfig(64, 128, train=1, val=2, seed=3))
    good = (base / "tiny.safetensors").read_bytes()
    (base / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (base / "empty.pt").write_bytes(b"")
    (base / "text.safetensors").write_text("not a checkpoint at all, just some text that is long enough\n")
    marker = base / "pwned"
    torch.save({"state_dict": Evil(str(marker))}, base / "evil.pt")
    (base / "evil_raw.pt").write_bytes(pickle.dumps({"state_dict": Evil(str(marker))}, protocol=2))
    torch.save([1, 2, 3], base / "list.pt")
    torch.save({"foo": torch.zeros(3)}, base / "foreign.pt")
    (base / "garbage.onnx").write_bytes(os.urandom(4096))
    (base / "empty.onnx").write_bytes(b"")
    (base / "stale.plan").write_bytes(b"\x00" * 64)
    (base / "a_file").write_text("x")
    (base / "empty.yaml").write_text("")
    (base / "ok.yaml").write_text("epochs: 1\n")
    (base / "no_images").mkdir()
    (base / "image.png").write_bytes(good[:100])
    return {"base": base, "ckpt": base / "tiny.safetensors", "data": data, "marker": marker}


def run_cli(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# (command line with {base}/{ckpt}/{data}/{out} placeholders, exit status, text the error line must contain)
BAD_INPUTS = [
    ("info {base}/missing.pt", 1, "checkpoint not found"),
    ("info {base}/empty.pt", 1, "is empty"),
    ("info {base}/truncated.safetensors", 1, "corrupt, truncated"),
    ("info {base}/text.safetensors", 1, "not a checkpoint"),
    ("info {base}/evil.pt", 1, "corrupt"),
    ("info {base}/evil_raw.pt", 1, "corrupt"),
    ("info {base}/list.pt", 1, "holds a list"),
    ("info {base}/foreign.pt", 1, "not a SANet checkpoint"),
    ("info {ckpt} --classes 11", 1, "has 19 classes, not 11"),
    ("info {ckpt} --variant sanet", 1, "is sanet-tiny, not sanet"),
    ("info --classes 0", 1, "--classes must be >= 1"),
    ("info --classes abc", 2, "invalid int value"),
    ("info --variant resnet", 2, "invalid choice"),
    ("synth {out} --train -3", 1, "--train must be >= 0"),
    ("synth {out} --val -1", 1, "--val must be >= 0"),
    ("synth {out} --train 0 --val 0", 1, "at least one frame"),
    ("synth {out} --size 16 16", 1, "H and W >= 64"),
    ("synth {base}/a_file", 1, "is a file"),
    ("synth", 2, "the following arguments are required: out"),
    ("synth {out} --size 64", 2, "expected 2 arguments"),
    ("eval {ckpt}", 2, "the following arguments are required: --data"),
    ("eval {ckpt} --data {base}/nowhere", 1, "dataset root not found"),
    ("eval {ckpt} --data {data} --limit 0", 1, "--limit must be >= 1"),
    ("eval {ckpt} --data {data} --scales 0", 1, "--scales must be positive"),
    ("eval {ckpt} --data {data} --size 100 100", 1, "multiples of 8"),
    ("eval {ckpt} --data {data} --dataset camvid --submit {out}", 1, "--submit writes Cityscapes"),
    ("eval {ckpt} --data {data} --precision fp16", 1, "fp16"),
    ("eval {ckpt} --onnx {base}/garbage.onnx --data {data}", 1, "not both"),
    ("eval --onnx {base}/missing.onnx --data {data}", 1, "ONNX file not found"),
    ("eval --onnx {base}/empty.onnx --data {data}", 1, "is empty"),
    ("eval --onnx {base}/garbage.onnx --data {data}", 1, "cannot read ONNX file"),
    ("eval --onnx {base}/garbage.onnx --precision fp16 --data {data}", 1, "carries its own precision"),
    ("eval {ckpt} --precision fp16 --data {data}", 1, "needs a CUDA device"),
    ("eval --engine {base}/missing.plan --data {data}", 1, "engine not found"),
    ("eval --engine {base}/stale.plan --device cpu --data {data}", 1, "engines run on the GPU"),
    ("eval {ckpt} --data {data} --json {base}/nowhere/r.json", 1, "--json"),
    ("eval --onnx a.onnx --engine b.plan --data {data}", 2, "not allowed with argument"),
    ("eval {ckpt} --device tpu --data {data}", 2, "invalid choice"),
    ("eval {ckpt} --data {data} --split test", 1, "Cityscapes split not found"),
    ("train", 2, "the following arguments are required: --config"),
    ("train --config {base}/missing.yaml", 1, "config not found"),
    ("train --config {base}/empty.yaml", 1, "is empty"),
    ("train --config {base}/ok.yaml --resume {base}/missing.pt", 1, "resume checkpoint not found"),
    ("train --config {base}/ok.yaml epochs", 1, "not key=value"),
    ("export --random-init --opset 7 -o {out}", 1, "--opset 7 is not supported"),
    ("export --random-init --opset 99 -o {out}", 1, "--opset 99 is not supported"),
    ("export --random-init --batch 0 -o {out}", 1, "--batch must be >= 1"),
    ("export -o {out}", 1, "give a CHECKPOINT to export, or --random-init"),
    ("export {ckpt} --random-init -o {out}", 1, "exclude each other"),
    ("export {base}/evil.pt -o {out}", 1, "corrupt"),
    ("export --random-init --qdq -o {out}", 1, "needs calibration images"),
    ("export --random-init --qdq --calib {base}/no_images -o {out}", 1, "has 0 image(s)"),
    ("export --random-init --qdq --calib {base}/missing -o {out}", 1, "calibration folder not found"),
    ("export --random-init --qdq --calib {data} --calib-count 0 -o {out}", 1, "--calib-count must be >= 1"),
    ("export --random-init --qdq --calib {data} --int8-fallback auto -o {out}", 1, "add --parity-data"),
    ("export --random-init --res 100 200 -o {out}", 1, "multiples of 8"),
    ("export --random-init --res 64 abc -o {out}", 1, "two integers"),
    ("export --random-init --workspace 0 -o {out}", 1, "--workspace must be >= 1"),
    ("export --random-init --opt-level 9 -o {out}", 1, "--opt-level must be 0-5"),
    ("export --random-init --fp16 --dla-core -1 -o {out}", 1, "--dla-core must be >= 0"),
    ("export --random-init --fp32 --dla-core 0 -o {out}", 1, "DLA runs FP16 or INT8 only"),
    ("export --random-init --dynamic --fp16 -o {out}", 1, "need static sizes"),
    ("export --random-init --triton-max-batch 0 -o {out}", 1, "--triton-max-batch must be >= 1"),
    ("export --random-init -o {base}/a_file", 1, "is a file"),
    ("export --random-init --trt-check 9 -o {out}", 2, "invalid choice"),
    ("export --random-init --int8-route magic -o {out}", 2, "invalid choice"),
    ("parity --onnx {base}/garbage.onnx --data {data}", 1, "give the CHECKPOINT the candidate was exported from"),
    ("parity {ckpt} --data {data} --emulate fp16", 1, "add --onnx MODEL"),
    ("parity {ckpt} --onnx {base}/garbage.onnx --data {data} --max-delta-miou -0.1", 1, "is a fraction"),
    ("parity {ckpt} --onnx {base}/missing.onnx --data {data}", 1, "ONNX file not found"),
    ("parity {ckpt} --onnx {base}/garbage.onnx", 2, "the following arguments are required: --data"),
    ("parity {ckpt} --onnx {base}/garbage.onnx --data {data} --limit -1", 1, "--limit must be >= 1"),
    ("parity {ckpt} --onnx {base}/garbage.onnx --data {base}/nowhere", 1, "dataset root not found"),
    ("parity {ckpt} --engine {base}/missing.plan --data {data}", 1, "engine not found"),
    ("bench --backends cuda-magic -o {out}", 2, "invalid choice"),
    ("bench --onnx {base}/missing.onnx -o {out}", 1, "file not found"),
    ("bench --engine {base}/missing.plan -o {out}", 1, "file not found"),
    ("bench --data {base}/nowhere -o {out}", 1, "dataset root not found"),
    ("bench --res 100 100 -o {out}", 1, "multiples of 8"),
    ("bench --iterations 0 -o {out}", 1, "--iterations must be at least 1"),
    ("bench --classes 0 -o {out}", 1, "--classes must be >= 1"),
    ("bench --checkpoint {base}/evil.pt -o {out}", 1, "corrupt"),
    ("bench -o {base}/a_file", 1, "is a file"),
    ("infer {data} --onnx {base}/missing.onnx -o {out}", 1, "ONNX file not found"),
    ("infer {data} --engine {base}/missing.plan -o {out}", 1, "not found"),
    ("infer {data} --checkpoint {ckpt} --onnx {base}/garbage.onnx -o {out}", 1, "give one of --checkpoint, --onnx, --engine or --openvino"),
    ("infer {data} --checkpoint {ckpt} --alpha 2 -o {out}", 1, "--alpha is an opacity"),
    ("infer {data} --checkpoint {ckpt} --max-frames 0 -o {out}", 1, "--max-frames must be >= 1"),
    ("infer {data} --checkpoint {ckpt} --size 100 100 -o {out}", 1, "multiples of 8"),
    ("infer {base}/no_images --checkpoint {ckpt} -o {out}", 1, "no images or videos found"),
    ("infer {data} --engine {base}/missing.plan -o {out}", 1, "engine not found"),
    ("infer --checkpoint {ckpt}", 2, "the following arguments are required: inputs"),
]


def test_the_table_covers_every_command_with_enough_cases():
    assert len(BAD_INPUTS) >= 50
    assert {line.split()[0] for line, _, _ in BAD_INPUTS} == set(cli.COMMANDS)


@pytest.mark.parametrize("line,status,message", BAD_INPUTS, ids=[case[0][:60] for case in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_leaves_no_file(files, tmp_path, capsys, line, status, message):
    out = tmp_path / "out"
    argv = [part.format(base=files["base"], ckpt=files["ckpt"], data=files["data"], out=out) for part in line.split()]
    code, stdout, stderr = run_cli(capsys, argv)
    assert code == status, (stdout, stderr)
    error_lines = [text for text in stderr.splitlines() if "error:" in text]
    assert len(error_lines) == 1 and message in error_lines[0], stderr
    if status == 1:
        assert stderr.strip() == error_lines[0] and error_lines[0].startswith("error: ")
    assert "Traceback" not in stderr + stdout
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert left == []
    assert not files["marker"].exists()  # no pickle ran code


@pytest.mark.parametrize("argv,message", [
    (["export", "--random-init", "--opset", "7"], "--opset 7 is not supported"),
    (["synth", "{out}", "--train", "-3"], "--train must be >= 0"),
    (["info", "{base}/evil.pt"], "corrupt"),
    (["export", "--random-init", "--qdq", "--calib", "{base}/no_images"], "has 0 image(s)"),
])
def test_bad_input_as_a_real_process(files, tmp_path, argv, message):
    out = tmp_path / "out"
    argv = [a.format(base=files["base"], out=out) for a in argv] + (["-o", str(out)] if argv[0] == "export" else [])
    result = subprocess.run([sys.executable, "-m", "sanet.cli", *argv], capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not files["marker"].exists()
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_every_flag_says_its_default_and_every_command_has_examples():
    for name, build in cli.PARSERS.items():
        parser = build()
        formatter = parser.formatter_class(parser.prog)
        for action in parser._actions:
            if action.dest == "help" or (action.required and not action.option_strings):
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert text and ("default" in text or action.required), (name, action.option_strings, text)
        examples = [line for line in parser.epilog.splitlines()[1:] if line.strip()]
        assert 2 <= len(examples) <= 3 and all(line.strip().startswith("sanet-" + name) for line in examples), name


def test_every_network_command_takes_the_same_runner_sources():
    for name in ("eval", "parity", "infer", "bench"):
        options = {o for action in cli.PARSERS[name]()._actions for o in action.option_strings}
        assert {"--onnx", "--engine"} <= options, name
    for name in ("eval", "parity", "infer"):
        options = {o for action in cli.PARSERS[name]()._actions for o in action.option_strings}
        assert {"--device", "--precision"} <= options, name
    assert {"--variant", "--classes"} <= {o for a in cli.PARSERS["parity"]()._actions for o in a.option_strings}


def test_cli_declares_no_flags_and_nothing_imports_it():
    with open(os.path.join(ROOT, "sanet", "cli.py"), encoding="utf-8") as handle:
        source = handle.read()
    assert len(source.splitlines()) <= 350 and "add_argument(" not in source
    for name in os.listdir(os.path.join(ROOT, "sanet")):
        if name.endswith(".py") and name != "cli.py":
            with open(os.path.join(ROOT, "sanet", name), encoding="utf-8") as handle:
                text = handle.read()
            assert not re.search(r"from \.cli import|from \. import cli|import sanet\.cli|from sanet\.cli", text), name


def test_torch_runner_never_changes_the_callers_model():
    model = build_model("sanet-tiny", 19, aux_head=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = TorchRunner(model, "cpu", "bf16", channels_last=True)
    with pytest.raises(SanetError, match="not active"):
        runner.infer(np.zeros((1, 3, 64, 128), np.float32))
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 128, 3), dtype=np.uint8)
    with runner:
        assert runner.model is not model and next(runner.model.parameters()).dtype == torch.bfloat16
        assert any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                   for p in runner.model.parameters())
        classes, logits = runner.predict(image)
        assert classes.shape == (1, 64, 128) and logits.dtype == np.float32
    assert runner.model is None and not runner.active
    runner.close()  # idempotent
    assert model.training  # eval() was applied to the copy only
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == before[name].dtype and tensor.device.type == "cpu" and torch.equal(tensor, before[name])
        assert tensor.is_contiguous()  # channels_last went to the copy (a converted 3x3 kernel is not contiguous)
    with pytest.raises(SanetError, match="needs a CUDA device"):
        TorchRunner(model, "cpu", "fp16")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


def test_pipeline_names_builds_reuses_and_opens_artifacts(pipeline_dir):
    pytest.importorskip("onnxruntime")
    model = build_model("sanet-tiny", 19, aux_head=False).eval()
    tag = weights_digest(model)[:12]
    pipeline = Pipeline(model, None, pipeline_dir, reuse=True, tag=tag)
    path = pipeline.onnx((64, 128))
    assert os.path.basename(path) == ARTIFACTS["onnx"].file_name(stem="sanet_tiny_64x128_b1_" + tag)
    assert pipeline.notes[path].startswith("max |diff|") and pipeline.onnx((64, 128)) == path
    runner = pipeline.runner("onnx", (64, 128))
    assert isinstance(runner, OrtRunner) and runner.session is None  # constructing is cheap: no session yet
    with pytest.raises(SanetError, match="not active"):
        runner.infer(np.zeros((1, 3, 64, 128), np.float32))
    mtime = os.path.getmtime(path)
    again = Pipeline(model, None, pipeline_dir, reuse=True, tag=tag)
    assert again.onnx((64, 128)) == path and again.notes[path].startswith("reused") and os.path.getmtime(path) == mtime
    other = build_model("sanet-tiny", 19, aux_head=False).eval()  # other weights, same file name (same tag)
    rebuilt = Pipeline(other, None, pipeline_dir, reuse=True, tag=tag)
    assert rebuilt.onnx((64, 128)) == path and rebuilt.notes[path].startswith("max |diff|")
    assert Pipeline(model, None, pipeline_dir).path("engine", (64, 128), "fp16").endswith("sanet_tiny_64x128_b1_fp16.plan")
    with pytest.raises(SanetError, match="needs calibration images"):
        pipeline.qdq((64, 128))
    picky = ExportConfig(tolerance=-1.0)  # any ONNX Runtime vs PyTorch difference fails the export-time check
    with pytest.raises(SanetError, match="export discarded"):
        Pipeline(model, None, pipeline_dir / "checked", picky).onnx((64, 128))
    unchecked = Pipeline(model, None, pipeline_dir / "unchecked", picky, verify=False)  # the bench: parity rows check
    path = unchecked.onnx((64, 128))
    assert os.path.isfile(path) and unchecked.notes[path].startswith("not run at export")


@pytest.fixture(scope="module")
def tiny_onnx(files, tmp_path_factory):
    """The tiny checkpoint exported once at 64x128 through the pipeline."""
    pytest.importorskip("onnxruntime")
    from sanet.checkpoints import load_model
    from sanet.fileio import sha256_file

    model = load_model(files["ckpt"])
    return Pipeline(model, sha256_file(files["ckpt"]), tmp_path_factory.mktemp("tiny_onnx")).onnx((64, 128))


def test_eval_and_parity_run_exported_and_emulated_models(files, tiny_onnx, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["eval", "--onnx", tiny_onnx, "--data", str(files["data"]), "--no-progress"])
    assert code == 0 and "mIoU" in out and "onnxruntime-cpu-fp32" in out, err
    report = tmp_path / "parity.json"
    code, out, err = run_cli(capsys, ["parity", str(files["ckpt"]), "--onnx", tiny_onnx, "--data", str(files["data"]),
                                      "--emulate", "fp16", "--json", str(report)])
    from sanet.parity import BUDGETS

    result = json.loads(report.read_text())  # random weights: near-ties may or may not hold the FP16 budget
    assert code == (0 if result["passed"] else 1) and ("PASS" if result["passed"] else "FAIL") in out, out + err
    assert result["precision"] == "fp16" and result["candidate"] == "emulated-cpu-fp16"
    assert result["budget"]["min_pixel_agreement"] == BUDGETS["fp16"].min_pixel_agreement  # the emulated precision's budget
    code, out, err = run_cli(capsys, ["parity", str(files["ckpt"]), "--onnx", tiny_onnx, "--data", str(files["data"]),
                                      "--emulate", "int8"])
    assert code == 1 and err.startswith("error: --emulate int8 needs a Q/DQ INT8 ONNX"), err


def test_export_lints_for_tensorrt_and_audits_fp16_ranges(files, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the engine would be built")
    except ImportError:
        pass
    out = tmp_path / "exports"
    code, stdout, stderr = run_cli(capsys, ["export", str(files["ckpt"]), "--res", "64", "128", "--opset", "18", "--fp16",
                                            "--calib", str(files["data"]), "--trt-check", "8.5", "--trt-check", "10",
                                            "-o", str(out)])
    assert code == 1 and stderr.startswith("error: TensorRT is not installed, so no fp16 engine was built"), stderr
    assert "fp16 range audit" in stdout and "PASS over" in stdout
    assert "TRT 8.5: 1 violation(s); TRT 10: ok" in stdout
    assert re.search(r"^trt-check 8\.5 sanet_tiny_64x128_b1\.onnx: .*opset 18", stdout, re.M)
    # without TensorRT --fp16 also writes the FP16 ONNX that strongly typed TensorRT (10.12+, 11) builds from
    assert sorted(p.name for p in out.iterdir()) == ["sanet_tiny_64x128_b1.onnx", "sanet_tiny_64x128_b1_fp16.onnx"]
    assert re.search(r"^trt-check 8\.5 sanet_tiny_64x128_b1_fp16\.onnx: .*opset 18", stdout, re.M)


@pytest.mark.tensorrt
def test_engine_flag_runs_in_export_eval_parity_and_infer(trt_sim, files, tmp_path, capsys):
    """--engine is one runner source for every command (TensorRT simulated; the CLI plumbing is checked once, on 10.3)."""
    if not trt_sim.module.__version__.startswith("10.3"):
        pytest.skip("the CLI plumbing is checked on the 10.3 listing; test_engines covers every release")
    out, data = tmp_path / "exports", str(files["data"])
    code, stdout, stderr = run_cli(capsys, ["export", str(files["ckpt"]), "--res", "64", "128", "--fp16", "--calib", data,
                                            "-o", str(out)])
    assert code == 0, stdout + stderr
    plan = out / "sanet_tiny_64x128_b1_fp16.plan"
    sidecar = json.loads((out / "sanet_tiny_64x128_b1_fp16.plan.json").read_text())
    assert sidecar["build"]["extra"]["fp16_range_audit"]["passed"] is True and "fp16 range audit" in stdout
    code, stdout, stderr = run_cli(capsys, ["eval", "--engine", str(plan), "--data", data, "--no-progress"])
    assert code == 0 and "tensorrt-cuda-fp16" in stdout, stdout + stderr
    report = tmp_path / "parity.json"
    code, stdout, stderr = run_cli(capsys, ["parity", str(files["ckpt"]), "--engine", str(plan), "--data", data,
                                            "--json", str(report)])
    result = json.loads(report.read_text())
    assert code == (0 if result["passed"] else 1) and result["candidate"] == "tensorrt-cuda-fp16", stdout + stderr
    code, stdout, stderr = run_cli(capsys, ["infer", data, "--engine", str(plan), "-o", str(tmp_path / "masks")])
    assert code == 0 and list((tmp_path / "masks").rglob("*_mask.png")), stdout + stderr
