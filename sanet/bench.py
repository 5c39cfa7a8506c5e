"""sanet-bench: FPS at 512x1024 / 768x1536 / 1024x2048 for every backend and precision here, with parity.

Each row is one (resolution, runner); :data:`PROTOCOL` (also written to ``bench.json``) says how it is
timed. Every iteration times its phases one after another on one uint8 frame, so end-to-end includes
compute by construction. Rows are visited in interleaved rounds (one activated runner at a time) and each
row is checked against PyTorch FP32 with the parity module; over budget -> FAIL.
"""
import hashlib
import math
import os
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .constants import BENCH_RESOLUTIONS, PRECISIONS
from .errors import SanetError
from .runners import Runner

BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
UNSTABLE_CV = 0.10  # a row whose compute latencies vary more than this (std / mean) is marked unstable
# The trained default model shipped with the package; "no checkpoint given" resolves to it when present.
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "sanet_synth.safetensors")
PROTOCOL = {
    "batch": 1,
    "compute": "device execution only, inputs and outputs resident on the device (CUDA events on a GPU, wall clock on "
               "a CPU); rows marked copies_in_compute come from runners without device staging and include both copies",
    "h2d": "staging the prepared input on the device (host preprocessing not included)",
    "d2h": "argmax on the device for logits models, then copying the uint8 class map (B, H, W) back",
    "end_to_end": "wall clock from a uint8 HWC frame on the host to its uint8 class map on the host: preprocess + H2D + "
                  "compute + argmax + D2H, measured in the same iterations as compute (so never faster than compute)",
    "warmup": "full iterations for warmup_seconds (at least one) at every visit of a row, after activating its runner",
    "iterations": "at least `iterations` timed iterations and at least `seconds` seconds per row, split over the rounds",
    "rounds": "each round visits every row once (order reversed every other round), so drift hits every row alike",
    "statistics": "mean, p50, p90, p99 (linear interpolation) and CV = std / mean over all timed iterations; "
                  "CV > 10 % marks a row unstable",
    "power": "sampled in its own thread while a row is timed, never inside a timed call",
}


@dataclass
class BenchConfig:
    resolutions: List[Tuple[int, int]] = field(default_factory=lambda: list(BENCH_RESOLUTIONS))
    backends: Tuple[str, ...] = BACKENDS
    precisions: Tuple[str, ...] = PRECISIONS
    warmup_seconds: float = 1.0  # per visit, after activation
    iterations: int = 20  # minimum timed iterations per row (all rounds together)
    seconds: float = 0.0  # minimum timed seconds per row (all rounds together)
    rounds: int = 2
    parity_images: int = 2
    out: str = "results/bench"
    calib: Optional[str] = None  # calibration images for INT8 rows (Cityscapes root or image folder)
    calib_count: int = 16  # crops; few, to keep the default run short (sanet-export defaults to 500)
    cuda_graphs: bool = False  # replay PyTorch CUDA / TensorRT rows from a captured CUDA graph
    cpu_rows: bool = True  # False: GPU rows only (sanet-gpucheck)


@dataclass
class Row:
    resolution: str
    runner: str
    backend: str
    device: str
    precision: str
    iterations: int = 0
    mean_ms: float = float("nan")  # compute
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    cv: float = float("nan")
    fps: float = float("nan")
    unstable: bool = False
    copies_in_compute: bool = False
    h2d_ms: float = float("nan")
    d2h_ms: float = float("nan")
    e2e_mean_ms: float = float("nan")
    e2e_p99_ms: float = float("nan")
    e2e_cv: float = float("nan")
    e2e_fps: float = float("nan")
    round_fps: List[float] = field(default_factory=list)  # compute FPS per round: drift shows here
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
    """mean / p50 / p90 / p99 (ms), CV (sample std / mean) and FPS = 1000 / mean."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    mean = float(values.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    cv = float(values.std(ddof=1) / mean) if values.size > 1 else 0.0
    return {"mean_ms": mean, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "cv": cv, "fps": 1000.0 / mean}


def visit_order(rows, rounds):
    """(round, row index) pairs: every round visits every row once, odd rounds in reverse order."""
    return [(r, i) for r in range(rounds) for i in (range(rows) if r % 2 == 0 else reversed(range(rows)))]


# ----------------------------------------------------------------------------------------------
# Timing: one iteration = preprocess, stage (H2D), execute (compute), fetch (argmax + D2H)


class InferSteps:
    """stage / execute / fetch in terms of ``infer``, for runners that lack them: on a GPU the compute phase
    then includes both copies (the row says so)."""

    device_resident = False

    def __init__(self, runner):
        self.runner, self.inputs, self.outputs = runner, None, None

    def stage(self, inputs):
        self.inputs = inputs

    def execute(self):
        self.outputs = self.runner.infer(self.inputs)

    def fetch(self, class_map=False):
        if not class_map:
            return self.outputs
        return (self.outputs if self.runner.info.output == "argmax" else self.outputs.argmax(axis=1)).astype(np.uint8)


def steps_of(runner):
    """The runner itself when it implements the stage/execute/fetch split, else :class:`InferSteps`."""
    return runner if callable(getattr(runner, "execute", None)) else InferSteps(runner)


class WallClock:
    """Host wall clock; waits for the runner's device at every mark so no work leaks into the next phase."""

    def __init__(self, synchronize=None):
        self.synchronize = synchronize or (lambda: None)

    def mark(self):
        self.synchronize()
        return time.perf_counter()

    def elapsed_ms(self, start, end):
        return 1000.0 * (end - start)


class CudaClock:
    """CUDA events on the stream the runner executes on: device time of each phase, no host sync between."""

    def __init__(self, stream):
        import torch

        self.torch, self.stream = torch, stream

    def mark(self):
        event = self.torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return event

    def elapsed_ms(self, start, end):
        end.synchronize()
        return float(start.elapsed_time(end))


def clock_of(runner, steps):
    stream = getattr(steps, "cuda_stream", None)  # GPU runners with the split expose the stream they run on
    return CudaClock(stream) if stream is not None else WallClock(getattr(runner, "synchronize", None))


def time_iteration(runner, steps, clock, frame):
    """One frame through every phase: (e2e, h2d, compute, d2h) in ms; ``frame`` is uint8 (1, H, W, 3)."""
    start = time.perf_counter()
    inputs = runner.prepare(frame)
    marks = [clock.mark()]
    steps.stage(inputs)
    marks.append(clock.mark())
    steps.execute()
    marks.append(clock.mark())
    steps.fetch(class_map=True)  # a host array: the device is done with this frame
    marks.append(clock.mark())
    end = time.perf_counter()
    return (1000.0 * (end - start),) + tuple(clock.elapsed_ms(a, b) for a, b in zip(marks, marks[1:]))


def time_visit(runner, frame, config, sampler=None):
    """Warm up for ``warmup_seconds`` (at least one iteration), then time this round's share of the row while
    ``sampler`` (a sanet.power.PowerSampler, its own thread) samples power -> (samples, copies_in_compute, summary)."""
    steps = steps_of(runner)
    clock = clock_of(runner, steps)
    deadline = time.perf_counter() + config.warmup_seconds
    time_iteration(runner, steps, clock, frame)
    while time.perf_counter() < deadline:
        time_iteration(runner, steps, clock, frame)
    count, seconds = math.ceil(config.iterations / config.rounds), config.seconds / config.rounds
    samples, start = [], time.perf_counter()
    if sampler is not None:
        sampler.start()
    try:
        while len(samples) < count or time.perf_counter() - start < seconds:
            samples.append(time_iteration(runner, steps, clock, frame))
    finally:
        summary = sampler.stop() if sampler is not None else None
    return samples, runner.info.device != "cpu" and not getattr(steps, "device_resident", False), summary


# ----------------------------------------------------------------------------------------------
# Reference class maps and rows


class ReferenceMaps(Runner):
    """PyTorch FP32 CPU class maps per input image, kept as uint8 (H, W) maps and at most ``max_bytes`` of them
    (oldest dropped first). :meth:`fill` computes a resolution's parity images before any candidate is
    activated, so parity never holds two activated runners."""

    def __init__(self, model, max_bytes=64 << 20):
        from .runners import TorchRunner

        self.runner, self.max_bytes, self.cache = TorchRunner(model, "cpu", "fp32"), max_bytes, OrderedDict()
        self.info = self.runner.info

    def fill(self, dataset, size, limit):
        """The images :func:`sanet.parity.compare` will ask for at ``size``: the first ``limit``, resized."""
        from .data import import_cv2

        cv2 = import_cv2()
        with self.runner:
            for index in range(min(limit, len(dataset))):
                image = dataset.load(index)[0]
                if image.shape[:2] != tuple(size):
                    image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                self.predict(image[None])

    def predict(self, images):
        key = (images.shape, hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest())
        if key not in self.cache:
            with self.runner:
                self.cache[key] = self.runner.predict(images)[0].astype(np.uint8)
            while sum(m.nbytes for m in self.cache.values()) > self.max_bytes and len(self.cache) > 1:
                self.cache.popitem(last=False)
        return self.cache[key], None


def summarize(row, samples, rounds_samples):
    """Fill ``row``'s timing fields from its (e2e, h2d, compute, d2h) samples."""
    e2e, h2d, compute, d2h = (np.asarray(column) for column in zip(*samples))
    stats = latency_stats(compute)
    row.iterations = len(samples)
    row.mean_ms, row.p50_ms, row.p90_ms, row.p99_ms, row.cv, row.fps = (
        stats[k] for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "cv", "fps"))
    row.unstable = row.cv > UNSTABLE_CV
    row.h2d_ms, row.d2h_ms = float(h2d.mean()), float(d2h.mean())
    end = latency_stats(e2e)
    row.e2e_mean_ms, row.e2e_p99_ms, row.e2e_cv, row.e2e_fps = end["mean_ms"], end["p99_ms"], end["cv"], end["fps"]
    row.round_fps = [1000.0 / float(np.mean([s[2] for s in chunk])) for chunk in rounds_samples if chunk]


def check_parity(row, runner, reference, dataset, resolution, config):
    from .parity import compare

    result = compare(reference, runner, dataset, size=resolution, limit=config.parity_images, progress=False)
    row.miou, row.agreement_miou, row.pixel_agreement = result.miou_candidate, result.agreement_miou, result.pixel_agreement
    row.delta_miou, row.failures = result.delta_miou, result.failures
    row.verdict = "PASS" if result.passed else "FAIL"


def plan_rows(model, config, dataset, reference, skipped, extra_onnx, extra_engines, report):
    """(resolution, runner, Row) for every row, with every export, calibration and reference map made now,
    so the timed rounds do nothing else. Runners are constructed here, activated only when visited."""
    from .pipeline import CalibSettings, Pipeline, weights_digest

    calib = CalibSettings(root=config.calib, count=config.calib_count, quiet=True) if config.calib else None
    pipeline = Pipeline(model, out_dir=os.path.join(config.out, "artifacts"), calib_config=calib, report=report,
                        reuse=True, tag=weights_digest(model)[:12])
    plan = []
    for resolution in config.resolutions:
        name = "{}x{}".format(*resolution)
        report("preparing {}: PyTorch FP32 reference on {} parity image(s) ...".format(name, config.parity_images))
        reference.fill(dataset, resolution, config.parity_images)
        for factory in candidates(pipeline, resolution, config, skipped, extra_onnx, extra_engines):
            try:
                runner = factory()
            except SanetError as exc:
                _skip(skipped, "{}: {}".format(name, exc))
                continue
            if runner.info.input_size and tuple(runner.info.input_size) != tuple(resolution):
                continue  # a fixed-size ONNX/engine only runs at the resolution it was built for
            info = runner.info
            plan.append((resolution, runner, Row(name, info.label, info.backend, info.device, info.precision)))
    return plan


def run_bench(model, config, dataset, extra_onnx=(), extra_engines=(), report=print):
    """Every row at every resolution, timed in interleaved rounds; returns (rows, skipped). Ctrl-C stops early
    and keeps what was measured."""
    os.makedirs(config.out, exist_ok=True)
    reference, skipped, plan = ReferenceMaps(model), [], []
    from .power import PowerSampler

    power = PowerSampler  # one sampler per timed span; None once this host turns out to have no power source
    try:
        plan = plan_rows(model, config, dataset, reference, skipped, extra_onnx, extra_engines, report)
        samples = [[[] for _ in range(config.rounds)] for _ in plan]
        watts = [[] for _ in plan]
        order = visit_order(len(plan), config.rounds)
        broken = set()
        for step, (round_index, index) in enumerate(order, 1):
            resolution, runner, row = plan[index]
            if index in broken:
                continue
            report("[{}/{}] round {}/{}: {} at {} ...".format(step, len(order), round_index + 1, config.rounds,
                                                              row.runner, row.resolution))
            frame = np.random.default_rng(0).integers(0, 256, size=(1,) + tuple(resolution) + (3,), dtype=np.uint8)
            try:
                with runner:
                    got, row.copies_in_compute, summary = time_visit(runner, frame, config, power() if power else None)
                    if round_index == 0:
                        check_parity(row, runner, reference, dataset, resolution, config)
            except Exception as exc:  # a broken row is reported as FAIL and not visited again; the others go on
                row.verdict, row.failures = "FAIL", ["{}: {}".format(type(exc).__name__, (str(exc).splitlines() or [""])[0][:200])]
                broken.add(index)
                report("    FAIL: " + row.failures[0])
                continue
            samples[index][round_index] = got
            if summary is not None and not summary.available:
                power = _skip(skipped, "power: " + summary.note)
            elif summary is not None:
                watts[index] += [summary.mean_watts] if summary.mean_watts is not None else []
                row.throttled = summary.throttled if row.throttled is None else row.throttled or bool(summary.throttled)
            report("    compute {:.1f} ms, end-to-end {:.1f} ms over {} iterations; parity {}".format(
                np.mean([s[2] for s in got]), np.mean([s[0] for s in got]), len(got), row.verdict))
    except KeyboardInterrupt:
        skipped.append("interrupted (Ctrl-C): the rows measured so far are reported")
    rows = []
    for (_, _, row), chunks, power_w in zip(plan, samples, watts):
        flat = [s for chunk in chunks for s in chunk]
        if not flat and row.verdict == "FAIL":
            rows.append(row)
        elif flat:
            summarize(row, flat, chunks)
            row.power_w = float(np.mean(power_w)) if power_w else None
            row.fps_per_watt = row.fps / row.power_w if row.power_w else None
            rows.append(row)
    return rows, skipped


def candidates(pipeline, resolution, config, skipped, extra_onnx=(), extra_engines=()):
    """Factories of un-activated runners for every backend and precision this machine has at ``resolution``;
    the pipeline builds each artifact (ONNX, Q/DQ, engine) when its factory is called."""
    import torch

    from .pipeline import tensorrt_available
    from .runners import OrtRunner, TorchRunner

    found, want = [], set(config.precisions)
    if "pytorch" in config.backends:
        found += [lambda: TorchRunner(pipeline.model, "cpu", "fp32")] if config.cpu_rows else []
        for precision in sorted(want & {"fp32", "fp16"}) if torch.cuda.is_available() else ():
            found.append(lambda p=precision: TorchRunner(pipeline.model, "cuda", p, cuda_graph=config.cuda_graphs))
        if not torch.cuda.is_available():
            _skip(skipped, "pytorch cuda fp32/fp16: no CUDA device (torch.cuda.is_available() is False)")
    if "onnxruntime" in config.backends:
        try:
            import onnxruntime
        except ImportError:
            onnxruntime = _skip(skipped, "onnxruntime rows: onnxruntime is not installed (pip install 'sanet[onnx]')")
        for provider in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider") if onnxruntime else ():
            if provider == "CPUExecutionProvider" and not config.cpu_rows:
                continue
            if provider in onnxruntime.get_available_providers():
                found.append(lambda p=provider: pipeline.runner("onnx", resolution, providers=[p]))
            else:
                _skip(skipped, "onnxruntime {}: not in this onnxruntime build (pip install onnxruntime-gpu)".format(provider))
        if onnxruntime and "int8" in want and config.cpu_rows:  # uint8 activations: the ONNX Runtime x86 fast path
            found.append(lambda: pipeline.runner("qdq", resolution, activations="uint8"))
    if "tensorrt" in config.backends and not tensorrt_available():
        _skip(skipped, "tensorrt engines fp16/int8: tensorrt is not installed (JetPack ships it; on x86 use an NVIDIA "
                       "TensorRT container)")
    elif "tensorrt" in config.backends:
        for precision in sorted(want & {"fp16", "int8"}):
            found.append(lambda p=precision: pipeline.runner("engine", resolution, precision=p, cuda_graph=config.cuda_graphs))
    found += [lambda p=path: OrtRunner(p) for path in extra_onnx]
    return found + [lambda p=path: _trt_runner(p, config.cuda_graphs) for path in extra_engines]


def _trt_runner(path, cuda_graph):
    from .engines import TrtRunner

    return TrtRunner(path, cuda_graph=cuda_graph)


def _skip(skipped, message):
    if message not in skipped:
        skipped.append(message)




# ----------------------------------------------------------------------------------------------
# Host, reports and plots


def host_facts():
    """CPU, GPU, CUDA, TensorRT, ONNX Runtime and L4T facts recorded with results."""
    import torch

    facts = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
             "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
             "threads": torch.get_num_threads(), "gpu": None, "l4t": None}
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        facts["cpu"] = names[0] if names else facts["cpu"]
    for module in ("onnxruntime", "tensorrt"):
        try:
            facts[module] = __import__(module).__version__
        except ImportError:
            facts[module] = None
    if torch.cuda.is_available():
        facts.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                     compute_capability="{}.{}".format(*torch.cuda.get_device_capability(0)))
    if os.path.isfile("/etc/nv_tegra_release"):
        with open("/etc/nv_tegra_release", encoding="utf-8", errors="replace") as handle:
            facts["l4t"] = handle.readline().strip()
    return facts


def host_label(facts):
    return "{}{} ({} cores)".format(facts.get("gpu") + " / " if facts.get("gpu") else "", facts.get("cpu"), facts.get("cpu_count"))


def write_reports(rows, facts, settings, out, skipped):
    """bench.json (with the timing protocol), bench.csv, bench.md and (with matplotlib) PNG plots, all atomic."""
    import csv
    import io
    from dataclasses import asdict

    from .fileio import write_json_atomic, write_text_atomic

    os.makedirs(out, exist_ok=True)
    settings = dict(settings, date=settings.get("date") or time.strftime("%Y-%m-%d %H:%M %Z"))
    data = {"protocol": PROTOCOL, "host": facts, "settings": settings, "skipped": skipped, "rows": [asdict(r) for r in rows]}
    write_json_atomic(os.path.join(out, "bench.json"), data)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(Row.__dataclass_fields__))
    writer.writeheader()
    for row in rows:
        writer.writerow(dict(asdict(row), failures="; ".join(row.failures), round_fps=" ".join("{:.3f}".format(f) for f in row.round_fps)))
    write_text_atomic(os.path.join(out, "bench.csv"), buffer.getvalue())
    write_text_atomic(os.path.join(out, "bench.md"), markdown_table(rows, facts, settings))
    try:
        plots = write_plots(rows, facts, settings, out)
    except ImportError:
        plots = []
        _skip(skipped, "plots: matplotlib is not installed (pip install matplotlib)")
    return ["bench.json", "bench.csv", "bench.md"] + plots


def _fmt(value, pattern="{:.1f}", scale=1.0):
    return "-" if value is None or value != value else pattern.format(value * scale)


TABLE_HEADERS = ["input", "runner", "n", "mean ms", "p50 ms", "p99 ms", "CV %", "FPS", "H2D ms", "D2H ms", "e2e ms",
                 "e2e FPS", "mIoU %", "agree mIoU %", "pixel agree %", "FPS/W", "parity"]


def table_rows(rows):
    return [[r.resolution, r.runner + (" (copies in compute)" if r.copies_in_compute else ""), r.iterations,
             _fmt(r.mean_ms), _fmt(r.p50_ms), _fmt(r.p99_ms), _fmt(r.cv, scale=100) + (" unstable" if r.unstable else ""),
             _fmt(r.fps, "{:.2f}"), _fmt(r.h2d_ms, "{:.2f}"), _fmt(r.d2h_ms, "{:.2f}"), _fmt(r.e2e_mean_ms),
             _fmt(r.e2e_fps, "{:.2f}"), _fmt(r.miou, "{:.2f}", 100), _fmt(r.agreement_miou, "{:.2f}", 100),
             _fmt(r.pixel_agreement, "{:.3f}", 100), _fmt(r.fps_per_watt, "{:.2f}"), r.verdict] for r in rows]


def markdown_table(rows, facts, settings):
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows(rows)]
    head = "Host: {}; torch {}, onnxruntime {}, TensorRT {}. Model: {}. Batch 1, {} round(s); FPS = 1000 / mean compute " \
           "ms; e2e = uint8 frame in, uint8 class map out; CV > {:.0f} % is marked unstable.\n\n".format(
               host_label(facts), facts.get("torch"), facts.get("onnxruntime"), facts.get("tensorrt"),
               settings.get("checkpoint"), settings.get("rounds"), 100 * UNSTABLE_CV)
    return head + "\n".join(lines) + "\n"


def write_plots(rows, facts, settings, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = "SANet, {} on {}\n{}".format(os.path.basename(str(settings.get("checkpoint"))), host_label(facts),
                                          settings["date"])
    sizes = sorted({r.resolution for r in rows}, key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1]))
    runners = sorted({r.runner for r in rows})
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(runners)}
    fig, axis = plt.subplots(figsize=(8, 5), dpi=110)
    for name in runners:
        mine = sorted((sizes.index(r.resolution), r) for r in rows if r.runner == name)
        axis.plot([i for i, _ in mine], [r.fps for _, r in mine], "o-", color=colors[name], label=name + " compute")
        axis.plot([i for i, _ in mine], [r.e2e_fps for _, r in mine], "s--", color=colors[name], alpha=0.6,
                  label=name + " end-to-end")
    axis.set_xticks(range(len(sizes)))
    axis.set_xticklabels(["{}\n({:.1f} MPix)".format(s, int(s.split("x")[0]) * int(s.split("x")[1]) / 1e6) for s in sizes])
    axis.set_xlabel("input H x W (batch 1)")
    axis.set_ylabel("frames per second (log scale)")
    axis.set_yscale("log")
    axis.grid(alpha=0.3, which="both")
    axis.set_title("FPS vs input size: " + title, fontsize=9)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    written = [_save_figure(plt, fig, out, "fps_vs_resolution.png")]
    labelled = settings.get("checkpoint") != "random-init" and any(r.miou is not None for r in rows)
    metric = "mIoU vs labels (%)" if labelled else "agreement mIoU vs PyTorch FP32 (%)"
    markers = dict(zip(sizes, "osD^v"))
    fig, axis = plt.subplots(figsize=(8, 5), dpi=110)
    for row in rows:
        quality = row.miou if labelled else row.agreement_miou
        if quality is not None:
            axis.scatter(row.fps, 100 * quality, color=colors[row.runner], marker=markers.get(row.resolution, "o"), s=45)
    handles = [plt.Line2D([], [], color=colors[n], marker="o", linestyle="", label=n) for n in runners]
    handles += [plt.Line2D([], [], color="grey", marker=markers.get(s, "o"), linestyle="", label=s) for s in sizes]
    axis.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.set_xlabel("frames per second, compute (log scale)")
    axis.set_ylabel(metric)
    axis.set_xscale("log")
    axis.grid(alpha=0.3, which="both")
    note = "" if labelled else " (untrained model or unlabelled data: agreement with the reference, not accuracy)"
    axis.set_title("Accuracy vs speed{}: {}".format(note, title), fontsize=8)
    return written + [_save_figure(plt, fig, out, "fps_vs_miou.png")]


def _save_figure(plt, fig, out, name):
    from .fileio import atomic_path

    fig.tight_layout()
    with atomic_path(os.path.join(out, name)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return name


# ----------------------------------------------------------------------------------------------
# Model and flags


def resolve_model(checkpoint=None, variant=None, classes=None, report=print):
    """The network to bench and its name: ``checkpoint``; else the shipped :data:`DEFAULT_CHECKPOINT` when it
    exists; else a random-init SANet (with a note: parity then only checks agreement)."""
    from .checkpoints import load_model
    from .model import build_model

    path = checkpoint or (DEFAULT_CHECKPOINT if os.path.isfile(DEFAULT_CHECKPOINT) else None)
    if path:
        return load_model(path, variant, classes), path
    report("note: no checkpoint given and none shipped: random-init SANet; parity checks agreement only")
    return build_model(variant or "sanet", classes or 19, aux_head=False).eval(), "random-init"


def add_arguments(parser):
    """The bench-only flags; the CLI adds the shared ones (model, data, --res, --onnx/--engine, --calib, -o)."""
    default = BenchConfig()
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="default: all")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="default: all")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay PyTorch CUDA and TensorRT rows from CUDA graphs")
    parser.add_argument("--warmup-seconds", type=float, default=default.warmup_seconds,
                        help="warm-up per visit of a row, after activating its runner (default %(default)s s)")
    parser.add_argument("--iterations", type=int, default=default.iterations,
                        help="minimum timed iterations per row, all rounds together (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=default.seconds,
                        help="minimum timed seconds per row, all rounds together (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=default.rounds,
                        help="interleaved rounds; each visits every row once (default %(default)s)")
    parser.add_argument("--parity-images", type=int, default=default.parity_images,
                        help="images per row for the parity check (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails its parity budget")
    return parser


def config_from_args(args):
    """BenchConfig from :func:`add_arguments` flags plus the shared ``--res``, ``--calib``, ``--calib-count`` and
    ``-o`` where the parser has them; ``calib`` stays None for the caller to default."""
    from .model import check_input_size

    default = BenchConfig()
    for name in ("iterations", "rounds", "parity_images", "calib_count"):
        if getattr(args, name, 1) < 1:
            raise SanetError("--{} must be at least 1".format(name.replace("_", "-")))
    if args.warmup_seconds < 0 or args.seconds < 0:
        raise SanetError("--warmup-seconds and --seconds must be >= 0")
    try:
        sizes = [(int(h), int(w)) for h, w in getattr(args, "res", None) or default.resolutions]
    except ValueError:
        raise SanetError("--res takes two integers H W") from None
    for size in sizes:
        check_input_size(*size)
    return BenchConfig(sizes, tuple(args.backends), tuple(args.precisions), args.warmup_seconds, args.iterations, args.seconds,
                       args.rounds, args.parity_images, getattr(args, "out", default.out), getattr(args, "calib", None),
                       getattr(args, "calib_count", default.calib_count), args.cuda_graphs)
