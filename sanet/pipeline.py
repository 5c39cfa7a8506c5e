"""The artifact pipeline: checkpoint -> FP32 ONNX -> Q/DQ INT8 ONNX -> TensorRT engine, and the one table of
what each artifact is called, how it is built, how it is verified and which runner opens it.

Both ``sanet-export`` and ``sanet-bench`` go through this module; nothing else knows a file name.

Interface::

    from sanet.pipeline import ARTIFACTS, CalibSettings, Pipeline, ExportRequest, export_all, weights_digest

    pipeline = Pipeline(model,                      # a SANet in eval mode; never modified (copies are exported)
                        source_sha256=None,          # sha256 of the checkpoint file (provenance in metadata)
                        out_dir="exports",           # every artifact lands here (Triton repos: wherever asked)
                        export_config=ExportConfig(),  # template: opset/batch/layout/output/simplify; H, W per call
                        calib_config=CalibSettings(root="data/cityscapes"),  # None: no INT8
                        engine_config=EngineConfig(),  # template: workspace/timing cache/DLA/route; precision per call
                        report=print,                # progress lines (default: silent)
                        reuse=False,                 # True: keep artifacts already on disk when they verify
                        tag=None,                    # appended to every file stem, e.g. weights_digest(model)[:12]
                        verify=True)                 # False: FP32 ONNX not run at export (the bench: its parity rows
                                                     # run the same files against PyTorch on real frames)

    pipeline.onnx((H, W))                 -> path of the verified FP32 ONNX (exported on first call)
    pipeline.manifest((H, W))             -> calibration manifest dict (crops planned once, written to {stem}.calib.json)
    pipeline.qdq((H, W), "int8"|"uint8")  -> path of the Q/DQ ONNX (parity-checked when CalibSettings has a dataset)
    pipeline.engine((H, W), "fp16")       -> path of the plan (+ .json sidecar); INT8 picks its route (classic / Q/DQ)
    pipeline.fp16_audit((H, W), images)   -> sanet.numerics FP16 range audit of the ONNX (recorded in the fp16 sidecar)
    pipeline.runner(kind, (H, W), ...)    -> an un-activated Runner: kind "onnx" | "qdq" | "engine"
                                             (precision= for engines, activations= for qdq, providers=, cuda_graph=)
    pipeline.dynamic_onnx(sizes)          -> (path, max |diff|): one ONNX with symbolic H, W checked at every size
    pipeline.triton_onnx((H, W), repo, max_batch) / pipeline.triton_plan(plan, (H, W), precision, repo) -> folder
    pipeline.path(kind, (H, W), precision=None) -> where an artifact goes (nothing is built)
    pipeline.notes[path]                  -> the check line recorded when the artifact was built or reused

    export_all(pipeline, sizes, ExportRequest(...)) -> (rows, missing, violations)
        the sanet-export orchestration: per size ONNX, Q/DQ, FP16 range audit (with fp16 engines and
        ExportRequest.fp16_audit images, e.g. audit_images(calib)), Triton, engines, TensorRT lint;
        rows: [file, MiB, kind, check]; missing: what needs TensorRT here; violations: {onnx: {release: [...]}}.

Every method is lazy and cached per call arguments: asking twice costs nothing, and with ``reuse=True`` a file
left by an earlier run is used again only if its metadata (ONNX) or sidecar (engine) proves it was made from the
same weights, settings and, for engines, on this system. Layering: this module calls export, calibration,
engines and runners; it never imports the CLI or the bench.
"""
import dataclasses
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from .errors import SanetError
from .export import ExportConfig
from .fileio import atomic_path


@dataclass(frozen=True)
class ArtifactSpec:
    kind: str
    pattern: str  # file name; {stem} = {variant}_{H}x{W}_b{batch}[_{layout}_{output}][_{tag}]
    built_by: str
    verified_by: str
    opened_by: str  # runner class, "-" for files no runner opens

    def file_name(self, **fields):
        return self.pattern.format(**fields)


ARTIFACTS = {spec.kind: spec for spec in (
    ArtifactSpec("onnx", "{stem}.onnx", "export.export_onnx (BatchNorm folded, onnxslim, sanet metadata)",
                 "ONNX Runtime vs PyTorch on a test input before the rename; reuse: metadata matches", "runners.OrtRunner"),
    ArtifactSpec("onnx-dynamic", "{stem}.onnx", "export.export_onnx(dynamic=True); stem says 'dynamic' for H x W",
                 "ONNX Runtime vs PyTorch at every --res", "runners.OrtRunner"),
    ArtifactSpec("calibration", "{stem}.calib.json", "calibration.plan_crops (files + boxes, hashed)",
                 "calibration.read_manifest (hash)", "-"),
    ArtifactSpec("qdq", "{stem}_int8_qdq.onnx", "calibration.quantize_qdq (int8 activations: TensorRT 10/11)",
                 "parity vs PyTorch FP32 when parity data is given; reuse: metadata calibration hash", "runners.OrtRunner"),
    ArtifactSpec("qdq-uint8", "{stem}_uint8_qdq.onnx", "calibration.quantize_qdq (uint8 activations: ORT x86)",
                 "as qdq", "runners.OrtRunner"),
    ArtifactSpec("engine", "{stem}_{precision}{dla}.plan", "engines.build_engine (+ {plan}.json sidecar)",
                 "engines.check_engine: sidecar sha256 and system facts; reuse: sidecar onnx_sha256", "engines.TrtRunner"),
    ArtifactSpec("timing-cache", "timing.cache", "TensorRT builder (shared by every build in out_dir)", "TensorRT", "-"),
    ArtifactSpec("calibration-cache", "calibration-cache", "calibration.quantize_qdq activation ranges (folder)",
                 "key file next to each cache", "-"),
    ArtifactSpec("triton-onnx", "{variant}_{height}x{width}", "export.write_triton_model (dynamic batch ONNX)",
                 "ONNX Runtime vs PyTorch", "Triton onnxruntime_onnx"),
    ArtifactSpec("triton-plan", "{stem}_{precision}", "export.write_triton_model (copy of the plan)",
                 "engine sidecar", "Triton tensorrt_plan"),
)}


def weights_digest(model):
    """sha256 of the weights (names + bytes): cached artifacts are never reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class CalibSettings:
    """INT8 calibration and the optional Q/DQ parity check."""

    root: str  # Cityscapes root (leftImg8bit/train) or an image folder
    count: int = 500
    mode: str = "random"
    seed: int = 0
    method: Optional[str] = None  # None: minmax for Q/DQ, entropy for TensorRT calibrators
    activations: str = "int8"
    keep: Tuple[str, ...] = ()
    fallback: str = "none"  # "auto": move layer groups to float until the INT8 budget holds (needs parity_dataset)
    parity_dataset: object = None  # a SegmentationDataset; None skips the parity check
    parity_limit: Optional[int] = None
    quiet: bool = False  # silence the few-images warning (the bench calibrates on few images on purpose)
    # (H, W): calibrate once at this resolution and reuse its activation ranges for every other one (QuantizeConfig
    # .ranges_from); None: each resolution calibrates on its own crops.
    resolution: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        if self.fallback == "auto" and self.parity_dataset is None:
            raise SanetError("--int8-fallback auto measures parity: add --parity-data ROOT")


def _silent(_message):
    return None


class Pipeline:
    def __init__(self, model, source_sha256=None, out_dir="exports", export_config: Optional[ExportConfig] = None,
                 calib_config: Optional[CalibSettings] = None, engine_config=None, report: Optional[Callable] = None,
                 reuse=False, tag=None, verify=True):
        self.model, self.source_sha256, self.out_dir, self.verify = model, source_sha256, os.fspath(out_dir), verify
        self.export_config = export_config or ExportConfig()
        self.calib_config, self.engine_config = calib_config, engine_config
        self.report, self.reuse, self.tag = report or _silent, reuse, tag
        self.notes = {}  # path -> the check line of that artifact (max |diff|, parity, sidecar)
        self._done = {}

    # -- naming ---------------------------------------------------------------------------------

    def stem(self, resolution=None):
        """{variant}_{H}x{W}_b{batch}[_{layout}_{output}][_{tag}]; resolution None: the dynamic-H x W stem."""
        config = self.export_config
        default = (config.input_layout, config.output) == ("float-nchw", "logits")
        suffix = "" if default else "_{}_{}".format(config.input_layout.replace("-", ""), config.output)
        size = "dynamic" if resolution is None else "{}x{}".format(*resolution)
        tag = "_{}".format(self.tag) if self.tag else ""
        return "{}_{}_b{}{}{}".format(self.model.config.variant.replace("-", "_"), size, config.batch, suffix, tag)

    def path(self, kind, resolution=None, precision=None):
        """Where artifact ``kind`` (a key of ARTIFACTS) of this resolution goes; builds nothing."""
        spec = ARTIFACTS[kind]
        dla = self.engine_config.dla_core if self.engine_config is not None else None
        name = spec.file_name(stem=self.stem(resolution), precision=precision,
                              dla="" if dla is None else "_dla{}".format(dla))
        return os.path.join(self.out_dir, name)

    def _once(self, key, build):
        if key not in self._done:
            self._done[key] = build()
        return self._done[key]

    def _config(self, resolution, **changes):
        height, width = resolution
        return dataclasses.replace(self.export_config, height=height, width=width, **changes)

    # -- FP32 ONNX ------------------------------------------------------------------------------

    def onnx(self, resolution):
        return self._once(("onnx", tuple(resolution)), lambda: self._build_onnx(tuple(resolution)))

    def _build_onnx(self, resolution):
        from .export import export_onnx

        config = self._config(resolution)
        path = self.path("onnx", resolution)
        if self.reuse and self._onnx_matches(path, config):
            self.notes[path] = "reused (metadata matches)"
            return path
        self.report("exporting {} ...".format(path))
        max_diff = export_onnx(self.model, path, config, self._source(), verify=self.verify)
        self.notes[path] = "max |diff| {:.2e}".format(max_diff) if self.verify else "not run at export (verify=False)"
        return path

    def _source(self):
        """The provenance recorded in metadata: the checkpoint's sha256, else (reusable runs) the weights' own."""
        if self.source_sha256 or not self.reuse:
            return self.source_sha256
        return self._once("weights", lambda: "weights-" + weights_digest(self.model))

    def _onnx_matches(self, path, config, quantized=None):
        from . import __version__
        from .export import read_metadata

        if not os.path.isfile(path):
            return False
        try:
            meta = read_metadata(path)
        except SanetError:
            return False
        want = {"sanet.resolution": "{}x{}".format(config.height, config.width), "sanet.batch": str(config.batch),
                "sanet.input_layout": config.input_layout, "sanet.output": config.output,
                "sanet.opset": str(config.opset), "sanet.source_sha256": self._source() or "random-init",
                "sanet.variant": self.model.config.variant, "sanet.version": __version__}
        want.update(quantized or {"sanet.precision": "fp32"})
        return self._source() is not None and all(meta.get(k) == v for k, v in want.items())

    def dynamic_onnx(self, sizes):
        """One ONNX with symbolic H and W, verified at every size (plus half the first when only one is given)."""
        from .export import export_onnx

        (height, width), others = tuple(sizes[0]), [tuple(s) for s in sizes[1:]]
        if not others:
            others.append((max(32, height // 16 * 8), max(32, width // 16 * 8)))
        config = self._config((height, width), dynamic=True)
        path = self.path("onnx-dynamic")
        self.report("exporting {} (dynamic H x W) ...".format(path))
        max_diff = export_onnx(self.model, path, config, self.source_sha256, verify_sizes=others)
        self.notes[path] = "checked at {}: max |diff| {:.2e}".format(
            ", ".join("{}x{}".format(*s) for s in [(height, width)] + others), max_diff)
        return path, max_diff

    # -- INT8 -----------------------------------------------------------------------------------

    def _calib(self):
        if self.calib_config is None:
            raise SanetError("INT8 needs calibration images: add --calib DIR (Cityscapes root or an image folder)")
        return self.calib_config

    def calib_resolution(self, resolution):
        """Where the Q/DQ file at ``resolution`` takes its activation ranges from: CalibSettings.resolution, else itself."""
        return tuple(self._calib().resolution or resolution)

    def manifest(self, resolution):
        return self._once(("manifest", tuple(resolution)), lambda: self._plan_crops(tuple(resolution)))

    def _plan_crops(self, resolution):
        from .calibration import CropConfig, plan_crops, write_manifest

        calib = self._calib()
        crop = CropConfig(resolution[0], resolution[1], calib.count, calib.mode, calib.seed, self.export_config.batch)
        with warnings.catch_warnings():
            if calib.quiet:
                warnings.simplefilter("ignore")
            manifest = plan_crops(calib.root, crop)
        write_manifest(self.path("calibration", resolution), manifest)
        self.report("calibration: {} crops from {} images (manifest {})".format(
            len(manifest["crops"]), len(manifest["files"]), manifest["sha256"][:12]))
        return manifest

    def qdq(self, resolution, activations=None):
        activations = activations or self._calib().activations
        return self._once(("qdq", tuple(resolution), activations), lambda: self._build_qdq(tuple(resolution), activations))

    def _build_qdq(self, resolution, activations):
        from .calibration import QuantizeConfig, quantize_qdq, quantize_with_fallback
        from .parity import compare
        from .runners import OrtRunner, TorchRunner

        calib = self._calib()
        calib_at = self.calib_resolution(resolution)
        source, manifest = self.onnx(resolution), self.manifest(calib_at)
        path = self.path("qdq" if activations == "int8" else "qdq-uint8", resolution)
        config = QuantizeConfig(calib.method or "minmax", activations, keep=tuple(calib.keep),
                                ranges_from=self.onnx(calib_at) if calib_at != resolution else None)
        stamp = {"sanet.precision": "int8", "sanet.quantization": "qdq", "sanet.int8_activations": activations,
                 "sanet.calibration_sha256": manifest["sha256"], "sanet.calibration_method": config.method,
                 "sanet.calibration_resolution": "{}x{}".format(*calib_at), "sanet.float_groups": ",".join(config.keep)}
        if self.reuse and calib.fallback == "none" and self._onnx_matches(path, self._config(resolution), stamp):
            self.notes[path] = "reused (metadata matches)"
            return path
        cache_dir = os.path.join(self.out_dir, ARTIFACTS["calibration-cache"].pattern)
        self.report("quantizing {} ...".format(path))
        if calib.parity_dataset is None:
            quantize_qdq(source, path, manifest, config, cache_dir)
            self.notes[path] = "no parity data"
            return path
        # Quantized and checked on a temporary path: an INT8 model over budget (or interrupted) never takes the name.
        with atomic_path(path) as tmp, TorchRunner(self.model) as reference:
            if calib.fallback == "auto":
                result, moved = quantize_with_fallback(source, tmp, manifest, config, reference, calib.parity_dataset,
                                                       cache_dir=cache_dir, limit=calib.parity_limit, report=self.report)
                self.report("auto-fallback kept in float: {}".format(", ".join(list(config.keep) + moved) or "nothing"))
            else:
                quantize_qdq(source, tmp, manifest, config, cache_dir)
                with OrtRunner(tmp) as candidate:
                    result = compare(reference, candidate, calib.parity_dataset, limit=calib.parity_limit, progress=False)
                if not result.passed:
                    raise SanetError("INT8 Q/DQ model over its parity budget ({}): retry with --int8-fallback auto".format(
                        "; ".join(result.failures)))
        delta = "-" if result.delta_miou is None else "{:+.2f} pt".format(100 * result.delta_miou)
        self.notes[path] = "delta mIoU {}, pixel agreement {:.2%}".format(delta, result.pixel_agreement)
        return path

    # -- FP16 range audit -----------------------------------------------------------------------

    def fp16_audit(self, resolution, images, limit=None):
        """Max |x| of every tensor of the FP32 ONNX over ``images`` (sanet.numerics); the FP16 engine's sidecar
        records the verdict."""
        return self._once(("fp16-audit", tuple(resolution)), lambda: self._audit(tuple(resolution), images, limit))

    def _audit(self, resolution, images, limit):
        from .numerics import audit_lines, fp16_range_audit

        audit = fp16_range_audit(self.onnx(resolution), images, limit)
        for line in audit_lines(audit):
            self.report(line)
        return audit

    # -- TensorRT -------------------------------------------------------------------------------

    def int8_uses_qdq(self, resolution):
        """Whether this TensorRT builds INT8 from the Q/DQ ONNX (TensorRT >= 10, or --int8-route qdq)."""
        from .engines import EngineConfig, import_tensorrt, int8_route
        from .export import read_metadata

        route = self.engine_config.int8_route if self.engine_config is not None else "auto"
        return int8_route(EngineConfig("int8", int8_route=route), import_tensorrt().__version__,
                          read_metadata(self.onnx(resolution))) == "qdq"

    def engine(self, resolution, precision):
        return self._once(("engine", tuple(resolution), precision), lambda: self._build_engine(tuple(resolution), precision))

    def _build_engine(self, resolution, precision):
        from .engines import EngineConfig, build_engine, check_engine, import_tensorrt, system_facts
        from .fileio import sha256_file

        qdq = precision == "int8" and self.int8_uses_qdq(resolution)
        source = self.qdq(resolution, "int8") if qdq else self.onnx(resolution)
        manifest = self.manifest(resolution) if precision == "int8" and not qdq else None
        template = self.engine_config or EngineConfig()
        method = (self.calib_config.method if self.calib_config is not None else None) or template.calibration_method
        config = dataclasses.replace(
            template, precision=precision, calibration_method=method if method in ("entropy", "minmax") else "entropy",
            timing_cache=template.timing_cache or os.path.join(self.out_dir, ARTIFACTS["timing-cache"].pattern),
            keep=tuple(self.calib_config.keep) if self.calib_config is not None else template.keep)
        audit = self._done.get(("fp16-audit", resolution)) if precision == "fp16" else None
        if audit is not None:  # the verdict, not every tensor: sidecars stay small
            config.extra = dict(config.extra, fp16_range_audit={k: audit[k] for k in (
                "images", "max_abs", "fp16_max", "passed", "overflows", "warnings")})
        plan = self.path("engine", resolution, precision)
        if self.reuse:
            try:
                sidecar = check_engine(plan, system_facts(import_tensorrt()))
                if sidecar.get("onnx_sha256") == sha256_file(source):
                    self.notes[plan] = "reused (sidecar matches)"
                    return plan
            except SanetError:
                pass  # missing, stale or foreign: rebuilt below
        self.report("building {} ...".format(plan))
        build_engine(source, plan, config, manifest, report=self.report)
        self.notes[plan] = "sidecar .json"
        return plan

    # -- runners --------------------------------------------------------------------------------

    def runner(self, kind, resolution, precision=None, activations=None, providers=None, cuda_graph=False):
        """An un-activated runner on the artifact (built on demand): kind "onnx", "qdq" (ONNX Runtime), "openvino"
        (the ONNX in fp32/bf16, or with precision int8 the Q/DQ ONNX) or "engine"."""
        from .runners import OpenVinoRunner, OrtRunner

        if kind == "onnx":
            return OrtRunner(self.onnx(resolution), providers=providers)
        if kind == "qdq":
            return OrtRunner(self.qdq(resolution, activations), providers=providers)
        if kind == "openvino" and precision == "int8":
            return OpenVinoRunner(self.qdq(resolution, activations))
        if kind == "openvino":
            return OpenVinoRunner(self.onnx(resolution), precision or "fp32")
        if kind == "engine":
            from .engines import TrtRunner

            return TrtRunner(self.engine(resolution, precision or "fp16"), cuda_graph=cuda_graph)
        raise SanetError("unknown runner kind {!r}: use onnx, qdq, openvino or engine".format(kind))

    # -- Triton ---------------------------------------------------------------------------------

    def triton_onnx(self, resolution, repo, max_batch):
        """A dynamic-batch twin of the ONNX in a Triton model repository; returns the model folder."""
        from .export import export_onnx, io_signature, write_triton_model

        if max_batch < 1:
            raise SanetError("--triton-max-batch must be >= 1")
        name = ARTIFACTS["triton-onnx"].file_name(variant=self.model.config.variant.replace("-", "_"),
                                                  height=resolution[0], width=resolution[1])
        with tempfile.TemporaryDirectory() as scratch:
            onnx_path = os.path.join(scratch, "model.onnx")
            config = self._config(resolution, batch=1, dynamic_batch=True)
            max_diff = export_onnx(self.model, onnx_path, config, self.source_sha256)
            inputs, outputs = io_signature(onnx_path)
            folder = write_triton_model(repo, name, onnx_path, "onnxruntime_onnx", inputs, outputs, max_batch)
        self.notes[folder] = "max |diff| {:.2e}".format(max_diff)
        return folder

    def triton_plan(self, plan, resolution, precision, repo):
        from .export import io_signature, write_triton_model

        inputs, outputs = io_signature(self.onnx(resolution))  # the engine keeps the ONNX's names, dims and dtypes
        name = ARTIFACTS["triton-plan"].file_name(stem=self.stem(resolution), precision=precision)
        folder = write_triton_model(repo, name, plan, "tensorrt_plan", inputs, outputs, 0)
        self.notes[folder] = "static batch"
        return folder


@dataclass
class ExportRequest:
    """What sanet-export asks of the pipeline per resolution."""

    precisions: Tuple[str, ...] = ()  # TensorRT engines to build
    qdq: bool = False  # write the Q/DQ INT8 ONNX even without an INT8 engine
    triton: Optional[str] = None  # Triton model repository folder
    triton_max_batch: int = 8
    trt_check: Tuple[str, ...] = ()  # TensorRT releases to lint the ONNX files against ("8.5", "10", "11")
    fp16_audit: object = None  # images (a dataset or an iterable of uint8 RGB) for the FP16 range audit of --fp16
    fp16_audit_limit: Optional[int] = 16


def _size_mib(path):
    return "{:.1f}".format(os.path.getsize(path) / 2**20) if os.path.isfile(path) else "-"


def tensorrt_available():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def export_all(pipeline: Pipeline, sizes, request: ExportRequest):
    """sanet-export's work: returns (rows [file, MiB, kind, check], missing, violations); ``missing`` names what
    could not be built here (engines without TensorRT) after everything that could be built was."""
    has_trt = tensorrt_available() if request.precisions else False
    rows, lint = [], []
    for resolution in sizes:
        resolution = tuple(resolution)
        if request.qdq or (has_trt and "int8" in request.precisions):  # calibration problems surface before the export
            pipeline.manifest(pipeline.calib_resolution(resolution) if request.qdq else resolution)
        path = pipeline.onnx(resolution)
        rows.append([path, _size_mib(path), "fp32 onnx", pipeline.notes[path]])
        lint.append(path)
        if request.qdq or (has_trt and "int8" in request.precisions and pipeline.int8_uses_qdq(resolution)):
            qdq_path = pipeline.qdq(resolution)
            rows.append([qdq_path, _size_mib(qdq_path), "int8 q/dq onnx", pipeline.notes[qdq_path]])
            lint.append(qdq_path)
        if "fp16" in request.precisions and request.fp16_audit is not None:
            audit = pipeline.fp16_audit(resolution, request.fp16_audit, request.fp16_audit_limit)
            peak = audit["max_abs"] if isinstance(audit["max_abs"], str) else "{:.4g}".format(audit["max_abs"])
            rows.append([path, "-", "fp16 range audit", "{} over {} image(s): max |x| {}, {} overflow(s)".format(
                "PASS" if audit["passed"] else "OVERFLOW", audit["images"], peak, len(audit["overflows"]))])
        if request.triton:
            folder = pipeline.triton_onnx(resolution, request.triton, request.triton_max_batch)
            rows.append([folder, "-", "triton onnx", pipeline.notes[folder]])
        for precision in request.precisions if has_trt else ():
            plan = pipeline.engine(resolution, precision)
            rows.append([plan, _size_mib(plan), "{} engine".format(precision), pipeline.notes[plan]])
            if request.triton:
                folder = pipeline.triton_plan(plan, resolution, precision, request.triton)
                rows.append([folder, "-", "triton plan", pipeline.notes[folder]])
    violations = trt_lint(lint, request.trt_check)
    missing = [] if has_trt or not request.precisions else [
        "/".join(request.precisions) + (" engines" if len(request.precisions) > 1 else " engine")]
    return rows, missing, violations


def trt_lint(paths, releases):
    """{path: {release: [violation, ...]}} for every ONNX against every TensorRT release asked for."""
    if not releases:
        return {}
    from .export import trt_check

    return {path: trt_check(path, tuple(releases)) for path in paths}


class _ImageFiles:
    """Re-iterable uint8 RGB images read one at a time (each resolution's audit walks them again)."""

    def __init__(self, root, names):
        self.root, self.names = root, names

    def __iter__(self):
        from .data import read_image

        return (read_image(os.path.join(self.root, name)) for name in self.names)


def audit_images(calib: Optional[CalibSettings], limit=16):
    """Images for the FP16 range audit: the parity dataset, else the calibration images, else None."""
    if calib is None:
        return None
    if calib.parity_dataset is not None:
        return calib.parity_dataset
    from .calibration import find_calibration_images

    return _ImageFiles(calib.root, find_calibration_images(calib.root)[:limit])
