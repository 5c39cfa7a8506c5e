"""Which rows sanet-bench runs: one (resolution, runner, Row) per backend and precision this machine has, plus the
user's extra ``--onnx``/``--engine`` files, each under a key no other row of the run has.

Built-in rows run at every ``--res``; an extra file runs at its own size (a size not in ``--res`` is added for it, with
a note) or, when its height and width are dynamic, at every ``--res``. Labels are ``backend-device-precision``; an
extra row adds ``[the path as given]``, so it never takes a built-in row's label, and the same file given twice is one
row. ``Row.key`` (resolution and label) is what ``--compare`` pairs rows by.
"""
import os

from .benchreport import Row
from .errors import SanetError


def skip(skipped, message):
    """Record why a row is not run (once per message)."""
    if message and message not in skipped:
        skipped.append(message)


def candidates(pipeline, resolution, config, skipped, reference):
    """Factories of un-activated runners for every backend and precision this machine has at ``resolution``;
    the pipeline builds each artifact (ONNX, Q/DQ, engine) when its factory is called. The PyTorch CPU FP32 row is
    ``reference``'s own runner (see bench.check_parity)."""
    import torch

    from .pipeline import tensorrt_available
    from .runners import TorchRunner

    found, want, cuda = [], set(config.precisions), torch.cuda.is_available()
    if "pytorch" in config.backends:
        found += [lambda: reference.runner] if config.cpu_rows and "fp32" in want else []
        found += [lambda p=p: TorchRunner(pipeline.model, "cuda", p, cuda_graph=config.cuda_graphs)
                  for p in sorted(want & {"fp32", "fp16"}) if cuda]
        skip(skipped, None if cuda else "pytorch cuda fp32/fp16: no CUDA device (torch.cuda.is_available() is False)")
    if "onnxruntime" in config.backends:
        found += ort_candidates(pipeline, resolution, config, want, skipped)
    if "openvino" in config.backends and config.cpu_rows:
        found += openvino_candidates(pipeline, resolution, want, skipped)
    if "torch2trt" in config.backends:
        found += torch2trt_candidates(pipeline.model, resolution, want, skipped, cuda)
    if "tensorrt" in config.backends and tensorrt_available():
        found += [lambda p=p: pipeline.runner("engine", resolution, precision=p, cuda_graph=config.cuda_graphs)
                  for p in sorted(want & {"fp16", "int8"})]
    elif "tensorrt" in config.backends:
        skip(skipped, "tensorrt engines fp16/int8: tensorrt is not installed (JetPack ships it; on x86 use an NVIDIA "
                      "TensorRT container)")
    return found


def ort_candidates(pipeline, resolution, config, want, skipped):
    """ONNX Runtime rows: CPU fp32, CPU int8 on the uint8 Q/DQ (the x86 fast path), CUDA fp32, and the TensorRT
    provider at fp16 (the FP32 export with trt_fp16_enable) and int8 (the signed Q/DQ), whose sessions keep their
    engines between visits and cache them under the bench's artifacts (runners.OrtRunner)."""
    from .runners import CPU_PROVIDER, CUDA_PROVIDER, TRT_PROVIDER, OrtRunner

    try:
        from onnxruntime import get_available_providers
    except ImportError:
        return skip(skipped, "onnxruntime rows: onnxruntime is not installed (pip install 'sanet[onnx]')") or []
    available, found = get_available_providers(), []
    for provider in (CUDA_PROVIDER, TRT_PROVIDER):
        if provider not in available:
            skip(skipped, "onnxruntime {}: not in this onnxruntime build (pip install onnxruntime-gpu)".format(provider))
    if config.cpu_rows and "fp32" in want:
        found.append(lambda: OrtRunner(pipeline.onnx(resolution), providers=[CPU_PROVIDER]))
    if config.cpu_rows and "int8" in want:
        found.append(lambda: pipeline.runner("qdq", resolution, activations="uint8"))
    if CUDA_PROVIDER in available and "fp32" in want:
        found.append(lambda: OrtRunner(pipeline.onnx(resolution), providers=[CUDA_PROVIDER]))
    if TRT_PROVIDER in available:
        # CUDA listed after TensorRT takes the nodes TensorRT cannot (ONNX Runtime's recommendation); the row still
        # refuses to run if TensorRT itself did not load (runners.check_providers)
        providers = [TRT_PROVIDER] + ([CUDA_PROVIDER] if CUDA_PROVIDER in available else [])
        cache = os.path.join(pipeline.out_dir, "ort-trt-cache")
        if "fp16" in want:
            found.append(lambda: OrtRunner(pipeline.onnx(resolution), providers, "fp16", cache_dir=cache))
        if "int8" in want:
            found.append(lambda: OrtRunner(pipeline.qdq(resolution, "int8"), providers, "int8", cache_dir=cache))
    return found


def openvino_candidates(pipeline, resolution, want, skipped):
    """OpenVINO CPU rows: fp32 and (CPUs with native bf16) bf16 on the ONNX, int8 on the ONNX Runtime row's Q/DQ."""
    from .runners import openvino_bf16

    try:
        bf16 = openvino_bf16()
    except SanetError:
        return skip(skipped, "openvino rows: openvino is not installed (pip install 'sanet[openvino]')") or []
    if "bf16" in want and not bf16:
        skip(skipped, "openvino bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX)")
    return [lambda p=p: pipeline.runner("openvino", resolution, precision=p, activations="uint8")
            for p in ("fp32", "bf16", "int8") if p in want and (p != "bf16" or bf16)]


def torch2trt_candidates(model, resolution, want, skipped, cuda):
    """The reference repo's torch2trt FP16 (and FP32) conversion, where torch2trt and a CUDA device are here."""
    import importlib.util

    from .engines import Torch2trtRunner

    if importlib.util.find_spec("torch2trt") is None:
        return skip(skipped, "torch2trt rows: torch2trt is not installed (build it from NVIDIA-AI-IOT/torch2trt against "
                             "this TensorRT)") or []
    if not cuda:
        return skip(skipped, "torch2trt rows: no CUDA device") or []
    return [lambda p=p: Torch2trtRunner(model, resolution, p) for p in sorted(want & {"fp32", "fp16"})]


def extra_rows(extra_onnx, extra_engines, config, skipped):
    """[(label suffix, factory, fixed (H, W) or None)] for the user's files: ONNX on ONNX Runtime CPU, engines on
    TensorRT. Each file is opened once here to read its size; one that cannot be opened is a skip note, a file given
    twice is one row."""
    from .engines import TrtRunner
    from .runners import OrtRunner

    found, seen = [], set()
    for path, factory in [(p, lambda p=p: OrtRunner(p)) for p in extra_onnx] + \
                         [(p, lambda p=p: TrtRunner(p, config.cuda_graphs)) for p in extra_engines]:
        real = os.path.realpath(path)
        if real in seen:
            skip(skipped, "{}: given twice, run once".format(path))
            continue
        seen.add(real)
        try:
            size = factory().info.input_size  # construction reads the file (metadata or sidecar), nothing heavy
        except SanetError as exc:
            skip(skipped, "{}: {}".format(path, exc))
            continue
        found.append((" [{}]".format(path), factory, tuple(size) if size else None))
    return found


def row_for(resolution, info, suffix=""):
    """The bench Row of a runner: named by its label, carrying its notes (e.g. a DLA engine's "not captured")."""
    return Row(resolution, info.label + suffix, info.backend, info.device, info.precision,
               runner_notes=[text for key, text in sorted(info.extra.items()) if key.endswith("_note")])


def plan_rows(pipeline, config, skipped, reference, extra_onnx=(), extra_engines=(), report=print):
    """[(resolution, runner, Row)] in visiting order (by resolution, as --res lists them, then sizes added for extra
    files): runners are constructed now (their artifacts built), activated only when visited."""
    extras = extra_rows(extra_onnx, extra_engines, config, skipped)
    sizes = list(config.resolutions)
    for suffix, _, size in extras:
        if size is not None and size not in sizes:
            report("note: {} is {}x{}, not in --res: its row runs at that size".format(suffix.strip(" []"), *size))
            sizes.append(size)
    plan, keys = [], set()
    for resolution in sizes:
        name = "{}x{}".format(*resolution)
        built_in = [("", factory) for factory in candidates(pipeline, resolution, config, skipped, reference)]
        factories = (built_in if resolution in config.resolutions else []) + [
            (suffix, factory) for suffix, factory, size in extras
            if size == resolution or (size is None and resolution in config.resolutions)]
        for suffix, factory in factories:
            try:
                runner = factory()
            except SanetError as exc:
                skip(skipped, "{}: {}".format(name, exc))
                continue
            row = row_for(name, runner.info, suffix)
            if row.key in keys:  # two built-in rows with one label would pair wrongly in --compare: refuse loudly
                raise SanetError("two bench rows are named {}: a bench bug, please report it".format(row.key))
            keys.add(row.key)
            plan.append((resolution, runner, row))
    return plan
