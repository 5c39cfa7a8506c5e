"""sanet-bench: FPS at 512x1024 / 768x1536 / 1024x2048 for every backend and precision here, with parity.

Each row is one (resolution, runner). Timing: warm-up, then batch-1 iterations until an iteration
count or a time budget is reached; latency mean/p50/p90/p99 and FPS for compute only (``infer`` on a
prepared input) and end to end (preprocess + inference + argmax + copy back; no image decoding).
Every row is then checked against PyTorch FP32 with the parity module; over budget -> FAIL.
"""
import csv
import hashlib
import io
import os
import platform
import shutil
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .errors import SanetError
from .fileio import atomic_path, write_json_atomic, write_text_atomic

DEFAULT_RESOLUTIONS = ((512, 1024), (768, 1536), (1024, 2048))
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BenchConfig:
    resolutions: List[Tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    backends: Tuple[str, ...] = BACKENDS
    precisions: Tuple[str, ...] = PRECISIONS
    warmup: int = 2
    iterations: int = 50
    seconds: float = 6.0  # per timing loop; whichever of iterations / seconds comes first ends it
    parity_images: int = 2
    out: str = "results/bench"
    calib: Optional[str] = None  # calibration images for INT8 rows (Cityscapes root or image folder)
    calib_count: int = 16  # crops; few, to keep the default run short (sanet-export defaults to 500)
    cuda_graphs: bool = False  # replay PyTorch CUDA / TensorRT rows from a captured CUDA graph


@dataclass
class Row:
    resolution: str
    runner: str
    backend: str
    device: str
    precision: str
    iterations: int = 0
    mean_ms: float = float("nan")
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    fps: float = float("nan")
    e2e_mean_ms: float = float("nan")
    e2e_fps: float = float("nan")
    miou: Optional[float] = None
    agreement_miou: Optional[float] = None
    pixel_agreement: Optional[float] = None
    delta_miou: Optional[float] = None
    power_w: Optional[float] = None
    fps_per_watt: Optional[float] = None
    throttled: Optional[bool] = None
    verdict: str = "-"
    failures: List[str] = field(default_factory=list)


def latency_stats(latencies_ms):
    """mean / p50 / p90 / p99 (ms) and FPS = 1000 / mean."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    mean = float(values.mean())
    return {"mean_ms": mean, "p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "fps": 1000.0 / mean}


def time_loop(step, warmup, iterations, seconds, synchronize=None):
    """Per-iteration wall latencies (ms) of ``step()``; ``synchronize`` waits for asynchronous devices."""
    for _ in range(warmup):
        step()
    if synchronize:
        synchronize()
    latencies, deadline = [], time.perf_counter() + seconds
    while len(latencies) < iterations and (not latencies or time.perf_counter() < deadline):
        start = time.perf_counter()
        step()
        if synchronize:
            synchronize()
        latencies.append(1000.0 * (time.perf_counter() - start))
    return latencies


# ----------------------------------------------------------------------------------------------
# Host facts and power


def _command_output(argv, timeout=5):
    if not shutil.which(argv[0]):
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def host_facts():
    """CPU, GPU, driver, CUDA, TensorRT, JetPack/L4T and Jetson power-mode facts recorded with results."""
    import torch

    facts = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
             "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        facts["cpu"] = names[0] if names else facts["cpu"]
    for module, key in (("onnxruntime", "onnxruntime"), ("tensorrt", "tensorrt")):
        try:
            facts[key] = __import__(module).__version__
        except ImportError:
            facts[key] = None
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(0))
        facts["cuda"] = torch.version.cuda
    facts["driver"] = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if os.path.isfile("/etc/nv_tegra_release"):
        with open("/etc/nv_tegra_release", encoding="utf-8", errors="replace") as handle:
            facts["l4t"] = handle.readline().strip()
    facts["nvpmodel"] = _command_output(["nvpmodel", "-q"])
    facts["jetson_clocks"] = _command_output(["jetson_clocks", "--show"])
    return facts


class PowerMonitor:
    """Average board power during a row: tegrastats on Jetson, NVML on desktop GPUs; None elsewhere."""

    def __init__(self):
        self.source, self.samples, self.throttle, self._process, self._nvml = None, [], False, None, None
        if shutil.which("tegrastats"):
            self.source = "tegrastats"
        else:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml, self.source = pynvml, "nvml"
            except Exception:  # no NVML library or no NVIDIA driver: power is simply not measured
                self.source = None

    def __enter__(self):
        self.samples, self.throttle = [], False
        if self.source == "tegrastats":
            self._process = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)
        return self

    def sample(self):
        """Called between iterations on NVML hosts (tegrastats streams on its own)."""
        if self.source == "nvml":
            handle = self._nvml.nvmlDeviceGetHandleByIndex(0)
            self.samples.append(self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
            reasons = self._nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
            self.throttle |= bool(reasons & ~0x1)  # anything but "GPU idle"

    def __exit__(self, *exc):
        if self._process is not None:
            self._process.terminate()
            output = self._process.communicate(timeout=5)[0]
            self.samples = parse_tegrastats_power(output)
            self._process = None
        return False

    @property
    def watts(self):
        return float(np.mean(self.samples)) if self.samples else None


def parse_tegrastats_power(text):
    """Total rail power (W) per tegrastats line: the sum of every ``NAME cur/avg`` mW reading."""
    import re

    totals = []
    for line in text.splitlines():
        readings = re.findall(r"\b(?:VDD|POM)_\w+ (\d+)(?:mW)?/(\d+)(?:mW)?", line)
        if readings:
            totals.append(sum(int(current) for current, _ in readings) / 1000.0)
    return totals


# ----------------------------------------------------------------------------------------------
# Reports


def write_reports(rows, facts, settings, out, skipped):
    """JSON, CSV, Markdown and (with matplotlib) PNG plots, each written atomically."""
    os.makedirs(out, exist_ok=True)
    data = {"host": facts, "settings": settings, "skipped": skipped, "rows": [asdict(r) for r in rows]}
    write_json_atomic(os.path.join(out, "bench.json"), data)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0]).keys()) if rows else ["resolution"])
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["failures"] = "; ".join(row.failures)
        writer.writerow(values)
    write_text_atomic(os.path.join(out, "bench.csv"), buffer.getvalue())
    write_text_atomic(os.path.join(out, "bench.md"), markdown_table(rows, facts))
    plots = []
    try:
        plots = write_plots(rows, out)
    except ImportError:
        skipped.append("plots: matplotlib not installed (pip install matplotlib)")
    return ["bench.json", "bench.csv", "bench.md"] + plots


def _fmt(value, pattern="{:.1f}", scale=1.0):
    return "-" if value is None or value != value else pattern.format(value * scale)


def table_rows(rows):
    return [[r.resolution, r.runner, _fmt(r.mean_ms, "{:.1f}"), _fmt(r.p99_ms, "{:.1f}"), _fmt(r.fps, "{:.2f}"),
             _fmt(r.e2e_fps, "{:.2f}"), _fmt(r.miou, "{:.2f}", 100), _fmt(r.agreement_miou, "{:.2f}", 100),
             _fmt(r.pixel_agreement, "{:.3f}", 100), _fmt(r.fps_per_watt, "{:.2f}"), r.verdict] for r in rows]


TABLE_HEADERS = ["input", "runner", "mean ms", "p99 ms", "FPS", "e2e FPS", "mIoU %", "agree mIoU %", "pixel agree %",
                 "FPS/W", "parity"]


def markdown_table(rows, facts):
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows(rows)]
    host = "{} ({} cores){}".format(facts.get("cpu"), facts.get("cpu_count"),
                                    ", GPU " + facts["gpu"] if facts.get("gpu") else "")
    return "Host: {}; torch {}, onnxruntime {}, TensorRT {}.\n\n".format(
        host, facts.get("torch"), facts.get("onnxruntime"), facts.get("tensorrt")) + "\n".join(lines) + "\n"


def write_plots(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for runner in sorted({r.runner for r in rows}):
        points = [(r.resolution, r.fps) for r in rows if r.runner == runner and r.fps == r.fps]
        axis.plot([p[0] for p in points], [p[1] for p in points], "o-", label=runner)
    axis.set_xlabel("input (H x W)")
    axis.set_ylabel("FPS (batch 1, compute)")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    written.append(_save_figure(plt, fig, out, "fps_vs_resolution.png"))
    fig, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for row in rows:
        quality = row.miou if row.miou is not None else row.agreement_miou
        if quality is not None and row.fps == row.fps:
            axis.scatter(row.fps, 100 * quality)
            axis.annotate("{} {}".format(row.runner, row.resolution), (row.fps, 100 * quality), fontsize=6)
    axis.set_xlabel("FPS")
    axis.set_ylabel("mIoU vs labels (%) or agreement mIoU")
    axis.set_xscale("log")
    axis.grid(alpha=0.3)
    return written + [_save_figure(plt, fig, out, "fps_vs_miou.png")]


def _save_figure(plt, fig, out, name):
    fig.tight_layout()
    with atomic_path(os.path.join(out, name)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return name



# ----------------------------------------------------------------------------------------------
# Rows


def model_digest(model):
    """Short hash of the weights, so cached exports are never reused for another checkpoint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def candidates(model, resolution, config, workdir, skipped, extra_onnx=(), extra_engines=(), digest=None):
    """Runner factories for every backend/precision available on this machine (exports made on demand;
    ``digest``, the weights' hash, names them)."""
    import torch

    from .runners import OrtRunner, TorchRunner

    found = []
    if "pytorch" in config.backends:
        found.append(lambda: TorchRunner(model, "cpu", "fp32"))
        if torch.cuda.is_available():
            for precision in ("fp32", "fp16"):
                if precision in config.precisions:
                    found.append(lambda p=precision: TorchRunner(model, "cuda", p, cuda_graph=config.cuda_graphs))
        else:
            _skip(skipped, "pytorch cuda fp32/fp16: no CUDA device (torch.cuda.is_available() is False)")
    exports = _Exports(model, resolution, config, workdir, digest or model_digest(model))
    if "onnxruntime" in config.backends:
        try:
            import onnxruntime
        except ImportError:
            _skip(skipped, "onnxruntime rows: onnxruntime is not installed (pip install 'sanet[onnx]')")
        else:
            available = onnxruntime.get_available_providers()
            for provider in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"):
                if provider in available:
                    found.append(lambda p=provider: OrtRunner(exports.onnx(), providers=[p]))
                else:
                    _skip(skipped, "onnxruntime {}: not in this onnxruntime build (pip install onnxruntime-gpu)".format(provider))
            if "int8" in config.precisions:
                if config.calib:
                    found.append(lambda: OrtRunner(exports.qdq("uint8")))
                else:
                    _skip(skipped, "onnxruntime int8: no calibration images (pass --calib DIR)")
    if "tensorrt" in config.backends:
        found.extend(_engine_factories(exports, config, skipped))
    for path in extra_onnx:
        found.append(lambda p=path: OrtRunner(p))
    for path in extra_engines:
        found.append(lambda p=path: _trt_runner(p, config.cuda_graphs))
    return found


class _Exports:
    """The files a resolution's rows need, made once per model (keyed by a hash of its weights)."""

    def __init__(self, model, resolution, config, workdir, digest):
        self.model, self.resolution, self.config = model, resolution, config
        self.stem = os.path.join(workdir, "{}_{}x{}_{}".format(model.config.variant, *resolution, digest))
        self.manifest = None

    def onnx(self):
        from .export import ExportConfig, export_onnx

        path = self.stem + ".onnx"
        if not os.path.isfile(path):
            export_onnx(self.model, path, ExportConfig(*self.resolution))
        return path

    def crops(self):
        from .calibration import CropConfig, plan_crops

        if self.manifest is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # few calibration images is a deliberate bench default
                self.manifest = plan_crops(self.config.calib, CropConfig(*self.resolution, count=self.config.calib_count))
        return self.manifest

    def qdq(self, activations):
        """Q/DQ INT8 ONNX: uint8 activations for the ONNX Runtime x86 fast path, int8 for TensorRT."""
        from .calibration import QuantizeConfig, quantize_qdq

        manifest = self.crops()
        path = "{}_{}_{}.onnx".format(self.stem, activations, manifest["sha256"][:12])
        if not os.path.isfile(path):
            quantize_qdq(self.onnx(), path, manifest, QuantizeConfig(activations=activations),
                         cache_dir=os.path.dirname(path))
        return path

    def engine(self, precision):
        import tensorrt

        from .engines import EngineConfig, build_engine, check_engine, engine_path, int8_route, system_facts
        from .export import read_metadata

        source = self.onnx()
        if precision == "int8" and int8_route(EngineConfig("int8"), tensorrt.__version__, read_metadata(source)) == "qdq":
            source = self.qdq("int8")
        plan = engine_path(source, precision)
        try:
            check_engine(plan, system_facts(tensorrt))  # reuse only an engine built here, for these weights
        except SanetError:
            timing_cache = os.path.join(os.path.dirname(plan), "timing.cache")
            manifest = self.crops() if precision == "int8" else None
            build_engine(source, plan, EngineConfig(precision, timing_cache=timing_cache), manifest)
        return plan


def _engine_factories(exports, config, skipped):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        _skip(skipped, "tensorrt engines fp16/int8: tensorrt is not installed (JetPack ships it; on x86 use an "
                       "NVIDIA TensorRT container)")
        return []
    found = []
    for precision in ("fp16", "int8"):
        if precision not in config.precisions:
            continue
        if precision == "int8" and not config.calib:
            _skip(skipped, "tensorrt int8: no calibration images (pass --calib DIR)")
            continue
        found.append(lambda p=precision: _trt_runner(exports.engine(p), config.cuda_graphs))
    return found


def _trt_runner(path, cuda_graph):
    from .engines import TrtRunner

    return TrtRunner(path, cuda_graph=cuda_graph)


def _skip(skipped, message):
    if message not in skipped:
        skipped.append(message)


def measure(runner, resolution, config, reference, dataset):
    """Time one runner at one resolution and check its parity against ``reference``."""
    from .parity import compare

    height, width = resolution
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1, height, width, 3), dtype=np.uint8)
    prepared = runner.prepare(image)
    sync = getattr(runner, "synchronize", None)
    info = runner.info
    row = Row("{}x{}".format(height, width), info.label, info.backend, info.device, info.precision)
    with PowerMonitor() as power:
        compute = time_loop(lambda: (runner.infer(prepared), power.sample()), config.warmup, config.iterations,
                            config.seconds, sync)
    end_to_end = time_loop(lambda: runner.predict(image), 1, config.iterations, config.seconds, sync)
    stats = latency_stats(compute)
    row.iterations = len(compute)
    row.mean_ms, row.p50_ms, row.p90_ms, row.p99_ms, row.fps = (stats[k] for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "fps"))
    e2e = latency_stats(end_to_end)
    row.e2e_mean_ms, row.e2e_fps = e2e["mean_ms"], e2e["fps"]
    row.power_w, row.throttled = power.watts, power.throttle if power.source else None
    if row.power_w:
        row.fps_per_watt = row.fps / row.power_w
    result = compare(reference, runner, dataset, size=resolution, limit=config.parity_images, progress=False)
    row.miou, row.agreement_miou, row.pixel_agreement = result.miou_candidate, result.agreement_miou, result.pixel_agreement
    row.delta_miou, row.failures = result.delta_miou, result.failures
    row.verdict = "PASS" if result.passed else "FAIL"
    return row


def run_bench(model, config, dataset, extra_onnx=(), extra_engines=(), report=print):
    """All rows for all resolutions; returns (rows, skipped). Ctrl-C stops early and keeps what was measured."""
    from .parity import MemoRunner
    from .runners import TorchRunner

    os.makedirs(config.out, exist_ok=True)
    workdir = os.path.join(config.out, "onnx")
    os.makedirs(workdir, exist_ok=True)
    reference = MemoRunner(TorchRunner(model, "cpu", "fp32"))
    digest = model_digest(model)
    rows, skipped = [], []
    try:
        for resolution in config.resolutions:
            for factory in candidates(model, resolution, config, workdir, skipped, extra_onnx, extra_engines, digest):
                try:
                    runner = factory()
                except SanetError as exc:
                    skipped.append("{}x{}: {}".format(resolution[0], resolution[1], exc))
                    continue
                with runner:
                    if runner.info.input_size and tuple(runner.info.input_size) != tuple(resolution):
                        continue  # a fixed-size ONNX/engine only runs at the resolution it was built for
                    report("measuring {} at {}x{} ...".format(runner.info.label, *resolution))
                    rows.append(measure(runner, resolution, config, reference, dataset))
    except KeyboardInterrupt:
        skipped.append("interrupted (Ctrl-C): the rows measured so far are reported")
    return rows, skipped
