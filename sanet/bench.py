"""sanet-bench: FPS at 512x1024 / 768x1536 / 1024x2048 for every backend and precision here, with parity.

Each row is one (resolution, runner) (:mod:`sanet.benchplan` says which), timed as :data:`sanet.benchreport.PROTOCOL`
says (also in ``bench.json``): every iteration runs one uint8 frame through its phases in turn, so end-to-end contains
compute by construction. Rows are visited in interleaved rounds, one activated runner at a time (besides runners that
keep warm: the PyTorch CPU one, a model copy, and the TensorRT execution provider's sessions, which hold their
engines), and checked against PyTorch FP32 on ``parity_images`` labelled frames with the parity module (over budget ->
FAIL); the PyTorch CPU FP32 row is that reference and says so. With power measured, a visit lasts until the power
sensor has updated often enough for its readings to be the row's own (sanet.power).
"""
import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .benchplan import skip
from .benchreport import REFERENCE, UNSTABLE_CV
from .constants import BENCH_RESOLUTIONS, PRECISIONS
from .errors import SanetError
from .parity import DELTA_MIOU_MIN_IMAGES

BACKENDS = ("pytorch", "onnxruntime", "openvino", "tensorrt", "torch2trt")
BENCH_PRECISIONS = PRECISIONS + ("bf16",)  # bf16: OpenVINO on CPUs with AMX / AVX-512 BF16


@dataclass
class BenchConfig:
    resolutions: List[Tuple[int, int]] = field(default_factory=lambda: list(BENCH_RESOLUTIONS))
    backends: Tuple[str, ...] = BACKENDS
    precisions: Tuple[str, ...] = BENCH_PRECISIONS
    warmup_seconds: float = 0.5  # per visit, after activation
    iterations: int = 20  # minimum timed iterations per row (all rounds together)
    seconds: float = 0.0  # minimum timed seconds per row (all rounds together)
    # CPU rows stop timing after this many seconds (all rounds together, at least one iteration per visit) even below
    # `iterations`: a CPU takes seconds per 1024x2048 frame, and the default run must stay short. 0: no cap.
    cpu_max_seconds: float = 1.5
    # Three rounds, so a CPU row's three samples (the floor below) come from three visits a round apart: a slow spell
    # of a shared host that hits one visit cannot move the median. With two rounds (two samples, then one) a slow
    # first visit set the median (README, "A default run on this machine"; a drift of the whole host between two
    # runs still moves rows, and no protocol inside one run removes it).
    rounds: int = 3
    # Labelled frames each row's parity is judged on: the |delta mIoU| budget (INT8's) needs this many, so every budget
    # the table shows is applied (the default run's generated scenes are labelled).
    parity_images: int = DELTA_MIOU_MIN_IMAGES
    out: str = "results/bench"
    calib: Optional[str] = None  # calibration images for INT8 rows (Cityscapes root or image folder)
    calib_count: int = 8  # crops; few, to keep the default run short (sanet-export defaults to 500)
    cuda_graphs: bool = False  # replay PyTorch CUDA / TensorRT rows from a captured CUDA graph
    cpu_rows: bool = True  # False: GPU rows only (sanet-gpucheck)
    # Timed iterations every row gets even past the CPU cap (at most `iterations`): the median of three is what lets
    # one burst of a shared host pass (two consecutive default runs moved 3 of 15 rows by > 15 % with two samples).
    min_samples: int = 3
    # With power measured, a visit waits at most this long for the sensor to settle (sanet.power.POWER_SETTLE_UPDATES
    # distinct updates); a visit cut short says so (Row.power_settled) and its watts are not used.
    power_max_seconds: float = 10.0


def latency_stats(latencies_ms):
    """mean / p50 / p90 / p99 (ms), CV (sample std / mean) and FPS = 1000 / p50: the median, which one burst of a shared
    host (an iteration at twice its time) among three samples cannot move; the mean and p99 keep the tail visible."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    mean = float(values.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    cv = float(values.std(ddof=1) / mean) if values.size > 1 else 0.0
    return {"mean_ms": mean, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "cv": cv, "fps": 1000.0 / p50}


def visit_order(rows, rounds):
    """(round, row index) pairs: every round visits every row once, in the same order, so a row's visits are a whole
    round apart. (Odd rounds in reverse order would even out a linear drift, but put the row where a round turns
    twice in a row: its samples then fell into one slow spell of a shared host, and that row moved by 20, 22 and 33 %
    in three of five pairs of consecutive default runs. Rows compared with each other sit next to each other.)"""
    return [(r, i) for r in range(rounds) for i in range(rows)]


# ----------------------------------------------------------------------------------------------
# Timing: one iteration = preprocess, stage (H2D), execute (compute), fetch (argmax + D2H): the runner contract's
# device phases (sanet.runners)


def clock_of(runner):
    """(mark, elapsed_ms): CUDA events on ``runner.cuda_stream`` (the stream a device runner executes on), else the
    host wall clock read after waiting for the runner's device."""
    stream = runner.cuda_stream
    if stream is None:
        wait = getattr(runner, "synchronize", None) or (lambda: None)
        return lambda: wait() or time.perf_counter(), lambda start, end: 1000.0 * (end - start)
    import torch

    def mark():
        event = torch.cuda.Event(enable_timing=True)
        event.record(stream)
        return event

    return mark, lambda start, end: end.synchronize() or float(start.elapsed_time(end))


def time_iteration(runner, clock, frame):
    """One uint8 (1, H, W, 3) frame through every phase -> (e2e, h2d, compute, d2h) in ms."""
    mark, elapsed = clock
    start = time.perf_counter()
    inputs = runner.prepare(frame)
    marks = [mark()]
    for phase in (lambda: runner.stage(inputs), runner.execute, lambda: runner.fetch(class_map=True)):
        phase()
        marks.append(mark())
    end = time.perf_counter()  # fetch returned host memory: the device is done with this frame
    return (1000.0 * (end - start),) + tuple(elapsed(a, b) for a, b in zip(marks, marks[1:]))


def visit_floor(config, round_index, done):
    """Timed iterations a visit takes even past the CPU cap, so that the row has ``min_samples`` (at most
    ``iterations``) after its last round, spread over the rounds (3 over 3 rounds: one each; over 2: 2, then 1); at least
    one."""
    want = math.ceil(min(config.min_samples, config.iterations) * (round_index + 1) / config.rounds)
    return max(1, want - done)


def time_visit(runner, frame, config, sampler=None, warm_since=None, floor=1):
    """Warm up for ``warmup_seconds`` (at least one iteration; ``warm_since``: the runner already ran since that
    perf_counter time, e.g. the parity check, and that time counts), then time this round's share of the row (at
    least ``floor`` iterations, cap or not) while ``sampler`` (a sanet.power.PowerSampler: its own thread) samples
    power, and on until the sampler has settled (its sensor updated often enough for the readings to be this visit's
    own, measured, at most ``power_max_seconds``) -> (samples, copies_in_compute, summary)."""
    clock = clock_of(runner)
    deadline = (warm_since or time.perf_counter()) + config.warmup_seconds
    if warm_since is None:
        time_iteration(runner, clock, frame)
    while time.perf_counter() < deadline:
        time_iteration(runner, clock, frame)
    count, seconds, samples = math.ceil(config.iterations / config.rounds), config.seconds / config.rounds, []
    cap = config.cpu_max_seconds / config.rounds if runner.info.device == "cpu" and config.cpu_max_seconds else math.inf
    if sampler is not None:
        sampler.start()
    start = time.perf_counter()

    def power_pending():
        return sampler is not None and not sampler.settled() and time.perf_counter() - start < config.power_max_seconds

    try:
        while len(samples) < floor or ((len(samples) < count or time.perf_counter() - start < seconds)
                                       and time.perf_counter() - start < cap) or power_pending():
            samples.append(time_iteration(runner, clock, frame))
    finally:
        summary = sampler.stop() if sampler is not None else None
    return samples, runner.info.device != "cpu" and not runner.device_resident, summary


def failure_line(exc):
    """The failure a row records for an exception: its type and first line (bench and gpucheck rows alike)."""
    return "{}: {}".format(type(exc).__name__, (str(exc).splitlines() or [""])[0][:300])


def summarize(row, samples, rounds_samples):
    """Fill ``row``'s timing fields from its (e2e, h2d, compute, d2h) samples, and per round."""
    e2e, h2d, compute, d2h = (np.asarray(column) for column in zip(*samples))
    stats, end = latency_stats(compute), latency_stats(e2e)
    row.iterations, row.unstable = len(samples), stats["cv"] > UNSTABLE_CV
    row.mean_ms, row.p50_ms, row.p90_ms, row.p99_ms, row.cv, row.fps = (stats[k] for k in ("mean_ms", "p50_ms", "p90_ms",
                                                                                            "p99_ms", "cv", "fps"))
    row.h2d_p50_ms, row.d2h_p50_ms = float(np.median(h2d)), float(np.median(d2h))  # medians, as FPS
    row.e2e_mean_ms, row.e2e_p50_ms, row.e2e_p99_ms = end["mean_ms"], end["p50_ms"], end["p99_ms"]
    row.e2e_cv, row.e2e_fps = end["cv"], end["fps"]
    row.round_fps = [1000.0 / float(np.median([s[2] for s in chunk])) for chunk in rounds_samples if chunk]


# ----------------------------------------------------------------------------------------------
# Parity reference, planning and the interleaved rounds


class ParityFrames:
    """A dataset whose frames are decoded once: every row's parity check reads the same ``parity_images`` frames (a
    1024x2048 image and label PNG take tens of ms to decode, for each of some 18 rows)."""

    def __init__(self, dataset):
        self.dataset, self.frames = dataset, {}

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # has_labels, class_names, ...: the dataset's own
        return getattr(self.dataset, name)

    def load(self, index):
        if index not in self.frames:
            self.frames[index] = self.dataset.load(index)
        return self.frames[index]


def fill_reference(reference, dataset, size, limit):
    """Run ``reference`` (a parity.MemoRunner: uint8 class maps, bounded) on the images :func:`sanet.parity.compare`
    will ask for at ``size`` (the first ``limit``, resized alike) and close it again, so the candidates' parity
    checks are cache hits and never hold a second activated runner."""
    from .data import import_cv2

    cv2 = import_cv2()
    with reference:
        for index in range(min(limit, len(dataset))):
            image = dataset.load(index)[0]
            if image.shape[:2] != tuple(size):
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            reference.predict(image[None])


def check_parity(row, runner, reference, dataset, resolution, config):
    """Compare ``runner`` (activated) with ``reference`` (a parity.MemoRunner) and fill ``row``'s parity fields. The
    PyTorch CPU FP32 row runs the reference's own runner: its parity inference makes the reference maps (once, not
    again before the rounds); it gets its mIoU against the labels and the verdict REFERENCE (nothing to agree with)."""
    from .parity import compare

    own = runner is reference.runner
    candidate, kept = reference if own else runner, reference.runner.active
    try:
        result = compare(reference, candidate, dataset, size=resolution, limit=config.parity_images, progress=False)
    finally:
        if not own and not kept:
            reference.runner.close()  # activated on demand only where the row that makes the maps failed
    row.miou, row.parity_images = result.miou_candidate, result.images
    if own:
        row.verdict = REFERENCE
        return
    row.agreement_miou, row.pixel_agreement, row.delta_miou = result.agreement_miou, result.pixel_agreement, result.delta_miou
    row.failures, row.verdict, row.parity_notes = result.failures, "PASS" if result.passed else "FAIL", result.notes


def plan_bench(model, config, dataset, reference, skipped, extra_onnx, extra_engines, report):
    """benchplan.plan_rows with every export, calibration and reference map made now (the PyTorch CPU FP32 row,
    visited first at its resolution, makes that resolution's maps), so the timed rounds do nothing else."""
    from .benchplan import plan_rows
    from .pipeline import CalibSettings, Pipeline, weights_digest

    # Calibrated once, at the smallest resolution; the larger ones reuse its ranges (their parity rows check them).
    smallest = min(config.resolutions, key=lambda size: size[0] * size[1])
    calib = CalibSettings(root=config.calib, count=config.calib_count, quiet=True, resolution=smallest) if config.calib else None
    # verify=False: each FP32 export is checked by this run's parity rows (the same file against PyTorch FP32 on real
    # frames), so running it once more at export would only add a PyTorch and an ONNX Runtime inference per size.
    pipeline = Pipeline(model, out_dir=os.path.join(config.out, "artifacts"), calib_config=calib, report=report, reuse=True,
                        tag=weights_digest(model)[:12], verify=False)
    plan = plan_rows(pipeline, config, skipped, reference, extra_onnx, extra_engines, report)
    for resolution in dict.fromkeys(size for size, _, _ in plan):
        first = next(runner for size, runner, _ in plan if size == resolution)
        if first is not reference.runner:  # else that row, visited first, makes them
            report("preparing {}x{}: PyTorch FP32 reference maps of {} parity image(s) ...".format(
                resolution[0], resolution[1], config.parity_images))
            fill_reference(reference, dataset, resolution, config.parity_images)
    return plan


def run_bench(model, config, dataset, extra_onnx=(), extra_engines=(), report=print):
    """Every row at every resolution, timed in interleaved rounds -> (rows, skipped). A row that raises is
    reported as FAIL and not visited again; Ctrl-C stops early and keeps what was measured."""
    from .parity import MemoRunner
    from .power import PowerSampler
    from .runners import TorchRunner

    os.makedirs(config.out, exist_ok=True)
    dataset = ParityFrames(dataset)
    reference, skipped, plan, power, broken = MemoRunner(TorchRunner(model, "cpu", "fp32")), [], [], PowerSampler, set()
    last_ran = {}  # id(runner) -> perf_counter time its last visit ended
    try:
        plan = plan_bench(model, config, dataset, reference, skipped, extra_onnx, extra_engines, report)
        samples, watts = [[[] for _ in range(config.rounds)] for _ in plan], [[] for _ in plan]
        updates = [[] for _ in plan]  # each visit's observed interval between power sensor updates
        order = visit_order(len(plan), config.rounds)
        for step, (round_index, index) in enumerate(order, 1):
            (resolution, runner, row), summary = plan[index], None
            if index in broken:
                continue
            report("[{}/{}] round {}/{}: {} at {} ...".format(step, len(order), round_index + 1, config.rounds, row.runner,
                                                              row.resolution))
            frame = np.random.default_rng(0).integers(0, 256, size=(1,) + tuple(resolution) + (3,), dtype=np.uint8)
            floor = visit_floor(config, round_index, sum(len(chunk) for chunk in samples[index]))
            try:
                # Warm since now (round 1: the parity check runs first), since its last visit (a runner that kept
                # warm, still activated), or not at all (a new activation).
                warm_since = time.perf_counter() if round_index == 0 else last_ran.get(id(runner)) if runner.active else None
                try:
                    if not runner.active:
                        runner.activate()
                    if round_index == 0:
                        check_parity(row, runner, reference, dataset, resolution, config)
                    got, row.copies_in_compute, summary = time_visit(runner, frame, config, power() if power else None,
                                                                     warm_since, floor)
                finally:
                    last_ran[id(runner)] = time.perf_counter()
                    if runner.keeps_warm:
                        runner.release()
                    else:
                        runner.close()
            except Exception as exc:  # recorded on the row, so one broken backend does not hide the others
                row.verdict, row.failures = "FAIL", [failure_line(exc)]
                report("    FAIL: " + row.failures[0])
                broken.add(index)
                continue
            samples[index][round_index] = got
            if summary is not None and not summary.available:
                power = skip(skipped, "power: " + summary.note)  # no source on this host: stop asking
            elif summary is not None:
                # A visit cut short before the sensor settled would give the previous row's watts: not used.
                watts[index] += [summary.mean_watts] if summary.settled and summary.mean_watts is not None else []
                updates[index] += [summary.update_interval_s] if summary.update_interval_s is not None else []
                if summary.settled is not None:  # None: no total power to settle (the summary's note says why)
                    row.power_settled = summary.settled and row.power_settled is not False
                row.throttled = summary.throttled if row.throttled is None else row.throttled or bool(summary.throttled)
            report("    compute {:.1f} ms, end-to-end {:.1f} ms over {} iterations; parity {}".format(
                np.mean([s[2] for s in got]), np.mean([s[0] for s in got]), len(got), row.verdict))
    except KeyboardInterrupt:
        skipped.append("interrupted (Ctrl-C): the rows measured so far are reported")
    finally:
        for _, runner, _ in plan:
            runner.close()  # the runners that kept warm between their visits
    rows = []
    for (_, _, row), chunks, power_w, intervals in zip(plan, samples if plan else [], watts if plan else [],
                                                       updates if plan else []):
        if any(chunks):
            summarize(row, [s for chunk in chunks for s in chunk], chunks)
            row.capped = row.iterations < config.iterations
            row.power_w = float(np.mean(power_w)) if power_w else None
            row.fps_per_watt = row.fps / row.power_w if row.power_w else None
            row.power_update_s = float(np.median(intervals)) if intervals else None
        if any(chunks) or row.verdict == "FAIL":
            rows.append(row)
    return rows, skipped


# ----------------------------------------------------------------------------------------------
# Model and flags


def generated_scenes(out, config):
    """The default parity and calibration images: generated street scenes at the largest resolution, as Cityscapes
    frames are 1024x2048, so smaller inputs are downscaled frames and the calibration crops cut at the smallest
    resolution have the statistics of the full frames (made once under ``out``) -> (root, val split)."""
    from .data import open_dataset
    from .synth import SynthConfig, generate_dataset

    largest = max(config.resolutions, key=lambda size: size[0] * size[1])
    root = os.path.join(out, "synth-{}x{}".format(*largest))
    val = max(DELTA_MIOU_MIN_IMAGES, config.parity_images)
    try:
        dataset = open_dataset(root, "cityscapes", "val") if os.path.isdir(os.path.join(root, "leftImg8bit", "train")) else None
    except SanetError:  # an earlier run stopped while writing them
        dataset = None
    if dataset is None or len(dataset) < val:  # frames are drawn per index from a fixed seed: the same scenes again
        generate_dataset(root, SynthConfig(largest[0], largest[1], train=8, val=val))
        dataset = open_dataset(root, "cityscapes", "val")
    return root, dataset


def resolve_model(checkpoint=None, variant=None, classes=None, report=print):
    """The network to bench and its name: ``checkpoint``; else the shipped checkpoint (checkpoints.shipped_checkpoint)
    where this install has it; else a random-init SANet (with a note: parity then only checks agreement)."""
    from .checkpoints import load_model, shipped_checkpoint
    from .model import build_model

    path = checkpoint or shipped_checkpoint()
    if path:
        return load_model(path, variant, classes), path
    report("note: no checkpoint given and none shipped: random-init SANet; parity checks agreement only")
    return build_model(variant or "sanet", classes or 19, aux_head=False).eval(), "random-init"


def add_arguments(parser):
    """The bench-only flags; the CLI adds the shared ones (model, data, --res, --onnx/--engine, --calib, -o)."""
    default = BenchConfig()
    for flag, kind, text in (("--warmup-seconds", float, "warm-up per visit of a row, after activating its runner, in s"),
                             ("--iterations", int, "minimum timed iterations per row, all rounds together"),
                             ("--seconds", float, "minimum timed seconds per row, all rounds together"),
                             ("--cpu-max-seconds", float, "CPU rows stop timing after this many seconds (all rounds "
                              "together) even below --iterations, marked (cap); 0: no cap"),
                             ("--min-samples", int, "timed iterations every row gets even past the CPU cap (at "
                              "most --iterations); FPS is 1000 / their median"),
                             ("--rounds", int, "interleaved rounds; each visits every row once"),
                             ("--parity-images", int, "images per row for the parity check against PyTorch FP32")):
        value = getattr(default, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=kind, default=value, help="{} (default: {})".format(text, value))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="(default: all)")
    parser.add_argument("--precisions", nargs="+", choices=BENCH_PRECISIONS, default=list(BENCH_PRECISIONS), help="(default: all)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay PyTorch CUDA and TensorRT rows from CUDA graphs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails its parity budget")
    parser.add_argument("--compare", metavar="BENCH_JSON", help="an earlier run's bench.json: print each row's FPS change "
                        "and mark changes above 15 %% (default: no comparison)")
    return parser


def config_from_args(args):
    """BenchConfig from :func:`add_arguments` flags plus the shared ``--res``, ``--calib``, ``--calib-count`` and ``-o``
    where the parser has them (``calib`` None: the caller picks the default images)."""
    from .model import check_input_size

    default = BenchConfig()
    for name in ("iterations", "min_samples", "rounds", "parity_images", "calib_count"):
        if getattr(args, name, 1) < 1:
            raise SanetError("--{} must be at least 1".format(name.replace("_", "-")))
    if min(args.warmup_seconds, args.seconds, args.cpu_max_seconds) < 0:
        raise SanetError("--warmup-seconds, --seconds and --cpu-max-seconds must be >= 0")
    try:
        sizes = [(int(h), int(w)) for h, w in getattr(args, "res", None) or default.resolutions]
    except ValueError:
        raise SanetError("--res takes two integers H W") from None
    for size in sizes:
        check_input_size(*size)
    return BenchConfig(sizes, tuple(args.backends), tuple(args.precisions), args.warmup_seconds, args.iterations, args.seconds,
                       args.cpu_max_seconds, args.rounds, args.parity_images, getattr(args, "out", default.out),
                       getattr(args, "calib", None), getattr(args, "calib_count", default.calib_count), args.cuda_graphs,
                       min_samples=args.min_samples)
