"""Command-line entry points. Each command's flags live here; the work lives in the stage modules.

Every entry point goes through ``_run``: a SanetError (something the user can fix) is printed as one
line without a traceback and the process exits with status 1; Ctrl-C exits with 130.
"""
import argparse
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


synth = _entry(synth_main)
evaluate = _entry(eval_main)

COMMANDS = {"info": info_main, "synth": synth_main, "eval": eval_main}


def main(argv=None):
    """``python -m sanet.cli COMMAND ...``: the same commands as the console scripts."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m sanet.cli {{{}}} ...".format(",".join(COMMANDS)), file=sys.stderr)
        return 2
    return _run(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
