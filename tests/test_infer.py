"""sanet-infer on images and videos through ONNX Runtime, the Triton repository export, and the Docker images."""
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from sanet.data import CITYSCAPES_PALETTE, import_cv2, read_image, write_png
from sanet.errors import SanetError
from sanet.export import io_signature
from sanet.infer import InferConfig, expand_inputs, run
from sanet.model import build_model
from sanet.runners import OrtRunner, TorchRunner


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


def write_cityscapes_tree(root, cities=("a", "b")):
    """Same-named frames in two cities plus label folders that must never be taken for frames."""
    cv2 = import_cv2()
    rng = np.random.default_rng(0)
    for city in cities:
        for folder, name in (("leftImg8bit", "x_leftImg8bit.png"), ("gtFine", "x_gtFine_labelIds.png")):
            (root / folder / "val" / city).mkdir(parents=True)
            assert cv2.imwrite(str(root / folder / "val" / city / name), rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    for folder in ("valannot", "labels"):
        (root / folder).mkdir()
        assert cv2.imwrite(str(root / folder / "y.png"), np.zeros((64, 128), np.uint8))
    (root / "leftImg8bit" / "val" / "a" / ".tmp-half.png").write_bytes(b"interrupted write")


def test_folder_walks_subfolders_skips_labels_and_mirrors_paths(tmp_path):
    root = tmp_path / "cityscapes"
    write_cityscapes_tree(root)
    sources = expand_inputs([str(root)])
    assert [(s.kind, s.name) for s in sources] == [("image", "leftImg8bit/val/a/x_leftImg8bit"),
                                                   ("image", "leftImg8bit/val/b/x_leftImg8bit")]
    globbed = expand_inputs([str(root / "leftImg8bit" / "val" / "*" / "*.png")])
    assert [s.name for s in globbed] == ["a/x_leftImg8bit", "b/x_leftImg8bit"]
    explicit = expand_inputs([str(root / "leftImg8bit" / "val" / c / "x_leftImg8bit.png") for c in "ab"])
    assert [s.name for s in explicit] == ["x_leftImg8bit", "x_leftImg8bit_2"]
    messages = []
    model = build_model("sanet-tiny", 19, aux_head=False)
    with TorchRunner(model) as runner:
        summary = run(sources, runner, InferConfig(str(tmp_path / "out"), progress_every=1), report=messages.append)
    assert summary["images"] == [s.name for s in sources]
    for source in sources:
        for kind in ("mask", "overlay", "classes"):
            assert (tmp_path / "out" / (source.name + "_" + kind + ".png")).is_file()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == sorted(
        "x_leftImg8bit_{}.png".format(k) for k in ("mask", "overlay", "classes") for _ in "ab")
    assert re.fullmatch(r"images: 1/2 \([\d.]+ FPS\)", messages[0]), messages
    assert re.fullmatch(r"2 image\(s\) -> .* \([\d.]+ FPS end to end, [\d.]+ FPS compute\)", messages[-1]), messages
    (tmp_path / "empty" / "gtFine").mkdir(parents=True)
    with pytest.raises(SanetError, match="no images or videos found"):
        expand_inputs([str(tmp_path / "empty")])


def test_cli_on_a_cityscapes_root_writes_every_frame(exported, tmp_path):
    _, paths = exported
    root = tmp_path / "cityscapes"
    write_cityscapes_tree(root)
    result = infer_cli(str(root), "--onnx", str(paths[(128, 256)]), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for city in "ab":
        assert (tmp_path / "out" / "leftImg8bit" / "val" / city / "x_leftImg8bit_mask.png").is_file()
    assert "2 image(s) ->" in result.stdout and "FPS end to end" in result.stdout
    assert not list((tmp_path / "out").rglob(".tmp-*"))


def test_cameras_and_streams_get_distinct_names_without_credentials():
    sources = expand_inputs(["0", "0", "1", "rtsp://user:secret@cam1.local:554/live", "rtsp://cam2.local/live",
                             "rtsp://cam2.local/live"])
    names = [s.name for s in sources]
    assert names == ["camera0", "camera0_2", "camera1", "stream_cam1.local_554_live", "stream_cam2.local_live",
                     "stream_cam2.local_live_2"]
    assert [s.kind for s in sources] == ["camera"] * 3 + ["stream"] * 3
    assert sources[3].location == "rtsp://user:secret@cam1.local:554/live"


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
    # SIGINT restored to its default in the child: a shell that starts CI in the background makes it ignored, and
    # Python then installs no KeyboardInterrupt handler.
    process = subprocess.Popen([sys.executable, "-m", "sanet.cli", "infer", str(tmp_path / "long.mp4"), "--onnx",
                                str(paths[(128, 256)]), "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:
        if "long: 25 frames" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    written = count_frames(tmp_path / "out" / "long_overlay.mp4")
    assert 25 <= written < 300


def test_bad_inputs_are_one_line_errors(exported, tmp_path, sanet_cli):
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
                          ([str(good), "--onnx", str(tmp_path / "missing.onnx")], "ONNX file not found")):
        result = sanet_cli("infer", *argv, *(["-o", tmp_path / "o"] if "-o" not in argv else []))
        assert result.returncode in (1, 2) and message in result.stderr, argv


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
    types = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "int32": "TYPE_INT32"}
    assert parse_pbtxt_tensors(config, "input") == [(n, types[t], d[1:]) for n, t, d in inputs] == [
        ("images", "TYPE_UINT8", [64, 128, 3])]
    assert parse_pbtxt_tensors(config, "output") == [(n, types[t], d[1:]) for n, t, d in outputs] == [
        ("classes", "TYPE_INT32", [64, 128])]  # TensorRT's ArgMax yields INT32 on every release
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 256, (3, 64, 128, 3), dtype=np.uint8)
    assert session.run(None, {"images": batch})[0].shape == (3, 64, 128)  # dynamic batching really works


DOCKER_GUIDES = {"Dockerfile.l4t": "jetson.md", "Dockerfile.x86": "inference.md"}  # the guide that describes each image


def test_dockerfiles_install_the_extras_their_guides_name():
    # tomllib is Python 3.11+; the package supports 3.8, where tomli is the same parser.
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for dockerfile, guide in DOCKER_GUIDES.items():
        named = [group.split(",") for group in re.findall(r"sanet\[([a-z0-9,-]+)\]", (REPO / "docs" / guide).read_text())]
        assert named, "docs/{} names no sanet[...] extras for {}".format(guide, dockerfile)
        text = (REPO / "docker" / dockerfile).read_text()
        installed = re.search(r"\.\[([a-z0-9,-]+)\]", text)
        if installed:  # pip installs the extras: they must exist and be the ones the guide names
            assert installed.group(1).split(",") in named, (dockerfile, installed.group(1))
            assert all(extra in extras for extra in installed.group(1).split(",")), (dockerfile, installed.group(1))
            continue
        # --no-deps install (L4T: pip must not replace NVIDIA's torch): every package of the extras the guide names
        # first is pinned by hand instead.
        for extra in named[0]:
            for package in extras[extra]:
                assert '"{}=='.format(package) in text, (dockerfile, package)
