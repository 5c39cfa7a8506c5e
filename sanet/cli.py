"""Command-line entry points: each command composes the argument groups of ``sanet.args`` and calls one stage.
Every entry point goes through ``_run``: a SanetError (something the user can fix) is printed as one line without a
traceback and the process exits with status 1; Ctrl-C exits with 130. ``PARSERS`` builds each command's parser
(docs/cli.md is generated from them by docs/cli_reference.py)."""
import functools
import os
import sys

from . import args as groups
from .bench import BenchConfig
from .errors import SanetError

MODEL = groups.ModelSource(positional=True, random_init="never")
RUNNER = groups.RunnerSource(MODEL)
EVAL_RUNNER = groups.RunnerSource(groups.ModelSource(default_help="with --dataset camvid, the shipped real-CamVid SANet in sanet/weights/"),
                                  shipped_default=lambda args: "camvid" if args.dataset == "camvid" else None)
EXPORT_MODEL = groups.ModelSource(positional=True, random_init="flag")


def _run(main, argv):
    try:
        return main(argv) or 0
    except SystemExit as exc:  # argparse: usage error (2) or --help (0); returned so main() works in-process
        return exc.code if isinstance(exc.code, int) else 1
    except SanetError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _entry(main):
    def entry(argv=None):
        sys.exit(_run(main, sys.argv[1:] if argv is None else argv))

    entry.__doc__ = main.__doc__
    return entry


_say = functools.partial(print, flush=True)  # progress lines, shown as they happen


def print_table(headers, rows, out=None):
    """Plain aligned text table (on ``out``, default the current sys.stdout)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) if index and _numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _numeric(text):  # right-align plain numbers such as 12.5, -3, 99.9 % or 2.07x
    return text.rstrip("%x ").lstrip("+-").replace(".", "", 1).isdigit()


INFO_MODEL, SAVE_FP16 = groups.ModelSource(positional=True, random_init="default"), groups.SaveFp16()


def info_parser():
    return groups.parser("sanet-info", info_main.__doc__, [
        "sanet-info", "sanet-info --variant sanet-tiny --classes 11",
        "sanet-info runs/camvid-cpu/best.safetensors --save-fp16 sanet_camvid.safetensors"], INFO_MODEL, SAVE_FP16)


def info_main(argv):
    """sanet-info: variant, parameters and GFLOPs at the three benchmark resolutions."""
    from .constants import BENCH_RESOLUTIONS
    from .fileio import sha256_file
    from .model import count_gflops, count_parameters

    args = info_parser().parse_args(argv)
    SAVE_FP16.check(args)
    model, _ = INFO_MODEL.build(args)
    print("model: {} | classes: {} | source: {}".format(model.config.variant, model.config.num_classes,
                                                        args.checkpoint or "random init"))
    params = count_parameters(model)
    print_table(["input", "params (M)", "GFLOPs"], [["{}x{}".format(h, w), "{:.2f}".format(params / 1e6),
                                                     "{:.1f}".format(count_gflops(model, h, w))] for h, w in BENCH_RESOLUTIONS])
    if SAVE_FP16.build(args, model):
        print("wrote {} (fp16, no auxiliary head) sha256 {}".format(args.save_fp16, sha256_file(args.save_fp16)))


SYNTH = groups.SynthOptions()


def synth_parser():
    return groups.parser("sanet-synth", synth_main.__doc__, ["sanet-synth data/synth",
                                                             "sanet-synth data/tiny --size 128 256 --train 8 --val 2 --seed 1"], SYNTH)


def synth_main(argv):
    """sanet-synth: write procedural street scenes in the Cityscapes layout (labelIds)."""
    import time

    from .synth import generate_dataset

    args = synth_parser().parse_args(argv)
    config = SYNTH.build(args)
    start = time.perf_counter()
    written = generate_dataset(args.out, config)
    print("wrote {} frames ({}x{}) to {} in {:.1f} s".format(written, config.height, config.width, args.out,
                                                             time.perf_counter() - start))


EVAL_DATA = groups.Data(required=True, datasets=("cityscapes", "camvid"), require_labels=True)
EVAL, JSON = groups.EvalOptions(), groups.JsonReport()


def eval_parser():
    return groups.parser("sanet-eval", eval_main.__doc__, [
        "sanet-eval runs/synth/best.safetensors --data data/synth",
        "sanet-eval --onnx exports/sanet_1024x2048_b1.onnx --data data/cityscapes --json eval.json",
        "sanet-eval --engine exports/sanet_1024x2048_b1_fp16.plan --data data/cityscapes --limit 100"], EVAL_RUNNER, EVAL_DATA, EVAL, JSON)


def eval_main(argv):
    """sanet-eval: mIoU, per-class IoU and pixel accuracy of a checkpoint, ONNX or engine on a labelled split."""
    from .evaluate import evaluate
    from .fileio import write_json_atomic
    from .metrics import format_iou

    args = eval_parser().parse_args(argv)
    options, json_path = EVAL.build(args), JSON.build(args)
    if args.checkpoint and (args.onnx or args.engine or args.openvino):
        raise SanetError("give either a CHECKPOINT or --onnx/--engine/--openvino, not both")
    EVAL_RUNNER.check(args)
    dataset = EVAL_DATA.build(args)
    with EVAL_RUNNER.build(args) as runner:
        result = evaluate(runner, dataset, report=_say, **options)
    print_table(["class", "IoU %"], [[row["class"], format_iou(row["iou"])] for row in result["per_class_iou"]])
    print("mIoU {:.2f} %  pixel accuracy {:.2f} %  ({} images, {})".format(
        100 * result["miou"], 100 * result["pixel_accuracy"], result["images"], result["runner"]))
    if json_path:
        write_json_atomic(json_path, result)


TRAIN = groups.TrainOptions()


def train_parser():
    return groups.parser("sanet-train", train_main.__doc__, [
        "sanet-train --config configs/synthetic.yaml", "sanet-train --config configs/cityscapes.yaml epochs=10 batch_size=4",
        "sanet-train --config configs/cityscapes.yaml --resume runs/cityscapes/last.pt"], TRAIN)


def train_main(argv):
    """sanet-train: train SANet with the paper's recipe (torchrun for multi-GPU / multi-node)."""
    from .train import TrainConfig, plot_history, train

    args = train_parser().parse_args(argv)
    TRAIN.check(args)
    config = TrainConfig.load(args.config, args.overrides)
    trainer, history, seconds = train(config, args.resume)
    if trainer.is_main and history:
        try:
            plot_history(history, os.path.join(config.out, "curve.png"))
        except ImportError:
            print("matplotlib not installed: no curve.png (pip install matplotlib)")
        print("trained {} epochs in {:.1f} min; best val mIoU {:.2f} %; checkpoints in {}".format(
            len(history), seconds / 60, 100 * trainer.best_miou, config.out))
    if trainer.stopped_at is not None:  # SIGINT/SIGTERM: a mid-epoch last.pt was saved; resuming continues there
        print("interrupted at epoch {} iteration {}: continue with --resume {}".format(
            *trainer.stopped_at, os.path.join(config.out, "last.pt")))
        return 130


EXPORT = (EXPORT_MODEL, groups.Resolutions((1024, 2048)), groups.Output("exports"), groups.ExportFormat(),
          groups.EngineBuild(), groups.Calibration(full=True), groups.ExportExtras())


def export_parser():
    return groups.parser("sanet-export", export_main.__doc__, [
        "sanet-export runs/synth/best.safetensors --res 512 1024 --res 1024 2048",
        "sanet-export best.safetensors --qdq --calib data/cityscapes --parity-data data/cityscapes",
        "sanet-export best.safetensors --fp16 --int8 --calib data/cityscapes --trt-check 8.5"], *EXPORT)


def export_main(argv):
    """sanet-export: ONNX per resolution (verified in ONNX Runtime), Q/DQ INT8 ONNX, TensorRT engines."""
    from .pipeline import ExportRequest, Pipeline, audit_images, export_all, lint_summary

    args = export_parser().parse_args(argv)
    model_group, sizes_group, out_group, format_group, engine_group, calib_group, extras = EXPORT
    sizes, export_config = sizes_group.build(args), format_group.build(args)
    precisions, engine_config = engine_group.build(args)
    model_group.check(args)
    extras.check(args, precisions)
    calib, ranges = calib_group.build_export(args, precisions, engine_config)
    model, source = model_group.build(args)
    if source is None:
        print("note: --random-init exports untrained weights; predictions are meaningless")
    pipeline = Pipeline(model, source, out_group.build(args), export_config, calib, engine_config, report=_say,
                        quant_ranges=ranges)
    if args.dynamic:
        path, _ = pipeline.dynamic_onnx(sizes)
        print_table(["file", "MiB", "kind", "check"], [[path, "{:.1f}".format(os.path.getsize(path) / 2**20),
                                                        "dynamic onnx", pipeline.notes[path]]])
        return 0
    images = audit_images(calib) if "fp16" in precisions else None  # generated street scenes without --calib
    request = ExportRequest(precisions, args.qdq, args.triton, args.triton_max_batch, tuple(args.trt_check), images,
                            args.parity_limit or 16)
    rows, missing, violations = export_all(pipeline, sizes, request)
    lint, problems = lint_summary(violations)
    print_table(["file", "MiB", "kind", "check"] + (["TensorRT lint"] if lint else []),
                [row + ([lint.get(row[0], "-") if row[2].endswith("onnx") else "-"] if lint else []) for row in rows])
    for line in problems:
        print(line)
    if missing:
        from .engines import TENSORRT_HINT
        raise SanetError("TensorRT is not installed, so no {} was built (the ONNX files above are complete): {}".format(
            missing[0], TENSORRT_HINT))
    return 1 if problems else 0


PARITY_DATA = groups.Data(required=True, require_labels=False)
PARITY = groups.ParityOptions()


def parity_parser():
    return groups.parser("sanet-parity", parity_main.__doc__, [
        "sanet-parity best.safetensors --engine exports/sanet_1024x2048_b1_int8.plan --data data/cityscapes",
        "sanet-parity best.safetensors --onnx exports/sanet_512x1024_b1.onnx --emulate fp16 --data data/synth",
        "sanet-parity best.safetensors --onnx exports/sanet_360x480_b1.onnx --emulate int8-classic --calib "
        "data/camvid/train --data data/camvid --dataset camvid"],
        RUNNER, PARITY_DATA, PARITY, JSON)


def parity_main(argv):
    """sanet-parity: compare a candidate (ONNX, engine, PyTorch precision or emulated precision) with PyTorch FP32
    on a dataset; exit 1 when over budget."""
    from .fileio import write_json_atomic
    from .parity import compare, parity_rows
    from .runners import TorchRunner

    args = parity_parser().parse_args(argv)
    PARITY.check(args)
    RUNNER.check(args)
    json_path = JSON.build(args)
    dataset = PARITY_DATA.build(args)  # unlabelled frames count: agreement needs no labels
    model, _ = MODEL.build(args)
    candidate = PARITY.candidate(args, RUNNER, model)
    with TorchRunner(model) as reference, candidate:
        result = compare(reference, candidate, dataset, limit=args.limit, budget=PARITY.budget(args, candidate.info.precision))
    print_table(["metric", "value"], parity_rows(result))
    if json_path:
        write_json_atomic(json_path, result.to_dict())
    return 0 if result.passed else 1


BENCH_MODEL = groups.ModelSource(False, "default", "the shipped sanet/weights checkpoint if present, else random init")
BENCH = (BENCH_MODEL, groups.Data(required=False, limit=False, data_help="dataset root for parity (default: generated "
                                  "synthetic scenes)"), groups.Resolutions(None), groups.RunnerSource(BENCH_MODEL, many=True),
         groups.Calibration(full=False, count=BenchConfig.calib_count), groups.Output("results/bench", "report folder"))


def bench_parser():
    from .bench import add_arguments

    parser = groups.parser("sanet-bench", bench_main.__doc__, [
        "sanet-bench", "sanet-bench --checkpoint best.safetensors --data data/cityscapes --res 512 1024",
        "sanet-bench --backends onnxruntime --precisions fp32 int8 --calib data/cityscapes --strict"],
        *BENCH)
    return add_arguments(parser)  # the bench-only flags (timing, backends, precisions)


def bench_main(argv):
    """sanet-bench: FPS at 512x1024 / 768x1536 / 1024x2048 for every backend here, with parity vs PyTorch FP32."""
    import dataclasses

    from .bench import config_from_args, generated_scenes, resolve_model, run_bench
    from .benchreport import COMPARE_HEADERS, TABLE_HEADERS, compare_runs, host_facts, read_runs, table_rows, write_reports

    args = bench_parser().parse_args(argv)
    if args.res:  # integers H, W multiples of 8, whichever group declared --res
        args.res = [list(size) for size in groups.parse_resolutions([[str(v) for v in pair] for pair in args.res])]
    config, before = config_from_args(args), read_runs(args.compare) if args.compare else None
    for group in BENCH[:2] + BENCH[3:4]:
        group.check(args)
    dataset, calib_root = BENCH[1].build(args), args.data
    model, name = resolve_model(args.checkpoint, args.variant, args.classes, report=_say)
    if dataset is None:
        calib_root, dataset = generated_scenes(BENCH[5].build(args), config)
    config.calib = args.calib or calib_root
    facts = host_facts()
    rows, skipped = run_bench(model, config, dataset, args.onnx, args.engine, report=_say)
    files = write_reports(rows, facts, dict(dataclasses.asdict(config), checkpoint=name, dataset=args.data or "synthetic"),
                          args.out, skipped)
    print_table(TABLE_HEADERS, table_rows(rows))
    for message in skipped:
        print("skipped: " + message)
    print("reports: " + ", ".join(os.path.join(args.out, f) for f in files))
    if before is not None:
        table, summary = compare_runs(rows, before)
        print_table(COMPARE_HEADERS, table)
        print(summary)
    if any("interrupted" in message for message in skipped):
        return 130
    if args.strict and any(row.verdict == "FAIL" for row in rows):
        raise SanetError("{} row(s) failed parity (--strict)".format(sum(r.verdict == "FAIL" for r in rows)))
    return 0


INFER_RUNNER = groups.RunnerSource(groups.ModelSource(False, "never", "the shipped real-CamVid SANet in sanet/weights/"),
                                   shipped_default=lambda args: "camvid")
INFER = groups.InferOptions()


def infer_parser():
    parser = groups.parser("sanet-infer", infer_main.__doc__, [
        "sanet-infer data/cityscapes/leftImg8bit/val --onnx exports/sanet_1024x2048_b1.onnx",
        "sanet-infer drive.mp4 --engine exports/sanet_1024x2048_b1_fp16.plan -o out",
        "sanet-infer 0 --checkpoint best.safetensors --size 512 1024 --max-frames 100"], INFER, INFER_RUNNER,
        groups.Output("predictions"))
    INFER.add_drawing(parser)
    return parser


def infer_main(argv):
    """sanet-infer: colour masks and overlays for images, videos, a camera or an RTSP stream, on any backend."""
    from .infer import expand_inputs, run

    args = infer_parser().parse_args(argv)
    config = INFER.build(args)
    INFER_RUNNER.check(args)
    sources = expand_inputs(args.inputs)
    with INFER_RUNNER.build(args) as runner:
        run(sources, runner, config, report=_say)


COMMANDS = {"info": info_main, "synth": synth_main, "eval": eval_main, "train": train_main, "export": export_main,
            "parity": parity_main, "bench": bench_main, "infer": infer_main}
PARSERS = {"info": info_parser, "synth": synth_parser, "eval": eval_parser, "train": train_parser,
           "export": export_parser, "parity": parity_parser, "bench": bench_parser, "infer": infer_parser}
info, synth, evaluate, train, export, parity, bench, infer = (_entry(main) for main in COMMANDS.values())


def main(argv=None):
    """``python -m sanet.cli COMMAND ...``: the same commands as the console scripts."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m sanet.cli {{{}}} ...".format(",".join(COMMANDS)), file=sys.stderr)
        return 2
    return _run(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
