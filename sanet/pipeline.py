"""The artifact pipeline: checkpoint -> FP32 ONNX -> (FP16 ONNX | Q/DQ INT8 ONNX -> its FP16 twin) -> TensorRT
engine, and the one table of what each artifact is called, how it is built, how it is verified and which runner
opens it. Which ONNX an engine is built from is the route's call (sanet.routes.route_for, via ``Pipeline.route``).

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
                        verify=True,                 # False: FP32 ONNX not run at export (the bench: its parity rows
                                                     # run the same files against PyTorch on real frames)
                        quant_ranges=None)           # a QAT checkpoint's ranges (sanet.qat.read_ranges): the Q/DQ ONNX
                                                     # is written from them, no crops (calib_config: parity data only)

    pipeline.onnx((H, W))                 -> path of the verified FP32 ONNX (exported on first call)
    pipeline.manifest((H, W))             -> calibration manifest dict (crops planned once, written to {stem}.calib.json)
    pipeline.qdq((H, W), "int8"|"uint8")  -> path of the Q/DQ ONNX (parity-checked when CalibSettings has a dataset)
    pipeline.fp16_onnx((H, W))            -> path of the FP16 ONNX (strongly typed FP16 engines build from it)
    pipeline.qdq_fp16((H, W))             -> path of the Q/DQ ONNX with FP16 float parts (strongly typed INT8)
    pipeline.route("int8")                -> sanet.routes.Route this machine's TensorRT takes for that precision
    pipeline.onnx_for(route.onnx, (H, W)) -> the ONNX artifact a route builds from (onnx | onnx-fp16 | qdq | qdq-fp16)
    pipeline.engine((H, W), "fp16")       -> path of the plan (+ .json sidecar), built from the route's ONNX
    pipeline.fp16_audit((H, W), images)   -> sanet.numerics FP16 range audit of the ONNX (images: None = audit_images)
    pipeline.runner(kind, (H, W), ...)    -> an un-activated Runner: kind "onnx" | "qdq" | "engine"
                                             (precision= for engines, activations= for qdq, providers=, cuda_graph=)
    pipeline.dynamic_onnx(sizes)          -> (path, max |diff|): one ONNX with symbolic H, W checked at every size
    pipeline.triton_onnx((H, W), repo, max_batch) / pipeline.triton_plan(plan, (H, W), precision, repo) -> folder
    pipeline.path(kind, (H, W), precision=None) -> where an artifact goes (nothing is built)
    pipeline.notes[path]                  -> the check line recorded when the artifact was built or reused

    export_all(pipeline, sizes, ExportRequest(...)) -> (rows, missing, violations)
        the sanet-export orchestration: per size ONNX, Q/DQ, FP16 range audit (with fp16 engines and
        ExportRequest.fp16_audit images, default audit_images(calib)), FP16 ONNX (where the route builds from it,
        and always without TensorRT), Triton, engines, TensorRT lint;
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

import numpy as np

from .errors import SanetError
from .export import ExportConfig
from .fileio import atomic_path
from .numerics import audit_images


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
    ArtifactSpec("onnx-fp16", "{stem}_fp16.onnx", "numerics.to_fp16 of the FP32 ONNX, float32 islands from its FP16 "
                 "range audit (recorded in the metadata)", "emulated FP16 vs the FP32 ONNX on the audit's first images "
                 "within the fp16 pixel budget; reuse: metadata (audit images' digest)", "runners.OrtRunner"),
    ArtifactSpec("qdq-fp16", "{stem}_int8_qdq_fp16.onnx", "numerics.to_fp16 of the Q/DQ ONNX (opset 19, FP16 scales)",
                 "parity of its emulation vs PyTorch FP32 when parity data is given; reuse: metadata", "runners.OrtRunner"),
    ArtifactSpec("engine", "{stem}_{precision}{dla}.plan", "engines.build_engine from the route's ONNX (+ {plan}.json)",
                 "engines.check_engine: sidecar sha256 and system facts; reuse: sidecar key (engines.build_key)",
                 "engines.TrtRunner"),
    ArtifactSpec("timing-cache", "timing-{tensorrt}.cache", "TensorRT builder (shared by every build in out_dir with "
                 "this TensorRT: a cache never serves another version)", "TensorRT", "-"),
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
    method: Optional[str] = None  # None: minmax (the Q/DQ quantizer's and, constants.CLASSIC_CALIBRATOR, TensorRT's)
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
    """Builds, names and caches every artifact of one model (the module docstring lists all methods).

    Args:
        model: a SANet in eval mode (``load_model``); never modified, copies are exported.
        source_sha256: sha256 of the checkpoint file, recorded as provenance in every artifact's metadata.
        out_dir: the folder every artifact is written to.
        export_config: ExportConfig template (opset, batch, layout, output); H and W come with each call.
        calib_config: CalibSettings (calibration images, method, parity data); None: no INT8 from calibration.
        engine_config: EngineConfig template (workspace, timing cache, DLA, INT8 route); precision comes with each call.
        report: callable taking one progress line (default: silent).
        reuse: keep a file already on disk when its metadata or sidecar proves it was made from the same inputs.
        tag: appended to every file stem. verify: run the FP32 ONNX against PyTorch at export.
        quant_ranges: a QAT checkpoint's ranges (sanet.qat.read_ranges); the Q/DQ ONNX is written from them.
    Every method taking a resolution wants (H, W), multiples of 8, and returns a path (str); results are cached
    per arguments. Errors a user can cause raise SanetError.
    """

    def __init__(self, model, source_sha256=None, out_dir="exports", export_config: Optional[ExportConfig] = None,
                 calib_config: Optional[CalibSettings] = None, engine_config=None, report: Optional[Callable] = None,
                 reuse=False, tag=None, verify=True, quant_ranges=None):
        self.model, self.source_sha256, self.out_dir, self.verify = model, source_sha256, os.fspath(out_dir), verify
        self.quant_ranges = quant_ranges
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
        suffix += "_dlafriendly" if config.dla_friendly else ""
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
        """Returns the path of the verified FP32 ONNX at (H, W), exported on the first call."""
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
        if self.quant_ranges is not None:  # a QAT checkpoint's ranges hold at every resolution
            return tuple(resolution)
        return tuple(self._calib().resolution or resolution)

    def manifest(self, resolution):
        if self.quant_ranges is not None:  # a QAT checkpoint carries its ranges: no crops are planned
            return None
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
        """Returns the path of the Q/DQ INT8 ONNX at (H, W): calibrated on ``calib_config``'s crops (or written from a
        QAT checkpoint's ranges) and, with parity data, refused when over the INT8 parity budget. ``activations``:
        "int8" (TensorRT) or "uint8" (ONNX Runtime on x86); None takes CalibSettings.activations."""
        if self.quant_ranges is not None:
            if activations not in (None, "int8"):
                raise SanetError("a QAT checkpoint's Q/DQ ONNX has the symmetric int8 activations it was trained with, "
                                 "not {}: drop --qdq-activations {}".format(activations, activations))
            return self._once(("qdq", tuple(resolution), "int8"), lambda: self._build_qat_qdq(tuple(resolution)))
        activations = activations or self._calib().activations
        return self._once(("qdq", tuple(resolution), activations), lambda: self._build_qdq(tuple(resolution), activations))

    def _build_qdq(self, resolution, activations):
        from .calibration import QuantizeConfig, quantize_qdq, quantize_with_fallback
        from .parity import compare
        from .runners import OrtRunner, TorchRunner

        calib = self._calib()
        calib_at = self.calib_resolution(resolution)
        source = self.onnx(resolution)
        _refuse_all_float(source, calib.keep)
        manifest = self.manifest(calib_at)
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
                _refuse_all_float(source, list(config.keep) + moved)
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

    def _build_qat_qdq(self, resolution):
        """The Q/DQ ONNX of a QAT checkpoint: Q/DQ where training fake-quantized, from the ranges the checkpoint carries
        (sanet.qat.write_qdq; nothing is calibrated), parity-checked against PyTorch FP32 when there is parity data."""
        from .parity import compare
        from .qat import qdq_metadata, write_qdq
        from .runners import OrtRunner, TorchRunner

        source, path = self.onnx(resolution), self.path("qdq", resolution)
        if self.reuse and self._onnx_matches(path, self._config(resolution), qdq_metadata(self.quant_ranges)):
            self.notes[path] = "reused (metadata matches)"
            return path
        self.report("writing {} from the checkpoint's QAT ranges ...".format(path))
        parity = self.calib_config.parity_dataset if self.calib_config is not None else None
        with atomic_path(path) as tmp:  # an INT8 model over budget (or interrupted) never takes the name
            write_qdq(source, tmp, self.model, self.quant_ranges)
            self.notes[path] = "QAT ranges ({} convolutions); no parity data".format(len(self.quant_ranges["quantizers"]))
            if parity is not None:
                with TorchRunner(self.model) as reference, OrtRunner(tmp) as candidate:
                    result = compare(reference, candidate, parity, limit=self.calib_config.parity_limit, progress=False)
                if not result.passed:
                    raise SanetError("QAT Q/DQ model over its INT8 parity budget ({}): check the checkpoint with "
                                     "sanet-parity".format("; ".join(result.failures)))
                delta = "-" if result.delta_miou is None else "{:+.2f} pt".format(100 * result.delta_miou)
                self.notes[path] = "QAT ranges; delta mIoU {}, pixel agreement {:.2%}".format(delta, result.pixel_agreement)
        return path

    # -- FP16 -----------------------------------------------------------------------------------

    def audit_images(self):
        """The images FP16 range audits read unless told otherwise: see :func:`audit_images`."""
        return self._once("audit-images", lambda: audit_images(self.calib_config))

    def fp16_audit(self, resolution, images=None, limit=16):
        """Max |x| and smallest value of every tensor of the FP32 ONNX over ``images`` (default: audit_images) by
        sanet.numerics; the FP16 ONNX takes its float32 islands from it and the fp16 sidecar records its verdict."""
        return self._once(("fp16-audit", tuple(resolution)), lambda: self._audit(tuple(resolution), images, limit))

    def _audit(self, resolution, images, limit):
        from .numerics import audit_lines, fp16_range_audit

        images = self.audit_images() if images is None else images
        audit = fp16_range_audit(self.onnx(resolution), images, limit)
        audit["source"] = getattr(images, "description", "given images")
        for line in audit_lines(audit):
            self.report(line)
        return audit

    def fp16_onnx(self, resolution):
        return self._once(("onnx-fp16", tuple(resolution)), lambda: self._build_half(tuple(resolution), "onnx-fp16"))

    def qdq_fp16(self, resolution):
        return self._once(("qdq-fp16", tuple(resolution)), lambda: self._build_half(tuple(resolution), "qdq-fp16"))

    def _build_half(self, resolution, kind):
        """The FP16 twin (numerics.to_fp16) of the FP32 ONNX or of the int8 Q/DQ ONNX, float32 where the FP16 range
        audit of the FP32 ONNX says; checked against its source (emulated FP16 vs FP32 on the audit's images)."""
        import json

        import onnx

        from .export import read_metadata, set_metadata
        from .numerics import fp32_islands, images_digest, to_fp16

        source = self.onnx(resolution) if kind == "onnx-fp16" else self.qdq(resolution, "int8")
        path = self.path(kind, resolution)
        images = self.audit_images()
        if self.reuse:  # same source file (metadata), same audit images (digest): the same islands
            audit = self._done.get(("fp16-audit", resolution))
            stamp = {k: v for k, v in read_metadata(source).items() if k.startswith("sanet.calibration") or k in (
                "sanet.quantization", "sanet.float_groups")}
            stamp.update({"sanet.float_precision": "fp16", "sanet.precision": "fp16" if kind == "onnx-fp16" else "int8",
                          "sanet.fp16_audit_digest": audit["digest"] if audit else images_digest(images, 16)})
            if self._onnx_matches(path, self._config(resolution), stamp):
                self.notes[path] = "reused (metadata matches)"
                return path
        audit = self.fp16_audit(resolution, images)
        islands = fp32_islands(audit, self.onnx(resolution))
        self.report("writing {} ({}) ...".format(path, "float32 islands: " + ", ".join(sorted(islands)) if islands else
                                                 "no float32 island"))
        proto = to_fp16(source, islands)
        record = {"images": audit["images"], "source": audit["source"], "max_abs": audit["max_abs"], "islands": islands}
        meta = {prop.key: prop.value for prop in proto.metadata_props}
        meta.update({"sanet.fp16_audit": json.dumps(record, sort_keys=True), "sanet.fp16_audit_digest": audit["digest"]})
        set_metadata(proto, meta)
        with atomic_path(path) as tmp:  # checked before it takes the name
            onnx.save(proto, tmp)
            self.notes[path] = self._check_half(tmp, source, kind, images, resolution)
        return path

    def _check_half(self, path, source, kind, images, resolution):
        """The check line of an FP16 twin: FP16 (emulated) vs its source on up to 2 audit images; refuses one over the
        fp16 pixel budget (an FP16 ONNX) or, with parity data, the INT8 budget against PyTorch (an FP16 Q/DQ ONNX)."""
        from .numerics import EmulatedRunner, _audit_images
        from .parity import compare
        from .runners import OrtRunner, TorchRunner

        if kind == "qdq-fp16":
            calib = self.calib_config if self.quant_ranges is not None else self._calib()  # QAT: no crops needed
            if calib is None or calib.parity_dataset is None:
                return "no parity data"
            with TorchRunner(self.model) as reference, EmulatedRunner(path, "int8") as candidate:
                result = compare(reference, candidate, calib.parity_dataset, limit=calib.parity_limit, progress=False)
            if not result.passed:
                raise SanetError("INT8 with FP16 float parts over its parity budget ({}): retry with --int8-fallback "
                                 "auto or --int8-keep".format("; ".join(result.failures)))
            delta = "-" if result.delta_miou is None else "{:+.2f} pt".format(100 * result.delta_miou)
            return "emulated: delta mIoU {}, pixel agreement {:.2%}".format(delta, result.pixel_agreement)
        if not self.verify:
            return "not run at export (verify=False)"
        batch = self.export_config.batch  # each frame fills a whole (static) batch
        frames = [np.repeat(frame[None], batch, 0) for frame in _resized(list(_audit_images(images, 2)), resolution)]
        agreement, finite = [], True
        with OrtRunner(source) as full, EmulatedRunner(path, "fp16") as half:
            for x in frames:
                (want, _), (got, logits) = full.predict(x), half.predict(x)
                agreement.append(float((want == got).mean()))
                finite = finite and (logits is None or bool(np.isfinite(logits).all()))
        if not finite:  # the audit's islands did not cover an overflow these frames reach
            raise SanetError("the FP16 ONNX computes inf/NaN on its audit images: audit on more images (--calib) or "
                             "build FP16 with the flag route (TensorRT < 10.12)")
        return "emulated vs fp32: pixel agreement {:.3%} on {} audit image(s)".format(float(np.mean(agreement)), len(frames))

    # -- TensorRT -------------------------------------------------------------------------------

    def route(self, precision):
        """Returns the route (sanet.routes.Route) an engine of ``precision`` ("fp32", "fp16", "int8") takes on this
        machine's TensorRT (needs TensorRT installed); the bench and export read it to know which ONNX an engine
        needs (``route.onnx``, see :meth:`onnx_for`)."""
        from .engines import import_tensorrt
        from .routes import route_for

        option = self.engine_config.int8_route if self.engine_config is not None else "auto"
        return route_for(import_tensorrt().__version__, precision, option)

    def onnx_for(self, kind, resolution):
        """The ONNX artifact of ``kind`` (a route's ``onnx``: onnx, onnx-fp16, qdq, qdq-fp16), made on demand."""
        builders = {"onnx": self.onnx, "onnx-fp16": self.fp16_onnx, "qdq": lambda size: self.qdq(size, "int8"),
                    "qdq-fp16": self.qdq_fp16}
        return builders[kind](tuple(resolution))

    def engine(self, resolution, precision):
        """Returns the path of the TensorRT plan at (H, W) and ``precision`` ("fp32", "fp16", "int8"), built on this
        machine from the ONNX its route takes (``.json`` sidecar beside it); needs TensorRT and a GPU."""
        return self._once(("engine", tuple(resolution), precision), lambda: self._build_engine(tuple(resolution), precision))

    def _build_engine(self, resolution, precision):
        from .engines import EngineConfig, build_engine, build_key, check_engine, import_tensorrt, system_facts
        from .export import read_metadata

        route = self.route(precision)
        source = self.onnx_for(route.onnx, resolution)
        manifest = self.manifest(resolution) if route.calibrator else None
        template = self.engine_config or EngineConfig()
        calib = self.calib_config
        config = dataclasses.replace(
            template, precision=precision,
            calibration_method=calib.method if calib is not None else template.calibration_method,
            timing_cache=template.timing_cache or os.path.join(self.out_dir, ARTIFACTS["timing-cache"].file_name(
                tensorrt=import_tensorrt().__version__)),
            keep=tuple(calib.keep) if calib is not None and route.calibrator else ())  # Q/DQ: kept groups are in the file
        audit = self._done.get(("fp16-audit", resolution)) if precision == "fp16" else None
        if audit is not None:  # the verdict, not every tensor: sidecars stay small
            config.extra = dict(config.extra, fp16_range_audit={k: audit[k] for k in (
                "images", "max_abs", "fp16_max", "passed", "overflows", "warnings")})
        plan = self.path("engine", resolution, precision)
        if self.reuse:
            trt = import_tensorrt()
            want = build_key(route, config, source, read_metadata(source), manifest, trt.__version__)
            try:
                if check_engine(plan, system_facts(trt)).get("key") == want:
                    self.notes[plan] = "reused (sidecar key matches)"
                    return plan
            except SanetError:
                pass  # missing, stale or foreign: rebuilt below
        self.report("building {} ({}) ...".format(plan, route.name))
        build_engine(source, plan, config, manifest, report=self.report)
        self.notes[plan] = "route {}; sidecar .json".format(route.name)
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


def lint_summary(violations):
    """export_all's TensorRT lint as ({path: "TRT 8.5: ok; TRT 11: 2 violation(s)"}, one line per violation)."""
    cells = {path: "; ".join("TRT {}: {}".format(r, "{} violation(s)".format(len(v)) if v else "ok") for r, v in found.items())
             for path, found in violations.items()}
    return cells, ["trt-check {} {}: {}".format(release, os.path.basename(path), violation)
                   for path, found in violations.items() for release, found_list in found.items() for violation in found_list]


def export_all(pipeline: Pipeline, sizes, request: ExportRequest):
    """sanet-export's work: returns (rows [file, MiB, kind, check], missing, violations); ``missing`` names what
    could not be built here (engines without TensorRT) after everything that could be built was. Without TensorRT
    the FP16 ONNX is still written for --fp16: the strongly typed releases (10.12+, 11) build FP16 from it."""
    has_trt = tensorrt_available() if request.precisions else False
    routes = {precision: pipeline.route(precision) for precision in request.precisions} if has_trt else {}
    int8 = routes.get("int8")
    needs = {route.onnx for route in routes.values()}
    if "fp16" in request.precisions and not has_trt:
        needs.add("onnx-fp16")
    rows, lint = [], []
    for resolution in sizes:
        resolution = tuple(resolution)
        if request.qdq or int8 is not None:  # calibration problems surface before the export
            pipeline.manifest(pipeline.calib_resolution(resolution) if request.qdq or not int8.calibrator else resolution)
        path = pipeline.onnx(resolution)
        rows.append([path, _size_mib(path), "fp32 onnx", pipeline.notes[path]])
        lint.append(path)
        if request.fp16_audit is not None and "fp16" in request.precisions:
            pipeline.fp16_audit(resolution, request.fp16_audit, request.fp16_audit_limit)
        if request.qdq or needs & {"qdq", "qdq-fp16"}:
            qdq_path = pipeline.qdq(resolution)
            rows.append([qdq_path, _size_mib(qdq_path), "int8 q/dq onnx", pipeline.notes[qdq_path]])
            lint.append(qdq_path)
        for kind, label in (("onnx-fp16", "fp16 onnx"), ("qdq-fp16", "int8 q/dq onnx, fp16 float parts")):
            if kind in needs:
                half = pipeline.onnx_for(kind, resolution)
                rows.append([half, _size_mib(half), label, pipeline.notes[half]])
                lint.append(half)
        audit = pipeline._done.get(("fp16-audit", resolution))
        if audit is not None:
            peak = audit["max_abs"] if isinstance(audit["max_abs"], str) else "{:.4g}".format(audit["max_abs"])
            rows.append([path, "-", "fp16 range audit", "{} over {} {}: max |x| {}, {} overflow(s)".format(
                "PASS" if audit["passed"] else "OVERFLOW", audit["images"], audit["source"], peak, len(audit["overflows"]))])
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


def _resized(images, resolution):
    """[(h, w, 3) uint8] -> (N, H, W, 3) at ``resolution`` (the audit's images come in any size)."""
    from .data import import_cv2

    cv2 = import_cv2()
    return np.stack([cv2.resize(image, (resolution[1], resolution[0]), interpolation=cv2.INTER_LINEAR) for image in images])


def _refuse_all_float(onnx_path, float_groups):
    """A Q/DQ model whose every layer group stayed float quantizes nothing: never name, stamp or report it INT8."""
    from .calibration import FALLBACK_ORDER, group_nodes
    from .export import read_nodes

    nodes = read_nodes(onnx_path)
    present = [group for group in FALLBACK_ORDER if group_nodes(nodes, group)]
    if present and set(present) <= set(float_groups):
        raise SanetError("INT8 parity held only with every layer group in float, so nothing is quantized and no INT8 "
                         "model is written: use --fp16, or calibrate on more representative images (--calib)")
