"""Which TensorRT build route an engine takes: the one place that decides it.

A route says which ONNX artifact an engine is built from, whether the network is strongly typed (each layer runs
in the type the ONNX gives it) or weakly typed (builder flags let TensorRT lower precision per layer), which
builder flags are set, what unquantized layers compute in, and why. ``build_engine``, ``check_platform``, the
pipeline (which ONNX to write, reuse keys), the sidecar and the bench all read :func:`route_for`.

Table (docs/tensorrt-routes.md explains each cell):

============  =========================  ==============================  ===================================
TensorRT      fp32                       fp16                            int8 (auto)
============  =========================  ==============================  ===================================
8.5 / 8.6     fp32: FP32 ONNX, weak      fp16-flag: FP32 ONNX + FP16     int8-classic: calibrator, INT8+FP16
10.0 - 10.11  fp32: FP32 ONNX, weak      fp16-flag: FP32 ONNX + FP16     int8-qdq: Q/DQ ONNX, INT8+FP16 flags
10.12 - 10.x  fp32: FP32 ONNX, strong    fp16-typed: FP16 ONNX, strong   int8-mixed: FP16 Q/DQ ONNX, strong
11.x          fp32: FP32 ONNX, strong    fp16-typed: FP16 ONNX, strong   int8-mixed: FP16 Q/DQ ONNX, strong
============  =========================  ==============================  ===================================

Plain Python: no TensorRT needed, so CPU tests and the bench can ask it.
"""
from dataclasses import dataclass
from typing import Tuple

from .errors import SanetError

INT8_ROUTES = ("auto", "classic", "qdq")
# ONNX artifacts an engine can be built from (keys of pipeline.ARTIFACTS)
ONNX_KINDS = ("onnx", "onnx-fp16", "qdq", "qdq-fp16")
# NVIDIA deprecated weak typing (builder precision flags, per-layer precision) in TensorRT 10.12 and removed it in
# 11.0 (TensorRT 10.12.0 release notes, "Weak typing APIs deprecated"; "Migrating from TensorRT 10.x to 11.x":
# "TensorRT 11.x removes all weak typing APIs"). From 10.12 on every build here is strongly typed.
STRONGLY_TYPED_FROM = (10, 12)


@dataclass(frozen=True)
class Route:
    name: str  # fp32 | fp16-flag | fp16-typed | int8-classic | int8-qdq | int8-mixed
    precision: str  # what the engine is named and reported as: fp32 | fp16 | int8
    onnx: str  # the ONNX artifact it builds from (ONNX_KINDS)
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.x; implied on 11)
    builder_flags: Tuple[str, ...]  # BuilderFlag members to set (weak typing only)
    calibrator: bool  # classic: TensorRT's entropy/minmax calibrator runs the manifest's crops
    float_precision: str  # what layers outside INT8 compute in: fp32 | fp16
    why: str

    @property
    def quantized(self):
        return self.precision == "int8"


def tensorrt_version(version):
    """'10.13.3.9' -> (10, 13); refuses what is not a version string."""
    parts = str(version).strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        raise SanetError("cannot read TensorRT version {!r}: use e.g. 8.5.2, 10.13 or 11.4".format(version)) from None


def strongly_typed_release(version):
    """True where this project builds every network strongly typed (TensorRT >= 10.12)."""
    return tensorrt_version(version) >= STRONGLY_TYPED_FROM


def onnx_kind(meta):
    """Which of ONNX_KINDS an exported file is, from its sanet metadata."""
    quantized = meta.get("sanet.quantization") == "qdq" or meta.get("sanet.precision") == "int8"
    half = meta.get("sanet.float_precision") == "fp16" or meta.get("sanet.precision") == "fp16"
    return ("qdq" if quantized else "onnx") + ("-fp16" if half else "")


def route_for(trt_version, precision, int8_route="auto", onnx_meta=None):
    """The route an engine of ``precision`` takes on TensorRT ``trt_version`` ('8.5.2.2', '10.3.0', '11.4').

    ``int8_route`` is the user's choice (auto | classic | qdq); ``onnx_meta`` the metadata of an ONNX file given
    directly (a Q/DQ file means explicit quantization). A choice this release cannot honour is refused, never
    replaced by another one.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise SanetError("unknown precision {!r}: use fp32, fp16 or int8".format(precision))
    if int8_route not in INT8_ROUTES:
        raise SanetError("unknown INT8 route {!r}: use {}".format(int8_route, ", ".join(INT8_ROUTES)))
    major, minor = tensorrt_version(trt_version)
    typed = strongly_typed_release(trt_version)
    release = "TensorRT {}.{}".format(major, minor)
    if precision == "fp32":
        return Route("fp32", "fp32", "onnx", typed, (), False, "fp32",
                     "{}: FP32 ONNX, {} typed, no precision flags".format(release, "strongly" if typed else "weakly"))
    if precision == "fp16":
        if typed:
            return Route("fp16-typed", "fp16", "onnx-fp16", True, (), False, "fp16",
                         "{} builds strongly typed: precision comes from the ONNX, so the FP16 ONNX (float32 only where "
                         "the FP16 range audit says) is built as typed".format(release))
        return Route("fp16-flag", "fp16", "onnx", False, ("FP16",), False, "fp16",
                     "{}: FP32 ONNX with the FP16 builder flag; TensorRT picks FP16 or FP32 per layer".format(release))
    explicit = onnx_meta is not None and onnx_kind(onnx_meta).startswith("qdq")
    if int8_route == "classic" and explicit:
        raise SanetError("--int8-route classic calibrates the FP32 ONNX, but this file is already Q/DQ-quantized: "
                         "pass the FP32 export or use --int8-route qdq")
    classic = int8_route == "classic" or (int8_route == "auto" and not explicit and major < 10)
    if classic:
        if major >= 11:
            raise SanetError("TensorRT {} has no implicit INT8 calibration (removed in 11.0): use --int8-route qdq".format(
                trt_version))
        return Route("int8-classic", "int8", "onnx", False, ("INT8", "FP16"), True, "fp16",
                     "{}: TensorRT's calibrator on the FP32 ONNX, INT8 and FP16 flags (layers INT8 has no kernel for "
                     "run FP16); the route DLA takes on 8.5{}".format(
                         release, "; deprecated since 10.1" if major >= 10 else ""))
    if typed:
        return Route("int8-mixed", "int8", "qdq-fp16", True, (), False, "fp16",
                     "{} builds strongly typed: the Q/DQ ONNX's float parts are FP16, so layers outside Q/DQ pairs "
                     "(kept groups, resizes, GeM) run FP16, not FP32".format(release))
    return Route("int8-qdq", "int8", "qdq", False, ("INT8", "FP16"), False, "fp16",
                 "{}: the Q/DQ ONNX built weakly typed with INT8 and FP16 flags: INT8 where Q/DQ pairs say so, "
                 "FP16 (or FP32, TensorRT's pick) elsewhere".format(release))


def check_source(route, onnx_path, meta, trt_version):
    """Refuse an ONNX file that is not the artifact ``route`` builds from, naming the one it needs."""
    if meta.get("sanet.quantization") == "classic-emulation":  # sanet-parity --emulate int8-classic's CPU stand-in
        raise SanetError("{} emulates TensorRT's classic calibration on the CPU (sanet-parity --emulate int8-classic): "
                         "it is not an engine source; build from the FP32 export with --int8-route classic".format(onnx_path))
    have = onnx_kind(meta)
    if have == route.onnx:
        return
    raise SanetError("TensorRT {} builds {} engines by route {} from {} ({}), but {} is {}".format(
        trt_version, route.precision, route.name, ONNX_NAMES[route.onnx], ONNX_WRITERS[route.onnx], onnx_path,
        ONNX_NAMES[have]))


ONNX_NAMES = {"onnx": "the FP32 export", "onnx-fp16": "the FP16 ONNX", "qdq": "the Q/DQ INT8 ONNX",
              "qdq-fp16": "the FP16 Q/DQ ONNX"}
ONNX_WRITERS = {"onnx": "sanet-export writes {stem}.onnx", "onnx-fp16": "sanet-export --fp16 writes {stem}_fp16.onnx",
                "qdq": "sanet-export --qdq writes {stem}_int8_qdq.onnx",
                "qdq-fp16": "sanet-export --int8 writes {stem}_int8_qdq_fp16.onnx"}


def table(versions=("8.5.2", "10.3", "10.13", "11.4")):
    """[(version, precision, route name, ONNX artifact, typing, flags)] for the documentation and tests."""
    rows = []
    for version in versions:
        for precision in ("fp32", "fp16", "int8"):
            route = route_for(version, precision)
            rows.append((version, precision, route.name, route.onnx, "strong" if route.strongly_typed else "weak",
                         "+".join(route.builder_flags) or "-"))
    return rows
