"""Command-line entry points. Each command's flags live here; the work lives in the stage modules.

Every entry point goes through ``_run``: a SanetError (something the user can fix) is printed as one
line without a traceback and the process exits with status 1; Ctrl-C exits with 130.
"""
import argparse
import os
import sys

from .errors import SanetError


def _run(main, argv):
    try:
        return main(argv) or 0
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


def print_table(headers, rows, out=sys.stdout):
    """Plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) if index and _numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _numeric(text):
    try:
        float(text.rstrip("%x"))
        return True
    except ValueError:
        return False


def add_model_args(parser, checkpoint_optional=True):
    """The model-source flags shared by every command that builds a network."""
    parser.add_argument("checkpoint", nargs="?" if checkpoint_optional else None,
                        help="checkpoint (.safetensors or .pt; reference-repo files load too)")
    parser.add_argument("--variant", choices=["sanet", "sanet-tiny"], default=None,
                        help="network variant (default: from the checkpoint, else sanet)")
    parser.add_argument("--classes", type=int, default=None, help="number of classes (default: from the checkpoint, else 19)")


def model_from_args(args):
    """Build the model named by add_model_args flags: from the checkpoint, or freshly initialised."""
    from .checkpoints import load_model
    from .model import build_model

    if args.checkpoint:
        return load_model(args.checkpoint, args.variant, args.classes)
    return build_model(args.variant or "sanet", args.classes or 19, aux_head=False).eval()


def info_main(argv):
    """sanet-info: variant, parameters and GFLOPs at the three benchmark resolutions."""
    from .model import count_gflops, count_parameters

    parser = argparse.ArgumentParser(prog="sanet-info", description=info_main.__doc__)
    add_model_args(parser)
    args = parser.parse_args(argv)
    model = model_from_args(args)
    cfg = model.config
    source = args.checkpoint or "random init"
    print("model: {} | classes: {} | source: {}".format(cfg.variant, cfg.num_classes, source))
    params = count_parameters(model)
    rows = []
    for height, width in ((512, 1024), (768, 1536), (1024, 2048)):
        rows.append(["{}x{}".format(height, width), "{:.2f}".format(params / 1e6), "{:.1f}".format(count_gflops(model, height, width))])
    print_table(["input", "params (M)", "GFLOPs"], rows)


info = _entry(info_main)


def synth_main(argv):
    """sanet-synth: write procedural street scenes in the Cityscapes layout (labelIds)."""
    import time

    from .synth import SynthConfig, generate_dataset

    parser = argparse.ArgumentParser(prog="sanet-synth", description=synth_main.__doc__)
    parser.add_argument("out", help="dataset root to create (leftImg8bit/ and gtFine/ go inside)")
    parser.add_argument("--size", nargs=2, type=int, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--train", type=int, default=200, help="training frames (default 200)")
    parser.add_argument("--val", type=int, default=50, help="validation frames (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    written = generate_dataset(args.out, SynthConfig(args.size[0], args.size[1], args.train, args.val, args.seed))
    print("wrote {} frames ({}x{}) to {} in {:.1f} s".format(written, args.size[0], args.size[1], args.out,
                                                             time.perf_counter() - start))


def add_runner_args(parser):
    """Flags that choose the backend for eval/parity: a checkpoint (PyTorch) or an exported ONNX."""
    add_model_args(parser)
    parser.add_argument("--onnx", help="evaluate this exported ONNX with ONNX Runtime instead of PyTorch")
    parser.add_argument("--device", default="cpu", help="PyTorch device: cpu or cuda (default cpu)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="PyTorch precision")


def runner_from_args(args):
    from .runners import OrtRunner, TorchRunner

    if args.onnx:
        return OrtRunner(args.onnx)
    if not args.checkpoint:
        raise SanetError("give a CHECKPOINT or --onnx MODEL")
    return TorchRunner(model_from_args(args), args.device, args.precision)


def eval_main(argv):
    """sanet-eval: mIoU, per-class IoU and pixel accuracy of a checkpoint or ONNX on a labelled split."""
    from .data import open_dataset
    from .evaluate import evaluate
    from .fileio import write_json_atomic
    from .metrics import format_iou

    parser = argparse.ArgumentParser(prog="sanet-eval", description=eval_main.__doc__)
    add_runner_args(parser)
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", default="cityscapes", choices=["cityscapes", "camvid"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="resize inputs to H x W (e.g. 512 1024)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0], help="multi-scale factors, e.g. 0.75 1 1.25")
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped predictions")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--submit", help="write Cityscapes test-server PNGs (labelIds) to this folder")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.submit and args.dataset != "cityscapes":
        raise SanetError("--submit writes Cityscapes labelIds; it is for --dataset cityscapes")
    dataset = open_dataset(args.data, args.dataset, args.split)
    with runner_from_args(args) as runner:
        result = evaluate(runner, dataset, tuple(args.scales), args.flip, args.size, args.submit, args.limit,
                          progress=not args.no_progress)
    rows = [[name, format_iou(value)] for name, value in result["per_class_iou"].items()]
    print_table(["class", "IoU %"], rows)
    print("mIoU {:.2f} %  pixel accuracy {:.2f} %  ({} images, {})".format(
        100 * result["miou"], 100 * result["pixel_accuracy"], result["images"], result["runner"]))
    if args.json:
        write_json_atomic(args.json, result)


def train_main(argv):
    """sanet-train: train SANet with the paper's recipe (torchrun for multi-GPU / multi-node)."""
    from .train import TrainConfig, plot_history, train

    parser = argparse.ArgumentParser(prog="sanet-train", description=train_main.__doc__)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/cityscapes.yaml")
    parser.add_argument("--resume", help="continue from a last.pt training checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. epochs=10 batch_size=4")
    args = parser.parse_args(argv)
    config = TrainConfig.load(args.config, args.overrides)
    trainer, history, seconds = train(config, args.resume)
    if trainer.is_main and history:
        try:
            plot_history(history, os.path.join(config.out, "curve.png"))
        except ImportError:
            print("matplotlib not installed: no curve.png (pip install matplotlib)")
        print("trained {} epochs in {:.1f} min; best val mIoU {:.2f} %; checkpoints in {}".format(
            len(history), seconds / 60, 100 * trainer.best_miou, config.out))


def parse_resolutions(values):
    """--res H W (repeatable) -> [(H, W), ...] with a one-line error for malformed values."""
    from .model import check_input_size

    sizes = []
    for pair in values:
        try:
            height, width = int(pair[0]), int(pair[1])
        except ValueError:
            raise SanetError("--res takes two integers H W, got {}".format(" ".join(pair))) from None
        check_input_size(height, width)
        sizes.append((height, width))
    return sizes


def export_main(argv):
    """sanet-export: ONNX per resolution (verified in ONNX Runtime), Q/DQ INT8 ONNX, TensorRT engines."""
    from .checkpoints import load_model
    from .export import INPUT_LAYOUTS, OUTPUTS, ExportConfig, export_onnx
    from .fileio import ensure_writable_dir, sha256_file
    from .model import build_model

    parser = argparse.ArgumentParser(prog="sanet-export", description=export_main.__doc__)
    add_model_args(parser)
    parser.add_argument("--res", nargs=2, action="append", metavar=("H", "W"),
                        help="input resolution, repeatable (default 1024 2048)")
    parser.add_argument("-o", "--out", default="exports", help="output directory (default exports/)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17: TensorRT 8.5 on Jetson)")
    parser.add_argument("--dynamic", action="store_true",
                        help="one ONNX with dynamic H and W (verified at every --res); engines need static files")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--input", dest="input_layout", choices=INPUT_LAYOUTS, default="float-nchw")
    parser.add_argument("--output", choices=OUTPUTS, default="logits")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--random-init", action="store_true", help="export untrained weights (no checkpoint)")
    engine = parser.add_argument_group("TensorRT engines (built on the target device)")
    engine.add_argument("--fp32", action="store_true", help="build an FP32 engine")
    engine.add_argument("--fp16", action="store_true", help="build an FP16 engine")
    engine.add_argument("--int8", action="store_true", help="build an INT8 engine (classic calibrator below TensorRT 10, Q/DQ from 10)")
    engine.add_argument("--int8-route", choices=["auto", "classic", "qdq"], default="auto")
    engine.add_argument("--workspace", type=int, default=2048, help="builder workspace limit in MiB (default 2048)")
    engine.add_argument("--timing-cache", help="timing cache file reused across builds (default OUT/timing.cache)")
    engine.add_argument("--opt-level", type=int, help="builder optimisation level 0-5 (TensorRT >= 8.6)")
    engine.add_argument("--dla-core", type=int, help="run on this DLA core with GPU fallback (Jetson)")
    engine.add_argument("--triton", metavar="REPO", help="also write a Triton model repository (ONNX with dynamic "
                        "batching, plus any engines built)")
    engine.add_argument("--triton-max-batch", type=int, default=8, help="Triton max_batch_size for the ONNX model (default 8)")
    int8 = parser.add_argument_group("INT8 calibration")
    int8.add_argument("--qdq", action="store_true", help="write a Q/DQ INT8 ONNX (runs on ONNX Runtime CPU; TensorRT 10/11 build it)")
    int8.add_argument("--qdq-activations", choices=["int8", "uint8"], default="int8",
                      help="int8: symmetric, TensorRT-compatible (default); uint8: fastest on ONNX Runtime x86")
    int8.add_argument("--calib", help="calibration images: a Cityscapes root (uses leftImg8bit/train) or an image folder")
    int8.add_argument("--calib-count", type=int, default=500, help="number of crops (default 500)")
    int8.add_argument("--calib-mode", choices=["random", "grid"], default="random")
    int8.add_argument("--calib-seed", type=int, default=0)
    int8.add_argument("--calib-method", choices=["entropy", "minmax", "percentile"],
                      help="default: entropy for TensorRT calibrators, minmax for Q/DQ")
    int8.add_argument("--int8-keep", nargs="+", default=[], metavar="GROUP",
                      help="layer groups kept in float, e.g. conv_out32 sff1 sff2")
    int8.add_argument("--int8-fallback", choices=["none", "auto"], default="none",
                      help="auto: move layer groups back to float until INT8 parity holds (needs --parity-data)")
    int8.add_argument("--parity-data", help="labelled dataset root for the Q/DQ parity check against PyTorch")
    int8.add_argument("--parity-dataset", default="cityscapes", choices=["cityscapes", "camvid", "folder"])
    int8.add_argument("--parity-split", default="val")
    int8.add_argument("--parity-limit", type=int, help="check only the first N images")
    args = parser.parse_args(argv)
    sizes = parse_resolutions(args.res or [("1024", "2048")])
    if args.checkpoint:
        model, source = load_model(args.checkpoint, args.variant, args.classes), sha256_file(args.checkpoint)
    elif args.random_init:
        print("note: --random-init exports untrained weights; predictions are meaningless")
        model, source = build_model(args.variant or "sanet", args.classes or 19, aux_head=False).eval(), None
    else:
        raise SanetError("give a CHECKPOINT to export, or --random-init for untrained weights")
    precisions = [p for p in ("fp32", "fp16", "int8") if getattr(args, p)]
    if (args.qdq or args.int8) and not args.calib:
        raise SanetError("INT8 needs calibration images: add --calib DIR (Cityscapes root or an image folder)")
    if args.int8_fallback == "auto" and not args.parity_data:
        raise SanetError("--int8-fallback auto measures parity: add --parity-data ROOT")
    tensorrt = _tensorrt_or_none() if precisions else None
    ensure_writable_dir(args.out)
    if args.dynamic:
        if precisions or args.qdq or args.triton:
            raise SanetError("--dynamic writes one ONNX for any H x W; engines, --qdq and --triton need static sizes: "
                             "drop --dynamic for those")
        return _export_dynamic(args, model, sizes, source)
    rows = []
    for height, width in sizes:
        config = ExportConfig(height, width, args.opset, args.batch, False, args.input_layout, args.output,
                              not args.no_simplify)
        path = os.path.join(args.out, config.file_name(model.config.variant))
        print("exporting {} ...".format(path), flush=True)
        max_diff = export_onnx(model, path, config, source)
        rows.append([path, "{:.1f}".format(os.path.getsize(path) / 2**20), "fp32 onnx", "max |diff| {:.2e}".format(max_diff)])
        manifest = _calibration_manifest(args, path, height, width) if args.qdq or (args.int8 and tensorrt) else None
        qdq_path = None
        if args.qdq or (args.int8 and tensorrt is not None and _int8_route(args, tensorrt, path) == "qdq"):
            qdq_path, check = _export_qdq(args, model, path, manifest)
            rows.append([qdq_path, "{:.1f}".format(os.path.getsize(qdq_path) / 2**20), "int8 q/dq onnx", check])
        if args.triton:
            rows.append(_triton_onnx(args, model, config, source))
        if tensorrt is not None:
            for precision in precisions:
                plan = _build(args, precision, qdq_path if precision == "int8" and qdq_path else path, manifest)
                rows.append([plan, "{:.1f}".format(os.path.getsize(plan) / 2**20), "{} engine".format(precision), "sidecar .json"])
                if args.triton:
                    rows.append(_triton_plan(args, plan, path, precision))
    print_table(["file", "MiB", "kind", "check"], rows)
    if precisions and tensorrt is None:
        print("error: TensorRT is not installed, so no {} engine was built (the ONNX files above are complete): "
              "{}".format("/".join(precisions), _tensorrt_hint()), file=sys.stderr)
        return 1
    return 0


def _export_dynamic(args, model, sizes, source):
    """One ONNX with symbolic H and W, checked against PyTorch at every --res (plus half the first size)."""
    from .export import ExportConfig, export_onnx

    (height, width), others = sizes[0], list(sizes[1:])
    if not others:
        others.append((max(32, height // 16 * 8), max(32, width // 16 * 8)))
    config = ExportConfig(height, width, args.opset, args.batch, True, args.input_layout, args.output, not args.no_simplify)
    path = os.path.join(args.out, config.file_name(model.config.variant))
    print("exporting {} (dynamic H x W) ...".format(path), flush=True)
    max_diff = export_onnx(model, path, config, source, verify_sizes=others)
    checked = ", ".join("{}x{}".format(*s) for s in [sizes[0]] + others)
    print_table(["file", "MiB", "opset", "checked at", "max |diff| vs PyTorch"],
                [[path, "{:.1f}".format(os.path.getsize(path) / 2**20), args.opset, checked, "{:.2e}".format(max_diff)]])
    return 0


def _triton_onnx(args, model, config, source):
    """Export a dynamic-batch twin of the ONNX into the Triton repository; returns a summary row."""
    import dataclasses
    import tempfile

    from .export import export_onnx, io_signature, write_triton_model

    if args.triton_max_batch < 1:
        raise SanetError("--triton-max-batch must be >= 1")
    name = "{}_{}x{}".format(model.config.variant.replace("-", "_"), config.height, config.width)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = os.path.join(scratch, "model.onnx")
        max_diff = export_onnx(model, onnx_path, dataclasses.replace(config, batch=1, dynamic_batch=True), source)
        inputs, outputs = io_signature(onnx_path)
        folder = write_triton_model(args.triton, name, onnx_path, "onnxruntime_onnx", inputs, outputs, args.triton_max_batch)
    return [folder, "-", "triton onnx", "max |diff| {:.2e}".format(max_diff)]


def _triton_plan(args, plan, onnx_path, precision):
    from .export import io_signature, write_triton_model

    inputs, outputs = io_signature(onnx_path)  # the engine keeps the ONNX's names, dims and I/O dtypes
    name = "{}_{}".format(os.path.basename(os.path.splitext(onnx_path)[0]), precision)
    folder = write_triton_model(args.triton, name, plan, "tensorrt_plan", inputs, outputs, 0)
    return [folder, "-", "triton plan", "static batch"]


def _tensorrt_or_none():
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def _tensorrt_hint():
    from .engines import TENSORRT_HINT

    return TENSORRT_HINT


def _int8_route(args, tensorrt, onnx_path):
    from .engines import EngineConfig, int8_route
    from .export import read_metadata

    return int8_route(EngineConfig("int8", int8_route=args.int8_route), tensorrt.__version__, read_metadata(onnx_path))


def _calibration_manifest(args, onnx_path, height, width):
    from .calibration import CropConfig, plan_crops, write_manifest

    manifest = plan_crops(args.calib, CropConfig(height, width, args.calib_count, args.calib_mode, args.calib_seed, args.batch))
    write_manifest(os.path.splitext(onnx_path)[0] + ".calib.json", manifest)
    print("calibration: {} crops from {} images (manifest {})".format(len(manifest["crops"]), len(manifest["files"]),
                                                                      manifest["sha256"][:12]))
    return manifest


def _export_qdq(args, model, onnx_path, manifest):
    """Write the Q/DQ ONNX; with --parity-data check it (or auto-fall back) against PyTorch FP32."""
    from .calibration import QuantizeConfig, quantize_qdq, quantize_with_fallback
    from .data import open_dataset
    from .parity import compare
    from .runners import OrtRunner, TorchRunner

    out = os.path.splitext(onnx_path)[0] + "_int8_qdq.onnx"
    config = QuantizeConfig(args.calib_method or "minmax", args.qdq_activations, keep=tuple(args.int8_keep))
    cache_dir = os.path.join(args.out, "calibration-cache")
    print("quantizing {} ...".format(out), flush=True)
    if not args.parity_data:
        quantize_qdq(onnx_path, out, manifest, config, cache_dir)
        return out, "no parity data"
    dataset = open_dataset(args.parity_data, args.parity_dataset, args.parity_split, require_labels=False)
    reference = TorchRunner(model)
    if args.int8_fallback == "auto":
        result, moved = quantize_with_fallback(onnx_path, out, manifest, config, reference, dataset,
                                               cache_dir=cache_dir, limit=args.parity_limit)
        print("auto-fallback kept in float: {}".format(", ".join(list(config.keep) + moved) or "nothing"))
    else:
        quantize_qdq(onnx_path, out, manifest, config, cache_dir)
        with OrtRunner(out) as candidate:
            result = compare(reference, candidate, dataset, limit=args.parity_limit, progress=False)
        if not result.passed:
            os.remove(out)
            raise SanetError("INT8 Q/DQ model over its parity budget ({}): retry with --int8-fallback auto".format(
                "; ".join(result.failures)))
    delta = "-" if result.delta_miou is None else "{:+.2f} pt".format(100 * result.delta_miou)
    return out, "delta mIoU {}, pixel agreement {:.2%}".format(delta, result.pixel_agreement)


def _build(args, precision, onnx_path, manifest):
    from .engines import EngineConfig, build_engine, engine_path

    method = args.calib_method if args.calib_method in ("entropy", "minmax") else "entropy"
    config = EngineConfig(precision, args.workspace, args.timing_cache or os.path.join(args.out, "timing.cache"),
                          args.opt_level, args.dla_core, args.int8_route, method, tuple(args.int8_keep))
    plan = engine_path(onnx_path, precision, args.dla_core)
    print("building {} ...".format(plan), flush=True)
    build_engine(onnx_path, plan, config, manifest)
    return plan


def parity_main(argv):
    """sanet-parity: compare an exported model with PyTorch FP32 on a dataset; exit 1 when over budget."""
    from .checkpoints import load_model
    from .data import open_dataset
    from .fileio import write_json_atomic
    from .parity import BUDGETS, Budget, compare, parity_rows
    from .runners import OrtRunner, TorchRunner

    parser = argparse.ArgumentParser(prog="sanet-parity", description=parity_main.__doc__)
    parser.add_argument("checkpoint", help="the PyTorch checkpoint the candidate was exported from")
    parser.add_argument("--onnx", required=True, help="candidate ONNX file (ONNX Runtime CPU)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", default="cityscapes", choices=["cityscapes", "camvid", "folder"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--precision", choices=sorted(BUDGETS), help="budget to apply (default: the candidate's)")
    parser.add_argument("--min-pixel-agreement", type=float, help="override the budget (fraction, e.g. 0.9999)")
    parser.add_argument("--max-delta-miou", type=float, help="override the budget (fraction, e.g. 0.001 = 0.1 pt)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    # Unlabelled frames count too: agreement metrics need no labels; label mIoU needs every frame labelled.
    dataset = open_dataset(args.data, args.dataset, args.split, require_labels=False)
    reference = TorchRunner(load_model(args.checkpoint))
    with OrtRunner(args.onnx) as candidate:
        base = BUDGETS.get(args.precision or candidate.info.precision, Budget())
        budget = Budget(args.min_pixel_agreement if args.min_pixel_agreement is not None else base.min_pixel_agreement,
                        base.min_agreement_miou,
                        args.max_delta_miou if args.max_delta_miou is not None else base.max_delta_miou)
        result = compare(reference, candidate, dataset, limit=args.limit, budget=budget)
    print_table(["metric", "value"], parity_rows(result))
    if args.json:
        write_json_atomic(args.json, result.to_dict())
    return 0 if result.passed else 1


def bench_main(argv):
    """sanet-bench: FPS at 512x1024 / 768x1536 / 1024x2048 for every backend here, with parity vs PyTorch FP32."""
    from .bench import BACKENDS, PRECISIONS, TABLE_HEADERS, BenchConfig, host_facts, run_bench, table_rows, write_reports
    from .data import open_dataset
    from .synth import SynthConfig, generate_dataset

    parser = argparse.ArgumentParser(prog="sanet-bench", description=bench_main.__doc__)
    parser.add_argument("--checkpoint", help="trained checkpoint (default: random-init SANet, agreement-only parity)")
    parser.add_argument("--variant", choices=["sanet", "sanet-tiny"], default=None)
    parser.add_argument("--classes", type=int, default=None)
    parser.add_argument("--data", help="dataset root for parity (default: generated synthetic street scenes)")
    parser.add_argument("--dataset", default="cityscapes", choices=["cityscapes", "camvid", "folder"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--res", nargs=2, action="append", metavar=("H", "W"), help="resolution, repeatable")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--onnx", nargs="+", default=[], help="extra exported ONNX files to benchmark and check")
    parser.add_argument("--engine", nargs="+", default=[], help="extra TensorRT plan files (with sidecars) to benchmark")
    parser.add_argument("--calib", help="calibration images for INT8 rows (default: the synthetic set or --data)")
    parser.add_argument("--calib-count", type=int, default=16, help="calibration crops for INT8 rows (default 16)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay PyTorch CUDA and TensorRT rows from CUDA graphs")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50, help="timed iterations per row (upper bound)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time budget per timing loop (default 6 s)")
    parser.add_argument("--parity-images", type=int, default=2)
    parser.add_argument("-o", "--out", default="results/bench")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails its parity budget")
    args = parser.parse_args(argv)
    resolutions = parse_resolutions(args.res) if args.res else None
    config = BenchConfig(warmup=args.warmup, iterations=args.iterations, seconds=args.seconds,
                         parity_images=args.parity_images, out=args.out, backends=tuple(args.backends),
                         precisions=tuple(args.precisions), calib_count=args.calib_count, cuda_graphs=args.cuda_graphs)
    if resolutions:
        config.resolutions = resolutions
    model = model_from_args(argparse.Namespace(checkpoint=args.checkpoint, variant=args.variant, classes=args.classes))
    if not args.checkpoint:
        print("note: no --checkpoint: random-init SANet; parity checks agreement, mIoU vs labels is meaningless")
    if args.data:
        dataset = open_dataset(args.data, args.dataset, args.split, require_labels=False)
    else:
        synth_root = os.path.join(args.out, "synth")
        if not os.path.isdir(os.path.join(synth_root, "leftImg8bit", "train")):
            generate_dataset(synth_root, SynthConfig(256, 512, train=8, val=max(2, args.parity_images), seed=0))
        dataset = open_dataset(synth_root, "cityscapes", "val")
    config.calib = args.calib or args.data or synth_root
    for path in args.onnx + args.engine:
        if not os.path.isfile(path):
            raise SanetError("file not found: {}".format(path))
    facts = host_facts()
    rows, skipped = run_bench(model, config, dataset, args.onnx, args.engine)
    settings = {"batch": 1, "warmup": config.warmup, "iterations": config.iterations, "seconds": config.seconds,
                "parity_images": config.parity_images, "checkpoint": args.checkpoint or "random-init",
                "dataset": args.data or "synthetic", "calibration": config.calib, "calibration_crops": config.calib_count,
                "cuda_graphs": config.cuda_graphs}
    files = write_reports(rows, facts, settings, args.out, skipped)
    print_table(TABLE_HEADERS, table_rows(rows))
    for message in skipped:
        print("skipped: " + message)
    print("reports: " + ", ".join(os.path.join(args.out, f) for f in files))
    if any("interrupted" in message for message in skipped):
        return 130
    if args.strict and any(row.verdict == "FAIL" for row in rows):
        print("error: {} row(s) failed parity (--strict)".format(sum(r.verdict == "FAIL" for r in rows)), file=sys.stderr)
        return 1
    return 0


def infer_main(argv):
    """sanet-infer: colour masks and overlays for images, videos, a camera or an RTSP stream, on any backend."""
    from .infer import InferConfig, expand_inputs, run
    from .runners import OrtRunner, TorchRunner

    parser = argparse.ArgumentParser(prog="sanet-infer", description=infer_main.__doc__)
    parser.add_argument("inputs", nargs="+", help="image/video files, folders, globs, a camera index (0) or an rtsp:// URL")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--engine", help="TensorRT plan file (with its .json sidecar)")
    source.add_argument("--onnx", help="exported ONNX file (ONNX Runtime)")
    source.add_argument("--checkpoint", help="PyTorch checkpoint")
    parser.add_argument("-o", "--out", default="predictions", help="output directory (default predictions/)")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network input size for --checkpoint")
    parser.add_argument("--device", default="cpu", help="PyTorch device for --checkpoint (cpu or cuda)")
    parser.add_argument("--palette", choices=["auto", "cityscapes", "camvid"], default="auto")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in overlays (default 0.5)")
    parser.add_argument("--max-frames", type=int, help="stop each video/stream after N frames")
    args = parser.parse_args(argv)
    if args.size:
        parse_resolutions([[str(v) for v in args.size]])
    sources = expand_inputs(args.inputs)
    if args.engine:
        from .engines import TrtRunner

        runner = TrtRunner(args.engine)
    elif args.onnx:
        runner = OrtRunner(args.onnx)
    else:
        from .checkpoints import load_model

        runner = TorchRunner(load_model(args.checkpoint), args.device)
    config = InferConfig(args.out, tuple(args.size) if args.size else None, args.palette, args.alpha, args.max_frames)
    with runner:
        run(sources, runner, config, report=lambda message: print(message, flush=True))


synth = _entry(synth_main)
evaluate = _entry(eval_main)
train = _entry(train_main)
export = _entry(export_main)
parity = _entry(parity_main)
bench = _entry(bench_main)
infer = _entry(infer_main)

COMMANDS = {"info": info_main, "synth": synth_main, "eval": eval_main, "train": train_main, "export": export_main,
            "parity": parity_main, "bench": bench_main, "infer": infer_main}


def main(argv=None):
    """``python -m sanet.cli COMMAND ...``: the same commands as the console scripts."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m sanet.cli {{{}}} ...".format(",".join(COMMANDS)), file=sys.stderr)
        return 2
    return _run(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
