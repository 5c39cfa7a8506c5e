"""sanet-infer on images and videos through ONNX Runtime, the Triton repository export, and the Docker images."""
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tomllib
from conftest import REPO

from sanet.data import CITYSCAPES_PALETTE, import_cv2, read_image, write_png
from sanet.export import io_signature
from sanet.infer import InferConfig, expand_inputs, run
from sanet.runners import OrtRunner


def infer_cli(*argv):
    return subprocess.run([sys.executable, "-m", "sanet.cli", "infer", *argv], capture_output=True, text=True, timeout=600)


def write_video(path, frames, fps=10.0):
    cv2 = import_cv2()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def count_frames(path):
    cv2 = import_cv2()
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


@pytest.fixture(scope="module")
def val_images(synth_small):
    return sorted((synth_small / "leftImg8bit" / "val").rglob("*.png"))


def test_images_give_palette_masks_equal_to_the_runner_prediction(exported, val_images, tmp_path):
    _, paths = exported
    sources = expand_inputs([str(val_images[0].parent)])
    assert [s.kind for s in sources] == ["image"] * len(val_images)
    with OrtRunner(paths[(128, 256)]) as runner:
        summary = run(sources, runner, InferConfig(str(tmp_path)), report=lambda message: None)
        assert len(summary["images"]) == len(val_images)
        for source in sources:
            mask = read_image(str(tmp_path / (source.name + "_mask.png")))
            colours = {tuple(c) for c in mask.reshape(-1, 3)}
            assert colours <= {tuple(c) for c in CITYSCAPES_PALETTE}
            classes, _ = runner.predict(read_image(source.location)[None])
            assert np.array_equal(mask, CITYSCAPES_PALETTE[classes[0]])
            assert (tmp_path / (source.name + "_overlay.png")).is_file()


def test_video_gives_an_overlay_video_with_every_frame(exported, val_images, tmp_path):
    _, paths = exported
    frames = [read_image(str(p)) for p in val_images] * 2  # 12 frames
    write_video(tmp_path / "drive.mp4", frames)
    result = infer_cli(str(tmp_path / "drive.mp4"), "--onnx", str(paths[(128, 256)]), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert count_frames(tmp_path / "out" / "drive_overlay.mp4") == 12
    assert re.search(r"12 frames -> .* FPS end to end, [\d.]+ FPS compute", result.stdout)
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_interrupted_video_leaves_a_playable_file(exported, val_images, tmp_path):
    _, paths = exported
    frames = [read_image(str(p)) for p in val_images] * 50  # 300 frames
    write_video(tmp_path / "long.mp4", frames)
    process = subprocess.Popen([sys.executable, "-m", "sanet.cli", "infer", str(tmp_path / "long.mp4"), "--onnx",
                                str(paths[(128, 256)]), "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "long: 25 frames" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    written = count_frames(tmp_path / "out" / "long_overlay.mp4")
    assert 25 <= written < 300


def test_bad_inputs_are_one_line_errors(exported, tmp_path):
    _, paths = exported
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG not really")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    good = tmp_path / "good.png"
    write_png(str(good), np.zeros((128, 256, 3), np.uint8))
    onnx = ["--onnx", str(paths[(128, 256)])]
    for argv, message in (([str(corrupt)] + onnx, "cannot decode image"),
                          (["7"] + onnx, "camera 7 did not open"),
                          ([str(tmp_path / "nothing*.png")] + onnx, "input not found"),
                          ([str(good)] + onnx + ["-o", str(blocked / "sub")], "cannot create output directory"),
                          ([str(good), "--onnx", str(tmp_path / "missing.onnx")], "ONNX file not found"),
                          ([str(good)], "one of the arguments --engine --onnx --checkpoint is required")):
        result = infer_cli(*argv, *(["-o", str(tmp_path / "o")] if "-o" not in argv else []))
        assert result.returncode in (1, 2) and message in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr


def parse_pbtxt_tensors(text, kind):
    block = re.search(r"^{} \[(.*?)^\]".format(kind), text, re.S | re.M).group(1)
    return [(m.group(1), m.group(2), [int(d) for d in m.group(3).split(",")])
            for m in re.finditer(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([\d, ]+) \]', block)]


def test_triton_repository_matches_the_model_io(tmp_path, ort):
    result = subprocess.run([sys.executable, "-m", "sanet.cli", "export", "--random-init", "--res", "64", "128",
                             "--input", "uint8-nhwc", "--output", "argmax", "-o", str(tmp_path / "x"),
                             "--triton", str(tmp_path / "repo"), "--triton-max-batch", "4"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "repo" / "sanet_64x128"
    config = (model_dir / "config.pbtxt").read_text()
    onnx_path = model_dir / "1" / "model.onnx"
    inputs, outputs = io_signature(onnx_path)
    assert 'name: "sanet_64x128"' in config and 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 4" in config and "dynamic_batching" in config
    assert inputs[0][2][0] == "batch" and outputs[0][2][0] == "batch"
    types = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}
    assert parse_pbtxt_tensors(config, "input") == [(n, types[t], d[1:]) for n, t, d in inputs] == [
        ("images", "TYPE_UINT8", [64, 128, 3])]
    assert parse_pbtxt_tensors(config, "output") == [(n, types[t], d[1:]) for n, t, d in outputs] == [
        ("classes", "TYPE_UINT8", [64, 128])]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 256, (3, 64, 128, 3), dtype=np.uint8)
    assert session.run(None, {"images": batch})[0].shape == (3, 64, 128)  # dynamic batching really works


def test_dockerfiles_install_the_extras_the_readme_names():
    readme = (REPO / "README.md").read_text()
    docker_section = readme[readme.index("## Docker"):]
    named = re.search(r"sanet\[([a-z,]+)\]", docker_section).group(1).split(",")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for dockerfile in ("Dockerfile.l4t", "Dockerfile.x86"):
        text = (REPO / "docker" / dockerfile).read_text()
        if ".[{}]".format(",".join(named)) in text:
            continue
        for extra in named:
            for package in extras[extra]:
                assert '"{}=='.format(package) in text, (dockerfile, package)
