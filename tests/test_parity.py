"""The CI parity check: trained checkpoint -> ONNX at two resolutions -> ONNX Runtime CPU -> parity."""
import copy
import json

import numpy as np
import pytest
import torch
from conftest import RESOLUTIONS

from sanet.checkpoints import load_model, save_checkpoint
from sanet.data import open_dataset
from sanet.errors import SanetError
from sanet.export import ExportConfig, export_onnx, read_metadata
from sanet.parity import compare
from sanet.runners import TRT_PROVIDER, OrtRunner, TorchRunner, check_providers, class_map_tensor, ort_device


@pytest.mark.parametrize("size", RESOLUTIONS)
def test_parity_holds_on_synthetic_val(exported, synth_small, size):
    model, paths = exported
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OrtRunner(paths[size]) as candidate:
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert result.passed, result.failures
    assert result.pixel_agreement >= 0.9999 and result.delta_miou is not None and abs(result.delta_miou) <= 0.001
    assert result.miou_reference > 0.05  # the shipped model: better than chance, several classes predicted
    with OrtRunner(paths[size]) as candidate:
        assert len(np.unique(candidate.predict(val.load(0)[0][None, :size[0], :size[1]])[0])) >= 3
    assert result.max_abs_logit_diff < 1e-2


def test_parity_holds_on_real_cityscapes_frames(exported, real_data):
    model, paths = exported
    frames = open_dataset(str(real_data / "cityscapes"), "cityscapes", "val", require_labels=False)
    with OrtRunner(paths[(128, 256)]) as candidate:
        result = compare(TorchRunner(model), candidate, frames, progress=False)
    assert result.images == 7 and result.passed, result.failures
    assert result.pixel_agreement >= 0.9999 and result.agreement_miou >= 0.999


def test_parity_fails_for_a_really_wrong_candidate(exported, synth_small, tmp_path):
    model, _ = exported
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        torch.manual_seed(1)
        for name, param in wrong.named_parameters():
            if name.startswith("sff2"):
                param.add_(torch.randn_like(param) * 0.2 * param.abs().mean())
    path = tmp_path / "wrong.onnx"
    export_onnx(wrong, path, ExportConfig(128, 256))
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OrtRunner(path) as candidate:
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert not result.passed and any("pixel agreement" in f for f in result.failures)


def test_metadata_and_uint8_argmax_export(exported, tmp_path, synth_small):
    model, paths = exported
    meta = read_metadata(paths[(128, 256)])
    assert meta["sanet.variant"] == "sanet" and meta["sanet.classes"] == "19" and meta["sanet.opset"] == "17"
    assert meta["sanet.resolution"] == "128x256" and meta["sanet.source_sha256"] == "test"
    assert meta["sanet.class_names"].split(",")[0] == "road"
    path = tmp_path / "u8.onnx"
    export_onnx(model, path, ExportConfig(128, 256, input_layout="uint8-nhwc", output="argmax"))
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OrtRunner(path) as candidate:
        assert candidate.info.layout == "uint8-nhwc" and candidate.info.output == "argmax"
        result = compare(TorchRunner(model), candidate, val, progress=False)
    assert result.pixel_agreement >= 0.9999 and result.max_abs_logit_diff is None


def test_runner_rejects_wrong_inputs(exported):
    _, paths = exported
    with OrtRunner(paths[(128, 256)]) as runner:
        with pytest.raises(SanetError, match="built for 128x256"):
            runner.predict(np.zeros((1, 96, 192, 3), np.uint8))
        with pytest.raises(SanetError, match="expects float32"):
            runner.infer(np.zeros((1, 3, 128, 256), np.float64))


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_device_phases_match_infer_and_hand_back_a_uint8_class_map(exported, backend):
    model, paths = exported
    runner = TorchRunner(model) if backend == "pytorch" else OrtRunner(paths[(128, 256)])
    frame = np.random.default_rng(3).integers(0, 256, size=(1, 128, 256, 3), dtype=np.uint8)
    inputs = runner.prepare(frame)
    with pytest.raises(SanetError, match="not active"):
        runner.stage(inputs)
    with runner:
        logits = runner.infer(inputs)
        runner.stage(inputs)
        runner.execute()
        class_map = runner.fetch(class_map=True)
        np.testing.assert_array_equal(runner.fetch(), logits)
        first = runner.infer(inputs)
        runner.infer(np.ascontiguousarray(inputs[..., ::-1]))  # bound output buffers are reused by the next run ...
        np.testing.assert_array_equal(first, logits)  # ... but what infer returned is the caller's own array
    assert runner.device_resident and runner.cuda_stream is None  # I/O in place on the CPU; host clock
    assert class_map.dtype == np.uint8 and class_map.shape == (1, 128, 256)
    np.testing.assert_array_equal(class_map, logits.argmax(axis=1))
    assert runner.staged is None and runner.outputs is None  # close() lets go of the frame and its logits


def test_delta_miou_is_judged_only_on_enough_labelled_images():
    from sanet.parity import BUDGETS, DELTA_MIOU_MIN_IMAGES, ParityResult, check_budget, parity_rows

    def result(images):
        return ParityResult("onnxruntime-cpu-int8", "int8", images, pixel_agreement=0.98, boundary_agreement=0.9,
                            agreement_miou=0.9, miou_reference=0.40, miou_candidate=0.42, delta_miou=0.02)

    few, enough = result(DELTA_MIOU_MIN_IMAGES - 1), result(DELTA_MIOU_MIN_IMAGES)
    few.failures, few.notes = check_budget(few, BUDGETS["int8"])
    assert few.failures == [] and "not judged on 2 labelled image(s)" in few.notes[0]
    assert "not judged" in parity_rows(few)[-1][1]
    assert check_budget(enough, BUDGETS["int8"]) == (["|delta mIoU| 2.00 pt > 1.00 pt"], [])


def test_foreign_onnx_is_refused(tmp_path, ort):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(SanetError, match="one 4-D input named 'images'"):
        OrtRunner(path)


def test_export_and_parity_cli(shipped, synth_small, tmp_path, sanet_cli):
    best = shipped
    out = tmp_path / "exports"
    result = sanet_cli("export", str(best), "--res", "128", "256", "-o", str(out))
    assert result.returncode == 0, result.stderr
    onnx_path = out / "sanet_128x256_b1.onnx"
    assert onnx_path.is_file() and "max |diff|" in result.stdout
    report = tmp_path / "parity.json"
    result = sanet_cli("parity", str(best), "--onnx", str(onnx_path), "--data", str(synth_small), "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["passed"] is True and "PASS" in result.stdout
    strict = sanet_cli("parity", str(best), "--onnx", str(onnx_path), "--data", str(synth_small), "--min-pixel-agreement", "1.01")
    assert strict.returncode == 1 and "FAIL" in strict.stdout


def test_dynamic_hw_export_matches_pytorch_at_several_sizes(shipped, synth_small, tmp_path, sanet_cli):
    import onnx

    best = shipped
    model = load_model(best)
    path = tmp_path / "sanet_dynamic.onnx"
    export_onnx(model, path, ExportConfig(128, 256, dynamic=True, input_layout="uint8-nhwc", output="argmax"),
                verify_sizes=[(96, 160)])
    graph = onnx.load(str(path)).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim[1:3]] == ["height", "width"]
    assert not {"Loop", "If"} & {node.op_type for node in graph.node}
    assert read_metadata(path)["sanet.resolution"] == "dynamic"
    val = open_dataset(str(synth_small), "cityscapes", "val")
    with OrtRunner(path) as candidate:
        assert candidate.info.input_size is None
        for size in ((128, 256), (96, 192), (64, 96)):  # 2:1, 2:1 smaller, 3:2: other SCE grids
            result = compare(TorchRunner(model), candidate, val, size=size, progress=False)
            assert result.passed and result.pixel_agreement >= 0.9999, (size, result.failures)
    refused = sanet_cli("export", str(best), "--dynamic", "--fp16", "-o", str(tmp_path))
    assert refused.returncode == 1 and "engines, --qdq and --triton need static sizes" in refused.stderr


def test_export_failure_leaves_no_file(shipped, tmp_path):
    best = shipped
    model = load_model(best)
    with pytest.raises(SanetError, match="export discarded"):
        export_onnx(model, tmp_path / "m.onnx", ExportConfig(64, 128, tolerance=-1.0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--random-init", "--res", "100", "200"], "multiples of 8"),
    (["--random-init", "--res", "128", "abc"], "two integers"),
    (["missing.safetensors"], "checkpoint not found"),
    ([], "give a CHECKPOINT"),
])
def test_export_cli_errors(argv, message, tmp_path, sanet_cli):
    result = sanet_cli("export", *argv, "-o", str(tmp_path))
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_class_count_mismatch(tmp_path, sanet_cli):
    from sanet.model import build_model

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("sanet-tiny", 11, aux_head=False))
    result = sanet_cli("export", str(path), "--classes", "19", "-o", str(tmp_path))
    assert result.returncode == 1 and "has 11 classes, not 19" in result.stderr


def test_memo_runner_keeps_bounded_uint8_class_maps(synth_small):
    from sanet.model import build_model
    from sanet.parity import MemoRunner

    torch.manual_seed(0)
    model = build_model("sanet", 19, aux_head=False).eval()
    images = [open_dataset(str(synth_small), "cityscapes", "val").load(i)[0][None] for i in range(3)]
    with TorchRunner(model) as direct:
        expected = [direct.predict(image)[0] for image in images]
    one_map = images[0].shape[1] * images[0].shape[2]  # bytes of one uint8 class map
    with MemoRunner(TorchRunner(model), max_bytes=2 * one_map) as memo:
        for image, want in zip(images, expected):
            got, logits = memo.predict(image)
            assert np.array_equal(got, want) and logits is None
        assert len(memo.cache) == 2 and all(entry.dtype == np.uint8 for entry in memo.cache.values())
        assert np.array_equal(memo.predict(images[2])[0], expected[2])  # served from the cache
    assert not memo.active and not memo.runner.active


def test_class_map_is_argmax_with_the_first_maximum_winning():
    rng = np.random.default_rng(4)
    tied = rng.integers(0, 3, size=(2, 19, 8, 16)).astype(np.float32)  # most pixels have tied maxima
    classes = class_map_tensor(torch.from_numpy(tied))
    assert classes.dtype == torch.uint8
    np.testing.assert_array_equal(classes.numpy(), tied.argmax(axis=1))
    wide = rng.standard_normal((1, 300, 4, 4)).astype(np.float32)  # more classes than uint8 holds
    classes = class_map_tensor(torch.from_numpy(wide))
    assert classes.dtype == torch.int32
    np.testing.assert_array_equal(classes.numpy(), wide.argmax(axis=1))


def test_gpu_providers_bind_cuda_tensors_only_where_torch_has_cuda(exported, monkeypatch):
    _, paths = exported
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # construction reads the file only
    runner = OrtRunner(paths[(128, 256)], providers=gpu)
    assert runner.device.type == "cpu" and not runner.device_resident  # the provider copies inside each run
    assert runner.info.device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ort_device(gpu).type == "cuda" and ort_device(["TensorrtExecutionProvider"]).type == "cuda"
    assert ort_device(["CPUExecutionProvider"]).type == "cpu"


# --- ONNX Runtime providers: a row is what it says ---------------------------------------------


@pytest.mark.parametrize("providers", [["CUDAExecutionProvider"], ["TensorrtExecutionProvider", "CUDAExecutionProvider"]])
def test_a_provider_onnxruntime_falls_back_from_is_refused(exported, ort, providers, tmp_path):
    """This host's onnxruntime has no GPU provider: asked for one, ONNX Runtime really warns and runs the CPU. The
    runner checks session.get_providers() and refuses, naming the fix, and keeps no session."""
    if providers[0] in ort.get_available_providers():
        pytest.skip("{} is in this onnxruntime build: it does not fall back here".format(providers[0]))
    _, paths = exported
    precision = "fp16" if providers[0] == TRT_PROVIDER else None
    runner = OrtRunner(paths[(96, 192)], providers, precision, cache_dir=tmp_path / "cache")
    assert runner.info.label == "onnxruntime-{}-{}".format(providers[0][:-len("ExecutionProvider")].lower(), precision or "fp32")
    with pytest.raises(SanetError, match="would run .* on CPUExecutionProvider instead of {}.*not in this onnxruntime build "
                       r".*install onnxruntime-gpu".format(", ".join(providers))):
        runner.activate()
    assert not runner.active and runner.session is None


def test_a_provider_that_failed_to_load_is_named_with_onnxruntimes_reason():
    # What ONNX Runtime printed when its TensorRT EP could not load (microsoft/onnxruntime#17394 format, the text of
    # github.com/machineminded/Fooocus-inswapper/issues/25): the reason is quoted in the refusal.
    log = ("*************** EP Error ***************\n"
           "EP Error D:\\a\\_work\\1\\s\\onnxruntime\\python\\onnxruntime_pybind_state.cc:456 "
           "onnxruntime::python::RegisterTensorRTPluginsAsCustomOps Please install TensorRT libraries as mentioned in the "
           "GPU requirements page, make sure they're in the PATH or LD_LIBRARY_PATH, and that your GPU is supported.\n"
           " when using ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']\n"
           "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.\n"
           "****************************************\n")
    requested, available = ["TensorrtExecutionProvider", "CUDAExecutionProvider"], ["TensorrtExecutionProvider",
                                                                                   "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(SanetError) as caught:
        check_providers(requested, ["CUDAExecutionProvider", "CPUExecutionProvider"], available, "m.onnx", log)
    message = str(caught.value)
    assert "\n" not in message and "TensorrtExecutionProvider failed to load (EP Error" in message
    assert "Please install TensorRT libraries" in message and "use the TensorRT engine rows" in message
    check_providers(requested, requested + ["CPUExecutionProvider"], available, "m.onnx")  # all there: accepted


def test_tensorrt_provider_options_follow_the_row_and_key_the_engine_cache(exported, ort, tmp_path):
    """trt_fp16_enable where the row says fp16, none where it says fp32; the engine cache folder is keyed by the file
    and the options (ONNX Runtime would reuse a stale engine), and records what it was built for."""
    _, paths = exported
    providers = [TRT_PROVIDER, "CUDAExecutionProvider"]

    def options(path, precision):
        chosen = dict(OrtRunner(path, providers, precision, cache_dir=tmp_path).provider_options())
        return chosen[TRT_PROVIDER], chosen["CUDAExecutionProvider"]

    (fp16, cuda), (fp32, _) = options(paths[(96, 192)], "fp16"), options(paths[(96, 192)], None)
    assert cuda == {} and (fp16["trt_fp16_enable"], fp16["trt_int8_enable"], fp32["trt_fp16_enable"]) == (True, False, False)
    other = options(paths[(128, 256)], "fp16")[0]
    folders = {fp16["trt_engine_cache_path"], fp32["trt_engine_cache_path"], other["trt_engine_cache_path"]}
    assert len(folders) == 3 and all(f.startswith(str(tmp_path)) and fp16["trt_engine_cache_enable"] for f in folders)
    recorded = json.loads((tmp_path / fp16["trt_engine_cache_path"] / "cache.json").read_text())
    assert recorded["options"] == {"trt_fp16_enable": True, "trt_int8_enable": False}
    assert recorded["onnxruntime"] == ort.__version__ and len(recorded["onnx_sha256"]) == 64
    assert options(paths[(96, 192)], "fp16")[0] == fp16  # the same file and options: the same cache
    assert "trt_engine_cache_path" not in dict(OrtRunner(paths[(96, 192)], providers, "fp16").provider_options())[TRT_PROVIDER]
    assert OrtRunner(paths[(96, 192)], providers, "fp16").keeps_warm and not OrtRunner(paths[(96, 192)]).keeps_warm


def test_provider_precisions_that_do_not_exist_are_refused(exported, tmp_path):
    import onnx

    from sanet.export import set_metadata

    _, paths = exported
    with pytest.raises(SanetError, match="the TensorRT provider runs .* as fp32 or fp16, not int8"):
        OrtRunner(paths[(96, 192)], [TRT_PROVIDER], "int8")
    with pytest.raises(SanetError, match="the CUDA provider runs .* in its own precision \\(fp32\\), not fp16"):
        OrtRunner(paths[(96, 192)], ["CUDAExecutionProvider"], "fp16")
    proto = onnx.load(str(paths[(96, 192)]))
    set_metadata(proto, dict(read_metadata(paths[(96, 192)]), **{"sanet.precision": "int8", "sanet.int8_activations": "uint8"}))
    onnx.save(proto, str(tmp_path / "uint8_qdq.onnx"))
    with pytest.raises(SanetError, match="uint8 .* TensorRT reads signed INT8 Q/DQ only"):
        OrtRunner(tmp_path / "uint8_qdq.onnx", [TRT_PROVIDER], "int8")


def test_a_released_session_runs_again_with_fresh_bindings(exported):
    """release() (between a bench's visits of a runner that keeps warm) drops the bound output; the next run binds anew."""
    _, paths = exported
    frame = np.random.default_rng(5).integers(0, 256, size=(1, 96, 192, 3), dtype=np.uint8)
    with OrtRunner(paths[(96, 192)]) as runner:
        inputs = runner.prepare(frame)
        first = runner.infer(inputs)
        runner.release()
        assert runner.output is None and runner.outputs is None and runner.active
        np.testing.assert_array_equal(runner.infer(inputs), first)
