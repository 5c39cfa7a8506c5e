"""The QAT table of docs/qat.md: INT8 from quantization-aware training next to the PTQ routes, judged as
docs/ptq_table.py judges PTQ (against PyTorch FP32 of the model being quantized, on real labelled frames), one
markdown table.

    python docs/qat_table.py FP32_CHECKPOINT --qat NAME=QAT.safetensors ... [--modelopt-ptq CONFIG [KEY=VALUE ...]]
        [--ptq minmax entropy classic-entropy] [--data ../shared/data/camvid] [--res 360 480 --res 720 960]
        [--calib-count 64] [--limit N] [--twins] [-o TABLE.md] [--work DIR]

Rows per resolution:
  PyTorch FP32              the reference: FP32_CHECKPOINT (the model QAT started from)
  PTQ <method>              sanet-export --qdq (calibration.quantize_qdq, int8 activations; minmax/entropy/percentile)
                            or classic-<method>: TensorRT 8.5's calibrator emulated (calibration.classic_qdq); both on
                            --calib-count random crops (seed 0) of DATA/train at the network's size
  Model Optimizer PTQ       --modelopt-ptq: QAT's own quantizers and calibration (the Trainer of CONFIG builds and
                            calibrates them) with no fine-tuning: the same Q/DQ placement as QAT, so the difference to a
                            QAT row is the fine-tuning alone
  QAT <name>                the Q/DQ ONNX of a QAT checkpoint, written from its ranges (sanet.qat.write_qdq, what
                            sanet-export --qdq does for it)
  <name> FP32 weights       --twins: the QAT checkpoint run in PyTorch FP32 (no quantization): what fine-tuning alone
                            changed
Every candidate is compared with the reference on the same frames (CamVid's 360x480 frames upscaled 2x for 720x960):
pixel agreement at the network's size, mIoU at the labels' size, as sanet-parity does. The caption holds the command.
"""
import argparse
import os
import shlex
import sys
import time

from ptq_table import add_table_arguments, pct, progress, table_setup  # docs/ is the script's folder, first on sys.path

from sanet.calibration import CropConfig, QuantizeConfig, classic_qdq, plan_crops, quantize_qdq
from sanet.checkpoints import load_model
from sanet.data import open_dataset
from sanet.evaluate import evaluate
from sanet.export import ExportConfig, export_onnx
from sanet.fileio import sha256_file, write_text_atomic
from sanet.numerics import EmulatedRunner
from sanet.parity import Budget, MemoRunner, compare
from sanet.qat import read_ranges, save_qat_checkpoint, write_qdq
from sanet.runners import OrtRunner, TorchRunner

# the INT8 deployment goal (as docs/ptq_table.py): within 0.3 pt mIoU and >= 98.5 % pixel agreement of FP32
GOAL = Budget(min_pixel_agreement=0.985, max_delta_miou=0.003)
PTQ_ROWS = ("minmax", "entropy", "percentile", "classic-entropy", "classic-minmax")


def modelopt_ptq(config_path, overrides, out):
    """Model Optimizer PTQ: the Trainer of a QAT config quantizes and calibrates its init model exactly as QAT starts;
    its weights are saved before any step, with the ranges (a QAT checkpoint with zero fine-tuning)."""
    from sanet.train import TrainConfig, Trainer

    config = TrainConfig.load(config_path, list(overrides) + ["out=" + os.path.dirname(out)])
    if not config.qat:
        raise SystemExit("--modelopt-ptq needs a QAT config (qat: true)")
    trainer = Trainer(config)
    save_qat_checkpoint(out, trainer.model, {"init_sha256": sha256_file(config.init), "fine_tuned": False})
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the FP32 model (the reference; what QAT started from)")
    parser.add_argument("--qat", nargs="+", default=[], metavar="NAME=CHECKPOINT", help="QAT checkpoints (sanet-train qat: true)")
    parser.add_argument("--modelopt-ptq", nargs="+", metavar="CONFIG [KEY=VALUE]", help="a QAT config (+ overrides) whose "
                        "calibration, without fine-tuning, makes the Model Optimizer PTQ row")
    parser.add_argument("--ptq", nargs="*", choices=PTQ_ROWS, default=["minmax", "entropy", "classic-entropy"])
    parser.add_argument("--twins", action="store_true", help="add each QAT checkpoint's FP32 weights as a row")
    add_table_arguments(parser, "qat_table")
    args = parser.parse_args(argv)
    resolutions = table_setup(args)
    begun = time.perf_counter()
    say = progress(begun)
    model = load_model(args.checkpoint)
    qat = [tuple(item.split("=", 1)) for item in args.qat]
    if args.modelopt_ptq:
        path = os.path.join(args.work, "modelopt_ptq", "calibrated.safetensors")
        say("Model Optimizer PTQ: calibrating as {} does ...".format(args.modelopt_ptq[0]))
        qat.insert(0, ("Model Optimizer PTQ", modelopt_ptq(args.modelopt_ptq[0], args.modelopt_ptq[1:], path)))
    val = open_dataset(args.data, "camvid", "val")
    frames = len(val) if args.limit is None else min(args.limit, len(val))
    classes = list(val.class_names)
    hashes = {path: sha256_file(path) for path in [args.checkpoint] + [path for _, path in qat]}  # once, not per size
    header = ["res", "INT8 from", "mIoU %", "Δ mIoU pt", "pixel agr. %", "goal"] + classes + ["s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for height, width in resolutions:
        size = "{}x{}".format(height, width)
        source = os.path.join(args.work, "fp32_{}.onnx".format(size))
        export_onnx(model, source, ExportConfig(height, width), source_sha256=hashes[args.checkpoint])
        reference = MemoRunner(TorchRunner(model))
        own = None
        rows = []
        if args.ptq:
            manifest = plan_crops(os.path.join(args.data, "train"), CropConfig(height, width, count=args.calib_count))
        for method in args.ptq:
            started = time.perf_counter()
            target = os.path.join(args.work, "ptq_{}_{}.onnx".format(size, method))
            if method.startswith("classic-"):
                runner = EmulatedRunner(classic_qdq(source, target, manifest, method.split("-")[1], cache_dir=args.work,
                                                    report=say), "int8")
                label = "PTQ, TensorRT 8.5 classic calibrator ({}, emulated)".format(method.split("-")[1])
            else:
                runner = OrtRunner(quantize_qdq(source, target, manifest, QuantizeConfig(method=method), cache_dir=args.work,
                                                report=say))
                label = "PTQ, Q/DQ ONNX ({})".format(method)
            rows.append((label, runner, started))
        for name, path in qat:
            started = time.perf_counter()
            qat_model = load_model(path)
            exported = os.path.join(args.work, "qat_{}_{}_fp32.onnx".format(name.replace(" ", "_"), size))
            export_onnx(qat_model, exported, ExportConfig(height, width), source_sha256=hashes[path])
            target = exported.replace("_fp32.onnx", "_int8_qdq.onnx")
            label = name if name == "Model Optimizer PTQ" else "QAT {}".format(name)
            rows.append((label, OrtRunner(write_qdq(exported, target, qat_model, read_ranges(path))), started))
            if args.twins:
                rows.append(("{}: its FP32 weights (not quantized)".format(label), TorchRunner(qat_model), time.perf_counter()))
        for label, runner, started in rows:
            with runner:
                result = compare(reference, runner, val, size=(height, width), limit=args.limit, budget=GOAL, progress=False)
            say("{} {}: pixel agreement {:.4%}, delta mIoU {:+.3f} pt ({:.0f} s)".format(
                size, label, result.pixel_agreement, 100 * result.delta_miou, time.perf_counter() - started))
            if own is None:  # the reference's own IoUs, from the class maps the comparison cached
                own = evaluate(reference, val, size=(height, width), limit=args.limit, progress=False)
                lines.append("| {} | PyTorch FP32 (reference) | {} | | | | {} | |".format(
                    size, pct(own["miou"]), " | ".join(pct(entry["iou"]) for entry in own["per_class_iou"])))
            lines.append("| {} | {} | {} | {} | {:.2f} | {} | {} | {:.0f} |".format(
                size, label, pct(result.miou_candidate), pct(result.delta_miou, True), 100 * result.pixel_agreement,
                "PASS" if result.passed else "miss", " | ".join(pct(result.per_class_delta_iou.get(c), True) for c in classes),
                time.perf_counter() - started))
    command = "python docs/qat_table.py " + " ".join(shlex.quote(a) for a in argv)
    caption = ("**QAT vs PTQ on CamVid val** ({} frames; PTQ calibration: {} random crops of CamVid train at the "
               "network's size). Reference rows: PyTorch FP32 mIoU and per-class IoU (%); other rows: their value minus "
               "the reference's (pt); s: wall seconds of the row (calibration or export, and judging). goal: |Δ mIoU| <= "
               "0.3 pt and pixel agreement >= 98.5 %. Made by `{}` ({:.0f} min).".format(
                   frames, args.calib_count, command, (time.perf_counter() - begun) / 60))
    text = "\n".join([caption, ""] + lines) + "\n"
    write_text_atomic(args.out or os.path.join(args.work, "qat_table.md"), text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
