"""sanet-infer: colour-coded masks and overlays for images, videos, cameras and streams, on any runner.

Frames flow through three threads: a reader (decode + resize + ``runner.prepare``), the caller's
thread (``runner.infer``: the accelerator), and a writer (argmax, colouring, overlay, encoding), so
pre- and post-processing overlap inference and end-to-end FPS approaches compute FPS. Both are reported.
"""
import glob
import itertools
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .data import CAMVID_PALETTE, CITYSCAPES_PALETTE, IMAGE_EXTENSIONS, find_images, import_cv2, read_image, write_png
from .errors import SanetError
from .fileio import atomic_path, ensure_writable_dir
from .model import check_input_size
from .runners import activated

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
PALETTES = {"cityscapes": CITYSCAPES_PALETTE, "camvid": CAMVID_PALETTE}
_DONE = object()


@dataclass
class InferConfig:
    out: str
    size: Optional[Tuple[int, int]] = None  # network input (H, W); default: the runner's, else the frame's
    palette: str = "auto"
    alpha: float = 0.5  # overlay opacity of the mask
    max_frames: Optional[int] = None  # per video/stream; None = until it ends
    progress_every: int = 25


@dataclass
class Source:
    kind: str  # "image", "video", "camera", "stream"
    location: str
    name: str = ""  # output stem relative to the output folder (may contain "/"); unique within one run

    def __post_init__(self):
        self.name = self.name or default_name(self.kind, self.location)


def default_name(kind, location):
    """Output stem for a source given on its own: the file stem, cameraN, or the stream's host and path."""
    if kind == "camera":
        return "camera{}".format(location)
    if kind == "stream":
        address = location.split("://", 1)[1].split("@")[-1]  # never put credentials into a file name
        return "stream_" + (re.sub(r"[^A-Za-z0-9.-]+", "_", address).strip("_") or "0")
    return os.path.splitext(os.path.basename(location))[0]


def _glob_base(pattern):
    """The folder part of a glob before its first wildcard: matches are named relative to it."""
    parts = []
    for part in pattern.replace(os.sep, "/").split("/")[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return "/".join(parts) or "."


def _relative_stem(path, base):
    """'root/a/x.png' below 'root' -> 'a/x' (a/x.png and b/x.png must not share an output name)."""
    relative = os.path.relpath(path, base)
    return os.path.splitext(relative)[0].replace(os.sep, "/")


def expand_inputs(inputs: List[str]) -> List[Source]:
    """Files, folders (recursively, label folders skipped), globs, camera indices and stream URLs -> sources,
    in a stable order, each with an output name no other source of the run shares."""
    sources = []
    for item in inputs:
        if item.isdigit():
            sources.append(Source("camera", item))
        elif item.startswith(STREAM_PREFIXES):
            sources.append(Source("stream", item))
        elif os.path.isdir(item):
            found = find_images(item, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            sources.extend(_file_source(path, _relative_stem(path, item)) for path in found)
        elif os.path.isfile(item):
            if not _is_media(item):
                raise SanetError("{} is neither an image ({}) nor a video ({})".format(
                    item, " ".join(IMAGE_EXTENSIONS), " ".join(VIDEO_EXTENSIONS)))
            sources.append(_file_source(item))
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True) if _is_media(m) and os.path.isfile(m))
            if not matches:
                raise SanetError("input not found: {} (give image/video files, folders, globs, a camera index or "
                                 "an rtsp:// URL)".format(item))
            sources.extend(_file_source(m, _relative_stem(m, _glob_base(item))) for m in matches)
    if not sources:
        raise SanetError("no images or videos found in {} (looked in subfolders too; label folders such as gtFine "
                         "are skipped)".format(" ".join(inputs)))
    return _unique_names(sources)


def _unique_names(sources):
    """Suffix repeated output names (_2, _3, ...): the same file, camera or stream given twice, or equal stems."""
    taken, unique = set(), []
    for source in sources:
        name, number = source.name, 1
        while name in taken:
            number += 1
            name = "{}_{}".format(source.name, number)
        taken.add(name)
        unique.append(Source(source.kind, source.location, name))
    return unique


def _is_media(name):
    return name.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)


def _file_source(path, name=""):
    return Source("video" if path.lower().endswith(VIDEO_EXTENSIONS) else "image", path, name)


def palette_for(name, num_classes):
    if name == "auto":
        name = "camvid" if num_classes == len(CAMVID_PALETTE) else "cityscapes"
    if name not in PALETTES:
        raise SanetError("unknown palette {!r}: use cityscapes, camvid or auto".format(name))
    palette = PALETTES[name]
    if num_classes > len(palette):
        raise SanetError("the {} palette has {} colours but the model predicts {} classes".format(name, len(palette), num_classes))
    return palette


def overlay(image, mask_rgb, alpha):
    blended = image.astype(np.float32) * (1.0 - alpha) + mask_rgb.astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


class Segmenter:
    """Resize a frame to the network size, run the runner, and map classes back to the frame size."""

    def __init__(self, runner, config: InferConfig):
        self.runner, self.config = runner, config
        self.palette = palette_for(config.palette, runner.info.num_classes)
        self.size = tuple(runner.info.input_size or config.size or ()) or None
        if config.size and runner.info.input_size and tuple(config.size) != tuple(runner.info.input_size):
            raise SanetError("--size {}x{} differs from the model's fixed {}x{}: drop --size or re-export".format(
                config.size[0], config.size[1], *runner.info.input_size))
        self.compute_seconds = 0.0

    def network_size(self, frame_shape):
        if self.size:
            return self.size
        # Any size a multiple of 8 works for PyTorch; round the frame down to one.
        height, width = (max(32, v // 8 * 8) for v in frame_shape[:2])
        check_input_size(height, width)
        return height, width

    def prepare(self, frame):
        """uint8 RGB frame -> (runner input batch, frame)."""
        cv2 = import_cv2()
        height, width = self.network_size(frame.shape)
        resized = frame if frame.shape[:2] == (height, width) else cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        return self.runner.prepare(resized[None]), frame

    def infer(self, prepared):
        start = time.perf_counter()
        outputs = self.runner.infer(prepared)
        self.compute_seconds += time.perf_counter() - start
        return outputs

    def finish(self, outputs, frame):
        """Runner outputs -> (classes (H, W) uint8 at frame size, colour mask, overlay)."""
        cv2 = import_cv2()
        classes = outputs[0] if self.runner.info.output == "argmax" else outputs[0].argmax(axis=0)
        classes = classes.astype(np.uint8)
        if classes.shape != frame.shape[:2]:
            classes = cv2.resize(classes, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
        mask = self.palette[classes]
        return classes, mask, overlay(frame, mask, self.config.alpha)


def _pipeline(frames, segmenter, consume, depth=4):
    """Run reader -> inference -> writer threads; returns frames processed. Ctrl-C drains and stops cleanly."""
    prepared_queue, finished_queue = queue.Queue(depth), queue.Queue(depth)
    stop, errors = threading.Event(), []

    def read():
        try:
            for frame in frames:
                if stop.is_set():
                    break
                prepared_queue.put(segmenter.prepare(frame))
        except Exception as exc:  # reported in the main thread after the pipeline drains
            errors.append(exc)
        prepared_queue.put(_DONE)

    def write():
        while True:
            item = finished_queue.get()
            if item is _DONE:
                return
            try:
                consume(*segmenter.finish(*item), frame=item[1])
            except Exception as exc:
                errors.append(exc)
                stop.set()

    reader, writer = threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)
    reader.start()
    writer.start()
    count = 0
    try:
        while True:
            item = prepared_queue.get()
            if item is _DONE or stop.is_set():
                break
            finished_queue.put((segmenter.infer(item[0]), item[1]))
            count += 1
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                prepared_queue.get_nowait()
            except queue.Empty:
                time.sleep(0.01)
        finished_queue.put(_DONE)
        writer.join()
    if errors:
        raise errors[0]
    return count


def run_images(sources, segmenter, out, report=print, progress_every=25):
    """Masks ``NAME_mask.png``, overlays ``NAME_overlay.png`` and class maps ``NAME_classes.png``, where NAME
    mirrors the input's path below the folder given; reports progress and FPS every ``progress_every`` images."""
    written = []
    names = iter([s.name for s in sources])
    start = time.perf_counter()

    def frames():
        for source in sources:
            yield read_image(source.location)

    def consume(classes, mask, blended, frame):
        name = next(names)
        write_png(os.path.join(out, name + "_mask.png"), mask)
        write_png(os.path.join(out, name + "_overlay.png"), blended)
        write_png(os.path.join(out, name + "_classes.png"), classes)
        written.append(name)
        if progress_every and len(written) % progress_every == 0 and len(written) < len(sources):
            report("images: {}/{} ({:.1f} FPS)".format(len(written), len(sources), len(written) / _elapsed(start)))

    count = _pipeline(frames(), segmenter, consume)
    report("{} image(s) -> {} ({:.1f} FPS end to end, {:.1f} FPS compute)".format(
        count, out, count / _elapsed(start), count / max(segmenter.compute_seconds, 1e-9)))
    return written


def _elapsed(start):
    return max(time.perf_counter() - start, 1e-9)


def open_capture(source):
    cv2 = import_cv2()
    capture = cv2.VideoCapture(int(source.location) if source.kind == "camera" else source.location)
    if not capture.isOpened():
        what = {"camera": "camera {} did not open (check the index, the cable and permissions)",
                "stream": "stream {} did not open (check the URL and the network)",
                "video": "cannot read video {} (missing, corrupt or an unsupported codec)"}[source.kind]
        raise SanetError(what.format(source.location))
    return capture


def run_video(source, segmenter, out, config: InferConfig, report=print):
    """One video/camera/stream -> ``NAME_overlay.mp4`` with an FPS overlay; returns (frames, e2e fps, compute fps).

    The file is written under a temporary name and renamed when the run ends, also on Ctrl-C, so an
    interrupted run still leaves a complete, playable video of the frames processed so far.
    """
    cv2 = import_cv2()
    capture = open_capture(source)
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps_in = fps_in if 1.0 <= fps_in <= 240.0 else 30.0
    path = os.path.join(out, source.name + "_overlay.mp4")
    state = {"writer": None, "written": 0, "start": time.perf_counter()}

    def frames():
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(frame[:, :, ::-1])

    def consume(classes, mask, blended, frame):
        if state["writer"] is None:
            state["writer"] = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (frame.shape[1], frame.shape[0]))
            if not state["writer"].isOpened():
                raise SanetError("cannot write video {}: OpenCV has no mp4v encoder here".format(path))
        state["written"] += 1
        fps = state["written"] / max(1e-9, time.perf_counter() - state["start"])
        bgr = np.ascontiguousarray(blended[:, :, ::-1])
        cv2.putText(bgr, "{:.1f} FPS".format(fps), (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        state["writer"].write(bgr)
        if state["written"] % config.progress_every == 0:
            report("{}: {} frames".format(source.name, state["written"]))

    interrupted = False
    with atomic_path(path) as tmp:
        try:
            count = _pipeline(itertools.islice(frames(), config.max_frames), segmenter, consume)
        except KeyboardInterrupt:
            interrupted, count = True, state["written"]
        finally:
            capture.release()
            if state["writer"] is not None:
                state["writer"].release()  # finalises the container: the file plays even after Ctrl-C
        if state["writer"] is None:
            raise SanetError("{} produced no frames".format(source.location))
    seconds = time.perf_counter() - state["start"]
    e2e = count / max(seconds, 1e-9)
    compute = count / max(segmenter.compute_seconds, 1e-9)
    report("{}: {} frames -> {} ({:.1f} FPS end to end, {:.1f} FPS compute){}".format(
        source.name, count, path, e2e, compute, " (interrupted)" if interrupted else ""))
    if interrupted:
        raise KeyboardInterrupt
    return count, e2e, compute


def run(sources, runner, config: InferConfig, report=print):
    """Process every source with ``runner``; returns a summary dict."""
    ensure_writable_dir(config.out)
    segmenter = Segmenter(runner, config)
    images = [s for s in sources if s.kind == "image"]
    summary = {"images": [], "videos": {}}
    with activated(runner):
        if images:
            summary["images"] = run_images(images, segmenter, config.out, report, config.progress_every)
        for source in sources:
            if source.kind != "image":
                segmenter.compute_seconds = 0.0
                summary["videos"][source.name] = run_video(source, segmenter, config.out, config, report)
    return summary
