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

COMMANDS = {"info": info_main}


def main(argv=None):
    """``python -m sanet.cli COMMAND ...``: the same commands as the console scripts."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m sanet.cli {{{}}} ...".format(",".join(COMMANDS)), file=sys.stderr)
        return 2
    return _run(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
