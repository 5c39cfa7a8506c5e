"""The PTQ table of docs/int8.md: every post-training INT8 route a TensorRT user gets, judged against PyTorch FP32 on
real labelled frames (delta mIoU, pixel agreement, per-class delta IoU), written as one markdown table.

    python docs/ptq_table.py CHECKPOINT [--data ../shared/data/camvid] [--res 360 480 --res 720 960]
        [--calib-count 64] [--limit N] [--rows ROW ...] [-o TABLE.md] [--work DIR]

Rows per resolution (``--rows`` picks some):
  fp16                      FP16 emulated (sanet.numerics.EmulatedRunner): every tensor rounded to half precision
  qdq-int8-{minmax,entropy,percentile}   Q/DQ ONNX (sanet-export --qdq): what TensorRT 10/11 build, int8 activations
  qdq-uint8-{...}           the same with uint8 activations (ONNX Runtime's x86 fast path; not for TensorRT)
  classic-{entropy,minmax}  TensorRT 8.5's classic calibrators (Xavier's route) emulated: calibration.classic_qdq
  classic-entropy-keep      classic entropy with the convolutions that read tiny tensors (fewer than --tiny values
                            per frame) in float, as sanet-export --int8 --int8-keep GROUP... pins them to FP16

Frames are resized to each resolution for the network (CamVid's 360x480 frames are upscaled 2x for 720x960) and
class maps are compared at the network's size (agreement) and at the labels' size (mIoU), as sanet-parity does.
Calibration: --calib-count random crops (seed 0) of DATA/train at the network's size, the same for every route;
ranges are cached in --work, so a re-run only re-judges. The caption holds the exact command.
"""
import argparse
import math
import os
import shlex
import sys
import time
import warnings

import onnx

from sanet.calibration import CLASSIC_METHODS, METHODS, CropConfig, QuantizeConfig, classic_plan, classic_qdq, plan_crops, quantize_qdq
from sanet.checkpoints import load_model
from sanet.data import open_dataset
from sanet.evaluate import evaluate
from sanet.export import ExportConfig, export_onnx
from sanet.fileio import sha256_file, write_text_atomic
from sanet.numerics import EmulatedRunner
from sanet.parity import Budget, MemoRunner, compare
from sanet.runners import OrtRunner, TorchRunner

# The deployment goal: INT8 within 0.3 pt mIoU and >= 98.5 % pixel agreement of FP32; FP16 within 0.1 pt.
GOALS = {"int8": Budget(min_pixel_agreement=0.985, max_delta_miou=0.003), "fp16": Budget(max_delta_miou=0.001)}
ROWS = (["fp16"] + ["qdq-{}-{}".format(a, m) for a in ("int8", "uint8") for m in METHODS]
        + ["classic-{}".format(m) for m in CLASSIC_METHODS] + ["classic-entropy-keep"])


def tiny_groups(proto, plan, limit):
    """Module paths of the INT8 convolutions whose data input holds fewer than ``limit`` values per frame: their
    histograms are too sparse for the entropy calibrator, and INT8 saves nothing on them."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    sizes = {value.name: math.prod(d.dim_value for d in value.type.tensor_type.shape.dim)
             for value in list(inferred.value_info) + list(inferred.input)}
    groups = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1] in plan.weights and 0 < sizes.get(node.input[0], 0) < limit:
            groups.append(".".join(node.name.split("/")[2:-1]))  # /model/sff2/conv_2/Conv -> sff2.conv_2
    return groups


def candidate(row, source, manifest, work, keep, report):
    """(runner, calibration seconds) for one row at the resolution of ``source``."""
    started = time.perf_counter()
    if row == "fp16":
        return EmulatedRunner(source, "fp16"), 0.0
    stem = os.path.join(work, "{}_{}".format(os.path.splitext(os.path.basename(source))[0], row))
    if row.startswith("qdq-"):
        _, activations, method = row.split("-")
        path = quantize_qdq(source, stem + ".onnx", manifest, QuantizeConfig(method=method, activations=activations),
                            cache_dir=work, report=report)
        return OrtRunner(path), time.perf_counter() - started
    method = row.split("-")[1]
    path = classic_qdq(source, stem + ".onnx", manifest, method, keep if row.endswith("-keep") else (), cache_dir=work,
                       report=report)
    return EmulatedRunner(path, "int8"), time.perf_counter() - started


def pct(value, signed=False):
    return "-" if value is None else ("{:+.2f}" if signed else "{:.2f}").format(100 * value)


def add_table_arguments(parser, name):
    """The flags this table and docs/qat_table.py share: data, sizes, calibration crops, frames, output."""
    parser.add_argument("--data", default="../shared/data/camvid", help="CamVid root (train/ for crops, val/ to judge)")
    parser.add_argument("--res", nargs=2, type=int, action="append", metavar=("H", "W"))
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--limit", type=int, help="judge on the first N val frames only (quick runs)")
    parser.add_argument("-o", "--out", help="markdown file (default: WORK/{}.md)".format(name))
    parser.add_argument("--work", default="/tmp/sanet-" + name.replace("_", "-"), help="exports, quantized files, range caches")


def progress(begun):
    """A report function for the tools (timestamped lines on stderr; calibration progress every 16th batch only)."""
    def say(text):
        if "crop batch" in text and int(text.rsplit(" ", 1)[1]) % 16:
            return
        print("[{:7.0f} s] {}".format(time.perf_counter() - begun, text), file=sys.stderr, flush=True)

    return say


def table_setup(args):
    """The resolutions to judge (default: CamVid's 360x480 and the paper's 720x960); quiet tools; the work folder."""
    warnings.simplefilter("ignore")  # ONNX Runtime's quantizer and the exporter are chatty
    os.makedirs(args.work, exist_ok=True)
    return [tuple(r) for r in args.res] if args.res else [(360, 480), (720, 960)]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    parser.add_argument("--tiny", type=int, default=1024, help="classic-entropy-keep: float convs reading fewer values")
    add_table_arguments(parser, "ptq_table")
    args = parser.parse_args(argv)
    resolutions = table_setup(args)
    model, source_hash = load_model(args.checkpoint), sha256_file(args.checkpoint)
    val = open_dataset(args.data, "camvid", "val")
    frames = len(val) if args.limit is None else min(args.limit, len(val))
    classes = list(val.class_names)
    begun = time.perf_counter()
    say = progress(begun)
    header = ["res", "route", "act.", "method", "mIoU %", "Δ mIoU pt", "pixel agr. %", "goal"] + classes + ["calib s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for height, width in resolutions:
        source = os.path.join(args.work, "fp32_{}x{}.onnx".format(height, width))
        export_onnx(model, source, ExportConfig(height, width), source_sha256=source_hash)
        manifest = plan_crops(os.path.join(args.data, "train"), CropConfig(height, width, count=args.calib_count))
        proto = onnx.load(source)
        keep = tiny_groups(proto, classic_plan(proto), args.tiny)
        reference = MemoRunner(TorchRunner(model))
        size = "{}x{}".format(height, width)
        for row in args.rows:
            runner, calib_seconds = candidate(row, source, manifest, args.work, keep, say)
            precision = "fp16" if row == "fp16" else "int8"
            started = time.perf_counter()
            with runner:
                result = compare(reference, runner, val, limit=args.limit, budget=GOALS[precision], progress=False)
            say("{} {}: pixel agreement {:.4%}, delta mIoU {:+.3f} pt ({:.0f} s)".format(
                size, row, result.pixel_agreement, 100 * result.delta_miou, time.perf_counter() - started))
            if row == args.rows[0]:  # the reference's own IoUs, from the class maps the comparison cached
                own = evaluate(reference, val, size=(height, width), limit=args.limit, progress=False)
                lines.append("| {} | PyTorch FP32 (reference) | | | {} | | | | {} | |".format(
                    size, pct(own["miou"]), " | ".join(pct(entry["iou"]) for entry in own["per_class_iou"])))
            route, activations, method = _describe(row, keep)
            verdict = "PASS" if result.passed else "miss"
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                size, route, activations, method, pct(result.miou_candidate), pct(result.delta_miou, True),
                "{:.2f}".format(100 * result.pixel_agreement), verdict,
                " | ".join(pct(result.per_class_delta_iou.get(name), True) for name in classes),
                "{:.0f}".format(calib_seconds) if calib_seconds else "-"))
        if "classic-entropy-keep" in args.rows:
            notes.append("classic-entropy-keep at {}: float convolutions {}".format(size, ", ".join(keep)))
    command = "python docs/ptq_table.py " + " ".join(shlex.quote(a) for a in argv)
    caption = ("**PTQ on CamVid val** ({} frames; calibration: {} random crops of CamVid train at the network's size). "
               "Reference rows: PyTorch FP32 mIoU and per-class IoU (%); other rows: their value minus the reference's "
               "(pt). goal: INT8 |Δ mIoU| <= 0.3 pt and pixel agreement >= 98.5 %, FP16 |Δ mIoU| <= 0.1 pt. "
               "Made by `{}` ({:.0f} min).".format(frames, args.calib_count, command, (time.perf_counter() - begun) / 60))
    text = "\n".join([caption, ""] + lines + [""] + ["- " + note for note in notes]) + "\n"
    write_text_atomic(args.out or os.path.join(args.work, "ptq_table.md"), text)
    print(text)


def _describe(row, keep):
    if row == "fp16":
        return "FP16 (emulated)", "", ""
    if row.startswith("qdq-"):
        _, activations, method = row.split("-")
        return "Q/DQ ONNX (TensorRT 10/11)" if activations == "int8" else "Q/DQ ONNX (ONNX Runtime x86)", activations, method
    method = row.split("-")[1]
    route = "classic, TensorRT 8.5 (emulated)"
    return (route + (", tiny convs in float" if row.endswith("-keep") else "")), "int8", method


if __name__ == "__main__":
    main(sys.argv[1:])
