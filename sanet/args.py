"""Command-line argument groups, each declared once: ``add(parser)`` puts its flags on a command, ``build(args)``
turns them into the object the stage modules take (a model, a runner, a dataset, a config).

Every ``build`` checks its arguments before anything expensive starts and raises a SanetError that names the
fix. Help texts show every default (:class:`HelpFormatter`). Commands compose these groups in ``sanet.cli``.
"""
import argparse
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

from .constants import CLASSIC_CALIBRATOR, INPUT_LAYOUTS, PRECISIONS
from .errors import SanetError

VARIANTS = ("sanet", "sanet-tiny")
DATASETS = ("cityscapes", "camvid", "folder")
OPSETS = (11, 20)  # align_corners resampling needs opset 11; 20 is the newest the classic exporter writes here
TRT_RELEASES = ("8.5", "10", "11")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not already say its default; keeps epilogs as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.required:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        if action.default is None or action.default is False:
            return text + (" (default: off)" if action.nargs == 0 else " (default: not set)")
        if isinstance(action.default, (list, tuple)):
            return text + " (default: {})".format(" ".join(str(v) for v in action.default) or "none")
        return text + " (default: %(default)s)"


def parser(prog, description, examples, *groups):
    """An ArgumentParser with ``groups`` added, whose help ends with ``examples`` (a list of command lines)."""
    epilog = "examples:\n" + "\n".join("  " + line for line in examples)
    result = argparse.ArgumentParser(prog=prog, description=" ".join(description.split()), epilog=epilog,
                                     formatter_class=HelpFormatter)
    for group in groups:
        group.add(result)
    return result


def positive(name, value, allow_zero=False):
    """One-line error for impossible counts: ``name`` must be >= 1 (or >= 0)."""
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise SanetError("{} must be {} (got {})".format(name, ">= 0" if allow_zero else ">= 1", value))
    return value


def check_file(path, what, flag):
    if not os.path.isfile(path):
        raise SanetError("{} not found: {} (check {})".format(what, path, flag))
    if os.path.getsize(path) == 0:
        raise SanetError("{} {} is empty (check {})".format(what, path, flag))
    return path


def parse_resolutions(values, flag="--res"):
    """[["H", "W"], ...] -> [(H, W), ...]: integers, multiples of 8 (checked by the model)."""
    from .model import check_input_size

    sizes = []
    for pair in values:
        try:
            height, width = int(pair[0]), int(pair[1])
        except ValueError:
            raise SanetError("{} takes two integers H W, got {}".format(flag, " ".join(pair))) from None
        check_input_size(height, width)
        sizes.append((height, width))
    return sizes


@dataclass
class ModelSource:
    """A checkpoint (positional or ``--checkpoint``) with ``--variant/--classes``; ``--random-init`` where allowed."""

    positional: bool = True
    random_init: str = "never"  # "never": a checkpoint is required to build; "flag": needs --random-init; "default"
    default_help: Optional[str] = None  # what runs without a checkpoint, when the command decides that itself

    def add(self, parser):
        text = "checkpoint (.safetensors or .pt read with weights_only; reference-repo files load too; default: {})".format(
            self.default_help or {"never": "none, give one unless --onnx/--engine", "flag": "none, give one or --random-init",
                                  "default": "random init"}[self.random_init])
        if self.positional:
            parser.add_argument("checkpoint", nargs="?", help=text)
        else:
            parser.add_argument("--checkpoint", help=text)
        parser.add_argument("--variant", choices=VARIANTS, help="network variant (default: from the checkpoint, else sanet)")
        parser.add_argument("--classes", type=int, help="number of classes (default: from the checkpoint, else 19)")
        if self.random_init == "flag":
            parser.add_argument("--random-init", action="store_true", help="use untrained weights (no checkpoint)")

    def check(self, args):
        positive("--classes", args.classes)
        if args.checkpoint:
            check_file(args.checkpoint, "checkpoint", "the CHECKPOINT path")
        elif self.random_init == "flag" and not args.random_init:
            raise SanetError("give a CHECKPOINT to export, or --random-init for untrained weights")
        if self.random_init == "flag" and args.checkpoint and args.random_init:
            raise SanetError("--random-init and a CHECKPOINT exclude each other: drop one")

    def build(self, args):
        """The model (eval mode) and the checkpoint's sha256 (None for random init)."""
        from .checkpoints import load_model
        from .fileio import sha256_file
        from .model import build_model

        self.check(args)
        if args.checkpoint:
            return load_model(args.checkpoint, args.variant, args.classes), sha256_file(args.checkpoint)
        if self.random_init == "never":
            raise SanetError("give a CHECKPOINT (or run an exported model with --onnx / --engine)")
        return build_model(args.variant or "sanet", args.classes or 19, aux_head=False).eval(), None


@dataclass
class SaveFp16:
    """``--save-fp16 OUT``: write a checkpoint the way sanet/weights ships it (fp16 safetensors, no auxiliary head)."""

    def add(self, parser):
        parser.add_argument("--save-fp16", metavar="OUT", help="also write the checkpoint for deployment: fp16 "
                            "safetensors with its config, without the training-only auxiliary head (how sanet/weights is made)")

    def check(self, args):
        if args.save_fp16 and not args.save_fp16.endswith(".safetensors"):
            raise SanetError("--save-fp16 writes safetensors: name the file *.safetensors")

    def build(self, args, model):
        """Write the file when asked; returns whether it did."""
        if args.save_fp16:
            from .checkpoints import inference_copy, save_checkpoint

            save_checkpoint(args.save_fp16, inference_copy(model), half=True)
        return bool(args.save_fp16)


@dataclass
class RunnerSource:
    """Which network runs: the checkpoint in PyTorch, or ``--onnx`` (ONNX Runtime), or ``--engine`` (TensorRT).

    ``many``: the bench takes lists of extra files instead of one choice."""

    model: ModelSource = field(default_factory=ModelSource)
    many: bool = False
    # Without a checkpoint, --onnx or --engine: parsed args -> the key of the shipped checkpoint to run
    # (checkpoints.SHIPPED_CHECKPOINTS), or None where nothing shipped fits (a checkpoint is then required).
    shipped_default: Optional[Callable] = None

    def add(self, parser):
        if self.many:
            parser.add_argument("--onnx", nargs="+", default=[], help="extra exported ONNX files to run as rows")
            parser.add_argument("--engine", nargs="+", default=[], help="extra TensorRT plans (with .json sidecars) to run as rows")
            return
        self.model.add(parser)
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--onnx", help="run this exported ONNX with ONNX Runtime instead of the checkpoint")
        group.add_argument("--engine", help="run this TensorRT plan (its .json sidecar must match this system)")
        group.add_argument("--openvino", metavar="ONNX", help="run this exported ONNX with OpenVINO on the CPU (a Q/DQ "
                           "export runs INT8; --precision bf16 where the CPU has AMX or AVX-512 BF16)")
        parser.add_argument("--device", choices=("cpu", "cuda"), help="cpu or cuda: PyTorch device, or ONNX Runtime "
                            "provider for --onnx (default: cpu; engines always run on the GPU)")
        parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                            help="PyTorch precision (fp16 needs --device cuda), or OpenVINO's (fp32, bf16) "
                                 "(default: fp32; --onnx and --engine files carry theirs)")
        parser.add_argument("--channels-last", action="store_true", help="PyTorch channels_last memory format")

    def check(self, args):
        if self.many:
            for path in args.onnx + args.engine:
                check_file(path, "file", "--onnx / --engine")
            return
        if args.openvino:
            check_file(args.openvino, "ONNX file", "--openvino")
            if args.channels_last or args.device == "cuda" or args.precision == "fp16":
                raise SanetError("--openvino runs on the CPU in fp32 or bf16: drop --device cuda/--channels-last/fp16")
            return
        exported = args.onnx or args.engine
        if exported:
            check_file(exported, "ONNX file" if args.onnx else "engine", "--onnx" if args.onnx else "--engine")
            if args.precision or args.channels_last:
                raise SanetError("--precision/--channels-last apply to PyTorch; {} carries its own precision: drop them".format(
                    "--onnx" if args.onnx else "--engine"))
            if args.engine and args.device == "cpu":
                raise SanetError("TensorRT engines run on the GPU: drop --device cpu")
        elif not args.checkpoint:
            from .checkpoints import SHIPPED_ABOUT, shipped_checkpoint

            name = self.shipped_default(args) if self.shipped_default else None
            if name is None or shipped_checkpoint(name) is None:
                raise SanetError("give a CHECKPOINT, --onnx MODEL or --engine PLAN")
            args.checkpoint = shipped_checkpoint(name)
            print("note: no checkpoint given: running {} ({})".format(SHIPPED_ABOUT[name], args.checkpoint))

    def build(self, args, model=None):
        """An un-activated runner; ``model`` reuses an already loaded checkpoint model."""
        from .runners import OrtRunner, TorchRunner

        self.check(args)
        if args.onnx:
            return OrtRunner(args.onnx, providers=["CUDAExecutionProvider"] if args.device == "cuda" else None)
        if args.engine:
            from .engines import TrtRunner

            return TrtRunner(args.engine)
        if args.openvino:
            from .runners import OpenVinoRunner

            return OpenVinoRunner(args.openvino, args.precision or "fp32")
        model = model if model is not None else self.model.build(args)[0]
        return TorchRunner(model, args.device or "cpu", args.precision or "fp32", channels_last=args.channels_last)


@dataclass
class Data:
    """``--data/--dataset/--split/--limit``: the images a command runs on."""

    required: bool = True
    datasets: Tuple[str, ...] = DATASETS
    require_labels: bool = False
    limit: bool = True
    data_help: str = "dataset root"

    def add(self, parser):
        parser.add_argument("--data", required=self.required, help=self.data_help)
        parser.add_argument("--dataset", default="cityscapes", choices=self.datasets,
                            help="layout of --data" + (" (folder: any images, no labels)" if "folder" in self.datasets else ""))
        parser.add_argument("--split", default="val", help="split folder (Cityscapes leftImg8bit/SPLIT, CamVid SPLIT)")
        if self.limit:
            parser.add_argument("--limit", type=int, help="use only the first N images (default: all)")

    def check(self, args):
        if self.limit:
            positive("--limit", args.limit)

    def build(self, args):
        """The dataset, or None when --data is optional and absent."""
        from .data import open_dataset

        self.check(args)
        if args.data is None:
            return None
        return open_dataset(args.data, args.dataset, args.split, require_labels=self.require_labels)


@dataclass
class Output:
    """``-o/--out``: the folder a command writes into."""

    default: str = "exports"
    what: str = "output directory"

    def add(self, parser):
        parser.add_argument("-o", "--out", default=self.default, help=self.what)

    def build(self, args):
        from .fileio import ensure_writable_dir

        if os.path.isfile(args.out):
            raise SanetError("-o {} is a file: give a folder".format(args.out))
        return ensure_writable_dir(args.out)


@dataclass
class Resolutions:
    """``--res H W`` (repeatable)."""

    default: Optional[Tuple[int, int]] = (1024, 2048)

    def add(self, parser):
        parser.add_argument("--res", nargs=2, action="append", metavar=("H", "W"), help="input resolution, repeatable "
                            "(default: {})".format("{}x{}".format(*self.default) if self.default else "512x1024, 768x1536, 1024x2048"))

    def build(self, args):
        if args.res:
            return parse_resolutions(args.res)
        return [tuple(self.default)] if self.default else None


@dataclass
class Calibration:
    """INT8 calibration (``--calib`` ...) and, with ``full``, the Q/DQ quantizer and its parity check."""

    full: bool = True
    count: int = 500

    def add(self, parser):
        group = parser.add_argument_group("INT8 calibration")
        group.add_argument("--calib", help="calibration images: a Cityscapes root (uses leftImg8bit/train) or an image folder")
        group.add_argument("--calib-count", type=int, default=self.count, help="number of calibration crops")
        if not self.full:
            return
        group.add_argument("--qdq", action="store_true", help="write a Q/DQ INT8 ONNX (ONNX Runtime CPU; TensorRT 10/11 build it)")
        group.add_argument("--qdq-activations", choices=("int8", "uint8"), default="int8",
                           help="int8: symmetric, TensorRT-compatible; uint8: fastest on ONNX Runtime x86")
        group.add_argument("--calib-mode", choices=("random", "grid"), default="random", help="where crops are cut")
        group.add_argument("--calib-seed", type=int, default=0, help="seed of the crop positions")
        group.add_argument("--calib-method", choices=("entropy", "minmax", "percentile"),
                           help="default: minmax (TensorRT's calibrator on the classic route and the Q/DQ quantizer)")
        group.add_argument("--calib-res", nargs=2, metavar=("H", "W"),
                           help="Q/DQ: calibrate once on crops at this resolution and reuse its activation ranges for "
                                "every --res (default: each resolution on its own crops)")
        group.add_argument("--int8-keep", nargs="+", default=[], metavar="GROUP",
                           help="layer groups kept in float, e.g. conv_out32 sff1 sff2 (default: none)")
        group.add_argument("--int8-fallback", choices=("none", "auto"), default="none",
                           help="auto: move layer groups back to float until INT8 parity holds (needs --parity-data)")
        group.add_argument("--parity-data", help="labelled dataset root for the Q/DQ parity check against PyTorch")
        group.add_argument("--parity-dataset", default="cityscapes", choices=DATASETS, help="layout of --parity-data")
        group.add_argument("--parity-split", default="val", help="split of --parity-data")
        group.add_argument("--parity-limit", type=int, help="check only the first N images (default: all)")

    def wanted(self, args, int8_engine=False):
        return bool(args.calib) or int8_engine or (self.full and args.qdq)

    def build_export(self, args, precisions, engine_config):
        """sanet-export's (CalibSettings or None, INT8 quantizer ranges or None). A QAT checkpoint (sanet.qat) carries its
        ranges: nothing is calibrated, and its INT8 engines build from its own Q/DQ ONNX on every TensorRT."""
        from .qat import read_ranges

        ranges = read_ranges(args.checkpoint) if args.checkpoint else None
        if ranges is None:
            return self.build(args, int8_engine="int8" in precisions, batch=args.batch), None
        if engine_config.int8_route == "auto":
            engine_config.int8_route = "qdq"
        return self.build_qat(args), ranges

    def build_qat(self, args):
        """For a QAT checkpoint (sanet.qat): its Q/DQ ONNX comes from the ranges it carries, so calibration flags are
        refused (they would be ignored); CalibSettings carrying only the parity data, or None without it."""
        from .pipeline import CalibSettings

        given = [flag for flag, used in (
            ("--calib", args.calib), ("--calib-method", args.calib_method), ("--calib-res", args.calib_res),
            ("--int8-keep", args.int8_keep), ("--int8-fallback auto", args.int8_fallback == "auto"),
            ("--qdq-activations uint8", args.qdq_activations == "uint8"), ("--int8-route classic", args.int8_route == "classic"))
            if used]
        if given:
            raise SanetError("{} is a QAT checkpoint: INT8 takes the quantizer ranges it was trained with, so {} would be "
                             "ignored: drop it".format(args.checkpoint, given[0]))
        positive("--parity-limit", args.parity_limit)
        parity = self.parity(args)
        return CalibSettings(None, parity_dataset=parity, parity_limit=args.parity_limit) if parity else None

    @staticmethod
    def parity(args):
        """The --parity-data dataset (labels optional), or None without it."""
        if not args.parity_data:
            return None
        from .data import open_dataset

        return open_dataset(args.parity_data, args.parity_dataset, args.parity_split, require_labels=False)

    def build(self, args, int8_engine=False, batch=1, quiet=False):
        """CalibSettings, or None when nothing asks for INT8. Checks the folder holds images before any export."""
        from .calibration import find_calibration_images
        from .pipeline import CalibSettings

        positive("--calib-count", args.calib_count)
        full = self.full
        if full:
            positive("--parity-limit", args.parity_limit)
            if args.int8_fallback == "auto" and not args.parity_data:
                raise SanetError("--int8-fallback auto measures parity: add --parity-data ROOT")
        needs = int8_engine or (full and args.qdq)
        parity = self.parity(args) if full else None
        if not needs:  # no INT8 here; the images may still serve the FP16 range audit
            return CalibSettings(args.calib, args.calib_count, parity_dataset=parity, quiet=quiet) if args.calib or parity else None
        if not args.calib:
            raise SanetError("INT8 needs calibration images: add --calib DIR (Cityscapes root or an image folder)")
        images = find_calibration_images(args.calib)
        if len(images) < batch:
            raise SanetError("calibration folder {} has {} image(s): point --calib at Cityscapes leftImg8bit/train or "
                             "a folder of street images".format(args.calib, len(images)))
        if args.calib_count < batch:
            raise SanetError("--calib-count {} is below the batch {}: raise it".format(args.calib_count, batch))
        if not full:
            return CalibSettings(args.calib, args.calib_count, quiet=quiet)
        calib_res = parse_resolutions([args.calib_res], "--calib-res")[0] if args.calib_res else None
        return CalibSettings(args.calib, args.calib_count, args.calib_mode, args.calib_seed, args.calib_method,
                             args.qdq_activations, tuple(args.int8_keep), args.int8_fallback, parity, args.parity_limit,
                             quiet=quiet, resolution=calib_res)


class EngineBuild:
    """TensorRT engine flags: which precisions, and the builder settings (an EngineConfig template)."""

    def add(self, parser):
        group = parser.add_argument_group("TensorRT engines (built on the target device)")
        for precision in PRECISIONS:
            group.add_argument("--" + precision, action="store_true", help="build a {} engine".format(precision.upper()))
        group.add_argument("--int8-route", choices=("auto", "classic", "qdq"), default="auto",
                           help="auto: the route table's pick per TensorRT release (classic calibrator on 8.5, Q/DQ "
                                "from 10; docs/tensorrt-routes.md)")
        group.add_argument("--workspace", type=int, default=2048, help="builder workspace limit in MiB")
        group.add_argument("--timing-cache", help="timing cache file reused across builds (default: OUT/timing-TENSORRT_VERSION.cache)")
        group.add_argument("--opt-level", type=int, help="builder optimisation level 0-5 (TensorRT >= 8.6; default: TensorRT's)")
        group.add_argument("--dla-core", type=int, help="run on this DLA core with GPU fallback (Jetson; default: GPU only)")

    def build(self, args):
        """(precisions, EngineConfig template)."""
        from .engines import EngineConfig

        precisions = tuple(p for p in PRECISIONS if getattr(args, p))
        positive("--workspace", args.workspace)
        positive("--dla-core", args.dla_core, allow_zero=True)
        if args.opt_level is not None and not 0 <= args.opt_level <= 5:
            raise SanetError("--opt-level must be 0-5 (got {})".format(args.opt_level))
        if args.dla_core is not None and precisions and set(precisions) == {"fp32"}:
            raise SanetError("DLA runs FP16 or INT8 only: add --fp16 or --int8 to use --dla-core")
        if args.timing_cache and os.path.isdir(args.timing_cache):
            raise SanetError("--timing-cache {} is a folder: give a file path".format(args.timing_cache))
        config = EngineConfig("fp16", args.workspace, args.timing_cache, args.opt_level, args.dla_core, args.int8_route,
                              getattr(args, "calib_method", None))  # the route refuses a method it has no calibrator for
        return precisions, config


class ExportFormat:
    """What the ONNX looks like: opset, batch, in-graph pre/post-processing, simplification, dynamic H x W."""

    def add(self, parser):
        from .export import OUTPUTS

        parser.add_argument("--opset", type=int, default=17, help="ONNX opset, {}-{} (17: TensorRT 8.5 on Jetson)".format(*OPSETS)
                            + " (default: %(default)s)")
        parser.add_argument("--dynamic", action="store_true",
                            help="one ONNX with dynamic H and W (verified at every --res); engines need static files")
        parser.add_argument("--batch", type=int, default=1, help="static batch size of the ONNX and engines")
        parser.add_argument("--input", dest="input_layout", choices=INPUT_LAYOUTS, default=INPUT_LAYOUTS[0],
                            help="float-nchw: normalised float input; uint8-nhwc: raw RGB frames, normalised in the graph")
        parser.add_argument("--output", choices=OUTPUTS, default=OUTPUTS[0], help="logits, or argmax class map in the graph")
        parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
        parser.add_argument("--dla-friendly", action="store_true",
                            help="SCE pooling and SFF upsampling from ops Jetson DLAs run (exact average pools where "
                                 "the bins are uniform; half-pixel 2x bilinear, close to align_corners: check parity); "
                                 "docs/simulator.md")

    def build(self, args):
        """ExportConfig template (H, W are set per resolution)."""
        from .export import ExportConfig

        if not OPSETS[0] <= args.opset <= OPSETS[1]:
            raise SanetError("--opset {} is not supported: use {}-{} (17 for TensorRT 8.5 on Jetson)".format(args.opset, *OPSETS))
        positive("--batch", args.batch)
        return ExportConfig(opset=args.opset, batch=args.batch, input_layout=args.input_layout, output=args.output,
                            simplify=not args.no_simplify, dla_friendly=args.dla_friendly)


class JsonReport:
    """``--json FILE``: also write the result as JSON (checked writable before the work starts)."""

    def add(self, parser):
        parser.add_argument("--json", help="also write the result to this JSON file")

    def build(self, args):
        path = args.json
        if path and (os.path.isdir(path) or not os.path.isdir(os.path.dirname(os.path.abspath(path)))):
            raise SanetError("--json {}: give a file in an existing folder".format(path))
        return path


def _size(args, flag="--size"):
    return tuple(parse_resolutions([[str(v) for v in args.size]], flag)[0]) if args.size else None


class SynthOptions:
    """sanet-synth: where and how many procedural frames."""

    def add(self, parser):
        parser.add_argument("out", help="dataset root to create (leftImg8bit/ and gtFine/ go inside)")
        parser.add_argument("--size", nargs=2, type=int, default=(256, 512), metavar=("H", "W"), help="frame size, each >= 64")
        parser.add_argument("--train", type=int, default=200, help="training frames")
        parser.add_argument("--val", type=int, default=50, help="validation frames")
        parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same scenes)")

    def build(self, args):
        from .synth import SynthConfig

        positive("--train", args.train, allow_zero=True)
        positive("--val", args.val, allow_zero=True)
        if args.train + args.val == 0:
            raise SanetError("--train and --val are both 0: ask for at least one frame")
        if min(args.size) < 64:
            raise SanetError("--size {} {} is too small: frames need H and W >= 64".format(*args.size))
        if os.path.isfile(args.out):
            raise SanetError("{} is a file: give a folder for the dataset".format(args.out))
        return SynthConfig(args.size[0], args.size[1], args.train, args.val, args.seed)


class EvalOptions:
    """sanet-eval: test-time resizing, scales, flips and the submission folder."""

    def add(self, parser):
        parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                            help="resize inputs to H x W (default: the runner's fixed size, else the image's)")
        parser.add_argument("--scales", nargs="+", type=float, default=[1.0], help="multi-scale factors, e.g. 0.75 1 1.25")
        parser.add_argument("--flip", action="store_true", help="add horizontally flipped predictions")
        parser.add_argument("--submit", help="write Cityscapes test-server PNGs (labelIds) to this folder")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def build(self, args):
        """dict of evaluate() keyword arguments."""
        if any(scale <= 0 for scale in args.scales):
            raise SanetError("--scales must be positive factors, e.g. 0.75 1 1.25")
        if args.submit and args.dataset != "cityscapes":
            raise SanetError("--submit writes Cityscapes labelIds; it is for --dataset cityscapes")
        if args.submit and os.path.isfile(args.submit):
            raise SanetError("--submit {} is a file: give a folder".format(args.submit))
        return {"scales": tuple(args.scales), "flip": args.flip, "size": _size(args), "submit_dir": args.submit,
                "limit": args.limit, "progress": not args.no_progress}


class TrainOptions:
    def add(self, parser):
        parser.add_argument("--config", required=True, help="YAML config, e.g. configs/cityscapes.yaml")
        parser.add_argument("--resume", help="continue from a last.pt training checkpoint")
        parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. epochs=10 batch_size=4 (default: none)")

    def check(self, args):
        check_file(args.config, "config", "--config")
        if args.resume:
            check_file(args.resume, "resume checkpoint", "--resume")
        bad = [item for item in args.overrides if "=" not in item or item.startswith("=")]
        if bad:
            raise SanetError("override {!r} is not key=value (e.g. epochs=10)".format(bad[0]))


class ParityOptions:
    """sanet-parity: emulated precisions and the budget."""

    def add(self, parser):
        from .parity import BUDGETS

        parser.add_argument("--emulate", choices=("fp16", "int8", "int8-classic"), help="run the --onnx model with this "
                            "precision emulated on the CPU and apply its budget: fp16 and int8-classic (TensorRT 8.5's "
                            "calibrator, needs --calib) take the FP32 export, int8 a Q/DQ file (default: off)")
        parser.add_argument("--budget", choices=sorted(BUDGETS), help="budget to apply (default: the candidate's precision)")
        parser.add_argument("--min-pixel-agreement", type=float, help="override the budget (fraction, e.g. 0.9999)")
        parser.add_argument("--max-delta-miou", type=float, help="override the budget (fraction, e.g. 0.001 = 0.1 pt)")
        group = parser.add_argument_group("--emulate int8-classic (writes ONNX_int8_classic_METHOD.onnx next to --onnx)")
        group.add_argument("--calib", help="calibration images: a Cityscapes root (uses leftImg8bit/train) or an image folder")
        group.add_argument("--calib-count", type=int, default=64, help="number of calibration crops")
        group.add_argument("--calib-method", choices=("entropy", "minmax"), default=CLASSIC_CALIBRATOR,
                           help="TensorRT's calibrator emulated: minmax (IInt8MinMaxCalibrator, sanet-export's default) or "
                                "entropy (IInt8EntropyCalibrator2)")
        group.add_argument("--int8-keep", nargs="+", default=[], metavar="GROUP",
                           help="layer groups left in float, as sanet-export --int8 --int8-keep pins them (default: none)")

    def check(self, args):
        for name in ("min_pixel_agreement", "max_delta_miou"):
            value = getattr(args, name)
            if value is not None and value < 0:  # above 1 is allowed: an unmeetable budget forces FAIL on purpose
                raise SanetError("--{} is a fraction, e.g. 0.999 (got {})".format(name.replace("_", "-"), value))
        if args.emulate and not args.onnx:
            raise SanetError("--emulate runs an exported model: add --onnx MODEL")
        if not args.checkpoint:
            raise SanetError("give the CHECKPOINT the candidate was exported from (the PyTorch FP32 reference)")
        classic = args.emulate == "int8-classic"
        if classic and not args.calib:
            raise SanetError("--emulate int8-classic calibrates as TensorRT 8.5 does: add --calib DIR (training images)")
        if not classic and (args.calib or args.int8_keep):
            raise SanetError("--calib and --int8-keep are for --emulate int8-classic: add it or drop them")
        positive("--calib-count", args.calib_count)

    def candidate(self, args, runner_source, model):
        if args.emulate:
            from .numerics import EmulatedRunner

            if args.emulate == "int8-classic":
                from .calibration import classic_emulation

                path = classic_emulation(args.onnx, args.calib, args.calib_count, args.calib_method, args.int8_keep, print)
                return EmulatedRunner(path, "int8")
            return EmulatedRunner(args.onnx, args.emulate)
        return runner_source.build(args, model)

    def budget(self, args, precision):
        from .parity import BUDGETS, Budget

        emulated = "int8" if args.emulate == "int8-classic" else args.emulate
        base = BUDGETS.get(args.budget or emulated or precision, Budget())
        return Budget(args.min_pixel_agreement if args.min_pixel_agreement is not None else base.min_pixel_agreement,
                      base.min_agreement_miou, args.max_delta_miou if args.max_delta_miou is not None else base.max_delta_miou)


class InferOptions:
    """sanet-infer: inputs and how masks are drawn."""

    def add(self, parser):
        parser.add_argument("inputs", nargs="+", help="image/video files, folders, globs, a camera index (0) or an rtsp:// URL")

    def add_drawing(self, parser):
        parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network input size for --checkpoint "
                            "(default: the runner's fixed size, else the frame's)")
        parser.add_argument("--palette", choices=["auto", "cityscapes", "camvid"], default="auto", help="mask colours")
        parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in overlays, 0-1")
        parser.add_argument("--max-frames", type=int, help="stop each video/stream after N frames (default: until it ends)")

    def build(self, args):
        from .infer import InferConfig

        if not 0 <= args.alpha <= 1:
            raise SanetError("--alpha is an opacity between 0 and 1 (got {})".format(args.alpha))
        positive("--max-frames", args.max_frames)
        if args.checkpoint and (args.onnx or args.engine or args.openvino):
            raise SanetError("give one of --checkpoint, --onnx, --engine or --openvino")
        return InferConfig(args.out, _size(args), args.palette, args.alpha, args.max_frames)


class ExportExtras:
    """sanet-export: Triton repository and TensorRT parser lint."""

    def add(self, parser):
        parser.add_argument("--triton", metavar="REPO", help="also write a Triton model repository (ONNX with dynamic "
                            "batching, plus any engines built)")
        parser.add_argument("--triton-max-batch", type=int, default=8, help="Triton max_batch_size for the ONNX model")
        parser.add_argument("--trt-check", action="append", choices=TRT_RELEASES, default=[],
                            help="lint the ONNX files against this TensorRT release's parser rules, repeatable (default: none)")

    def check(self, args, precisions):
        positive("--triton-max-batch", args.triton_max_batch)
        if args.triton and os.path.isfile(args.triton):
            raise SanetError("--triton {} is a file: give a folder for the model repository".format(args.triton))
        if args.dynamic and (precisions or args.qdq or args.triton):
            raise SanetError("--dynamic writes one ONNX for any H x W; engines, --qdq and --triton need static sizes: "
                             "drop --dynamic for those")
