"""sanet-bench reports: ``bench.json`` (the timing :data:`PROTOCOL`, host facts, settings, skip notes and every
:class:`Row`), ``bench.csv`` (one line per row), ``bench.md`` (the table ``sanet-bench`` prints, under a line naming host,
versions, model and date) and, with matplotlib, ``fps_vs_resolution.png`` and ``fps_vs_miou.png``; each file is written
atomically.

Timing protocol (:data:`PROTOCOL`, also in ``bench.json``): batch 1; compute is device execution only with input and
output resident on the device (CUDA events on a GPU, wall clock on a CPU; runners without device staging include both
copies and say so); end-to-end is wall clock from a uint8 HWC frame on the host to its uint8 class map on the host,
timed in the same iterations as compute; every activation warms up first; rows are visited in interleaved rounds (the same
order each round) so drift hits every row alike; statistics are mean, p50, p90, p99 and CV = sample std / mean, FPS = 1000 /
p50, and a CV above :data:`UNSTABLE_CV` marks the row unstable; power is sampled in its own thread, never inside a
timed call.
"""
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np

from .power import POWER_SETTLE_UPDATES

NAN = float("nan")
UNSTABLE_CV = 0.10  # std / mean of a row's compute latencies above which the row is marked unstable
PROTOCOL = {
    "batch": 1,
    "compute": "device execution only, input and output resident on the device: CUDA events on a GPU, wall clock on a "
               "CPU; rows marked copies_in_compute come from runners without device staging (an ONNX Runtime GPU provider "
               "where torch has no CUDA) and include both copies",
    "h2d": "putting the prepared input on the device (stage); host preprocessing is only in end_to_end; the table and "
           "h2d_p50_ms give the median over the row's timed iterations, as FPS",
    "d2h": "argmax on the device for logits models, then copying the uint8 class map (B, H, W) to the host; median "
           "(d2h_p50_ms) as h2d",
    "end_to_end": "wall clock from a uint8 HWC frame on the host to its uint8 class map on the host (preprocess, H2D, "
                  "compute, argmax, D2H), in the same iterations as compute, so it is never faster than compute",
    "warmup": "full iterations for warmup_seconds (at least one) at every visit, after the runner is activated; in the "
              "first round the parity check runs first and its inferences count toward the warm-up; a runner that keeps "
              "warm (PyTorch on the CPU: a model copy, no memory pool) stays activated and warmed up from its last visit",
    "iterations": "at least `iterations` timed iterations and `seconds` seconds per row, split evenly over the rounds; "
                  "CPU rows stop after `cpu_max_seconds` (at least one iteration per visit, and at least `min_samples` "
                  "per row) and are marked capped",
    "rounds": "each round visits every row once, in the same order, so every row's visits are a whole round apart "
              "and a slow spell of a shared host hits every row alike",
    "statistics": "mean, p50, p90, p99 (linear interpolation) and CV = sample std / mean over all timed iterations; "
                  "CV > 10 % marks the row unstable; FPS = 1000 / p50 (compute and end-to-end alike), so one burst of a "
                  "shared host among three samples does not move it",
    "power": ("sampled in its own thread while a row is timed, never inside a timed call; a visit lasts until the sensor "
              "has updated {} times (distinct readings the sampler observed), and the row's watts are the mean of the "
              "readings from the sensor's second update on (the first may average time before the visit); visits cut "
              "short at power_max_seconds are left out of power_w and the row says power_settled false; power_update_s "
              "is the median interval between updates observed").format(POWER_SETTLE_UPDATES),
    "parity": "each row against PyTorch FP32 on the CPU on the first parity_images frames (labelled where the data is), "
              "under the budget of its precision; the PyTorch CPU FP32 row is that reference: verdict 'reference', its "
              "mIoU against the labels, no agreement figures",
    "rows": "one per (resolution, runner); runner is backend-device-precision and, for a --onnx/--engine file, the path "
            "as given in brackets; key = resolution/runner is unique in a run and is what --compare pairs",
}


REFERENCE = "reference"  # the verdict of the PyTorch CPU FP32 row: parity is measured against it, not judged on it


@dataclass
class Row:
    resolution: str
    runner: str  # backend-device-precision, and " [path]" for a user's --onnx/--engine file
    backend: str
    device: str
    precision: str
    iterations: int = 0
    mean_ms: float = NAN  # compute latency statistics (ms) ...
    p50_ms: float = NAN
    p90_ms: float = NAN
    p99_ms: float = NAN
    cv: float = NAN
    fps: float = NAN  # ... and 1000 / p50 (the median)
    unstable: bool = False
    capped: bool = False  # a CPU row stopped by cpu_max_seconds before `iterations`: few samples, p99 is rough
    copies_in_compute: bool = False
    h2d_p50_ms: float = NAN  # medians, as FPS
    d2h_p50_ms: float = NAN
    e2e_mean_ms: float = NAN
    e2e_p50_ms: float = NAN
    e2e_p99_ms: float = NAN
    e2e_cv: float = NAN
    e2e_fps: float = NAN
    round_fps: List[float] = field(default_factory=list)  # compute FPS of each round: drift shows here
    miou: Optional[float] = None
    agreement_miou: Optional[float] = None
    pixel_agreement: Optional[float] = None
    delta_miou: Optional[float] = None
    parity_images: int = 0
    power_w: Optional[float] = None  # mean of the visits whose power readings settled (sanet.power)
    fps_per_watt: Optional[float] = None
    power_update_s: Optional[float] = None  # median interval between distinct sensor updates the sampler observed
    power_settled: Optional[bool] = None  # every visit lasted until the sensor updated POWER_SETTLE_UPDATES times
    throttled: Optional[bool] = None
    verdict: str = "-"  # PASS, FAIL, REFERENCE or "-" (not checked)
    failures: List[str] = field(default_factory=list)
    parity_notes: List[str] = field(default_factory=list)  # budget checks not judged (e.g. delta mIoU on one image)
    runner_notes: List[str] = field(default_factory=list)  # what the runner did differently from what was asked
    key: str = ""  # "resolution/runner": unique within a run; --compare pairs rows by it

    def __post_init__(self):
        self.key = self.key or "{}/{}".format(self.resolution, self.runner)


def host_facts():
    """CPU, GPU, CUDA, TensorRT, ONNX Runtime and L4T facts recorded with results; on a Jetson also the power mode and
    clocks (``nvpmodel -q``, ``jetson_clocks --show``: raw text and parsed, see sanet.power.jetson_power_facts)."""
    import torch

    from .power import jetson_power_facts, l4t_release

    facts = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
             "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "cuda": torch.version.cuda,
             "l4t": l4t_release()}
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            facts["cpu"] = next((line.split(":", 1)[-1].strip() for line in handle if line.startswith("model name")), facts["cpu"])
    power = jetson_power_facts()
    if power:
        facts["jetson_power"] = power
    for module in ("onnxruntime", "tensorrt"):
        try:
            facts[module] = __import__(module).__version__
        except ImportError:
            facts[module] = None
    return facts


def host_label(facts):
    return "{}{} ({} cores)".format(facts["gpu"] + " / " if facts.get("gpu") else "", facts.get("cpu"), facts.get("cpu_count"))


def write_reports(rows, facts, settings, out, skipped):
    """bench.json (with the protocol), bench.csv, bench.md and (with matplotlib) PNG plots, each written atomically."""
    import csv
    import io

    from .fileio import write_json_atomic, write_text_atomic

    os.makedirs(out, exist_ok=True)
    settings = dict(settings, date=settings.get("date") or time.strftime("%Y-%m-%d %H:%M %Z"))
    write_json_atomic(os.path.join(out, "bench.json"), {"protocol": PROTOCOL, "host": facts, "settings": settings,
                                                        "skipped": skipped, "rows": [asdict(r) for r in rows]})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(Row.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(dict(asdict(r), failures="; ".join(r.failures), parity_notes="; ".join(r.parity_notes),
                         runner_notes="; ".join(r.runner_notes), round_fps=" ".join(map("{:.3f}".format, r.round_fps)))
                     for r in rows)
    write_text_atomic(os.path.join(out, "bench.csv"), buffer.getvalue())
    write_text_atomic(os.path.join(out, "bench.md"), markdown_table(rows, facts, settings))
    try:
        return ["bench.json", "bench.csv", "bench.md"] + write_plots(rows, facts, settings, out)
    except ImportError:
        note = "plots: matplotlib is not installed (pip install matplotlib)"
        if note not in skipped:
            skipped.append(note)
        return ["bench.json", "bench.csv", "bench.md"]


COMPARE_HEADERS = ["input", "runner", "FPS before", "FPS now", "change %", "e2e FPS before", "e2e FPS now", "change %"]
DRIFT = 0.15  # a row whose compute or end-to-end FPS moved more than this between two runs is marked


def read_runs(path):
    """{key: row dict} of an earlier run's bench.json (read before this run may overwrite it). Rows of runs older than
    the key field are keyed by resolution and runner as Row does; a key that such a run holds twice (an extra file's
    row under a built-in label) pairs with nothing rather than with the wrong row."""
    import collections
    import json

    from .errors import SanetError

    try:
        with open(path) as handle:
            rows = json.load(handle)["rows"]
        keys = [r.get("key") or "{}/{}".format(r["resolution"], r["runner"]) for r in rows]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SanetError("cannot read an earlier bench.json from {}: {} (give the bench.json of a sanet-bench run)".format(
            path, exc)) from None
    counts = collections.Counter(keys)
    return {key: row for key, row in zip(keys, rows) if counts[key] == 1}


def compare_runs(rows, before):
    """Rows of this run against :func:`read_runs` ``before`` (same key: resolution and runner) -> (table rows, summary
    line): FPS and end-to-end FPS before/now and their change; a change beyond DRIFT is marked. The summary also gives
    the median row's change: the whole host's drift between the runs, which no protocol inside one run can remove."""
    table, moved, ratios = [], 0, []
    for row in rows:
        old = before.get(row.key)
        if old is None or not old.get("fps") or row.fps != row.fps:
            continue
        changes = [row.fps / old["fps"] - 1, row.e2e_fps / old["e2e_fps"] - 1 if old.get("e2e_fps") else NAN]
        moved += any(abs(c) > DRIFT for c in changes)
        ratios.append(row.fps / old["fps"])
        table.append([row.resolution, row.runner, _fmt(old["fps"], "{:.2f}"), _fmt(row.fps, "{:.2f}"), _change(changes[0]),
                      _fmt(old.get("e2e_fps"), "{:.2f}"), _fmt(row.e2e_fps, "{:.2f}"), _change(changes[1])])
    summary = "{} of {} row(s) moved more than {:.0f} % against the earlier run".format(moved, len(table), 100 * DRIFT)
    if ratios:
        summary += "; the median row's FPS changed by {:+.1f} % (the host's drift between the runs)".format(
            100 * (float(np.median(ratios)) - 1))
    return table, summary


def _change(value):
    return _fmt(value, "{:+.1f}", 100) + (" moved" if abs(value) > DRIFT else "")


def _fmt(value, pattern="{:.1f}", scale=1.0):
    return "-" if value is None or value != value else pattern.format(value * scale)


TABLE_HEADERS = ["input", "runner", "n", "mean ms", "p50 ms", "p99 ms", "CV %", "FPS", "H2D p50 ms", "D2H p50 ms", "e2e p50 ms",
                 "e2e FPS", "mIoU %", "agree mIoU %", "pixel agree %", "FPS/W", "parity"]


def table_rows(rows):
    return [[r.resolution, r.runner + (" (copies in compute)" if r.copies_in_compute else ""),
             "{}{}".format(r.iterations, " (cap)" if r.capped else ""), _fmt(r.mean_ms),
             _fmt(r.p50_ms), _fmt(r.p99_ms), _fmt(r.cv, scale=100) + (" unstable" if r.unstable else ""), _fmt(r.fps, "{:.2f}"),
             _fmt(r.h2d_p50_ms, "{:.2f}"), _fmt(r.d2h_p50_ms, "{:.2f}"), _fmt(r.e2e_p50_ms), _fmt(r.e2e_fps, "{:.2f}"),
             _fmt(r.miou, "{:.2f}", 100), _fmt(r.agreement_miou, "{:.2f}", 100), _fmt(r.pixel_agreement, "{:.3f}", 100),
             _fmt(r.fps_per_watt, "{:.2f}"), r.verdict] for r in rows]


def markdown_table(rows, facts, settings):
    head = ("Host: {}; torch {}, onnxruntime {}, TensorRT {}. Model: {}. {}. Batch 1, {} interleaved round(s); FPS = 1000 / "
            "median compute ms; H2D/D2H are medians too; e2e = uint8 frame in, uint8 class map out; CV > {:.0f} % is marked "
            "unstable. Parity: each row against PyTorch FP32 on the CPU (the row marked {}) on {} frame(s) of {}.\n\n").format(
        host_label(facts), facts.get("torch"), facts.get("onnxruntime"), facts.get("tensorrt"), settings.get("checkpoint"),
        settings.get("date"), settings.get("rounds"), 100 * UNSTABLE_CV, REFERENCE, settings.get("parity_images"),
        settings.get("dataset"))
    notes = sorted({note for row in rows for note in row.parity_notes})
    head += "".join("Parity: {}.\n\n".format(note) for note in notes)
    head += "".join("{}: {}.\n\n".format(row.key, note) for row in rows for note in row.runner_notes)
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    return head + "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows(rows)]) + "\n"


def write_plots(rows, facts, settings, out):
    """fps_vs_resolution.png and fps_vs_miou.png, titled with what they show, the model, the host and the date."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pixels(size):
        return int(size.split("x")[0]) * int(size.split("x")[1])

    sizes, runners = sorted({r.resolution for r in rows}, key=pixels), sorted({r.runner for r in rows})
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(runners)}
    subtitle = "model {} | {} | {}".format(os.path.basename(str(settings.get("checkpoint"))), host_label(facts), settings["date"])
    fig, axis = plt.subplots(figsize=(9, 5), dpi=110)
    for runner in runners:
        mine = sorted((sizes.index(r.resolution), r) for r in rows if r.runner == runner)
        axis.plot([i for i, _ in mine], [r.fps for _, r in mine], "o-", color=colors[runner], label=runner)
        axis.plot([i for i, _ in mine], [r.e2e_fps for _, r in mine], "s--", color=colors[runner], alpha=0.5)
    axis.set_xticks(range(len(sizes)), ["{}\n{:.2g} Mpx".format(s, pixels(s) / 1e6) for s in sizes])
    axis.set(xlabel="input height x width", ylabel="frames per second (log scale)", yscale="log")
    _finish(plt, fig, axis, axis.yaxis, "SANet frames per second vs input size (batch 1; solid: compute, dashed: "
            "end-to-end)\n" + subtitle, os.path.join(out, "fps_vs_resolution.png"))
    labelled = settings.get("checkpoint") != "random-init" and any(r.miou is not None for r in rows)
    markers = dict(zip(sizes, "osD^v"))
    fig, axis = plt.subplots(figsize=(9, 5), dpi=110)
    for row in rows:
        quality = row.miou if labelled else row.agreement_miou
        if quality is not None:
            axis.scatter(row.fps, 100 * quality, s=50, color=colors[row.runner], marker=markers.get(row.resolution, "o"))
    axis.set(xlabel="frames per second, compute (log scale)", xscale="log",
             ylabel="mIoU vs labels (%)" if labelled else "agreement mIoU vs PyTorch FP32 (%)")
    handles = [plt.Line2D([], [], color=colors[n], marker="o", ls="", label=n) for n in runners]
    handles += [plt.Line2D([], [], color="grey", marker=markers.get(s, "o"), ls="", label=s) for s in sizes]
    what = "mIoU" if labelled else "agreement with PyTorch FP32 (untrained model or unlabelled data: not accuracy)"
    _finish(plt, fig, axis, axis.xaxis, "SANet {} vs speed\n{}".format(what, subtitle), os.path.join(out, "fps_vs_miou.png"),
            handles)
    return ["fps_vs_resolution.png", "fps_vs_miou.png"]


def _finish(plt, fig, axis, log_axis, title, path, handles=None):
    """Readable log ticks (1, 2, 5 per decade), legend outside the plot, title, atomic PNG."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    from .fileio import atomic_path

    log_axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    log_axis.set_major_formatter(FormatStrFormatter("%g"))
    log_axis.set_minor_formatter(FormatStrFormatter(""))
    axis.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

