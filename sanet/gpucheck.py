"""sanet-gpucheck: run every CUDA path of the toolkit once on this machine and write one report.

Paths: PyTorch CUDA fp32 and fp16, channels_last, CUDA graphs; the bench's CUDA rows at the three
benchmark resolutions (PyTorch CUDA, ONNX Runtime CUDA / TensorRT providers and TensorRT engines where
installed), each timed under the bench protocol and checked for parity against PyTorch FP32 on the CPU.
A path that raises is recorded as FAIL with its one-line error and the next path runs. Writes
``gpucheck.json`` and ``gpucheck.md``; exits 1 when a path failed, or at once (one line) without CUDA.

The full check builds FP16 and calibrated INT8 engines (TensorRT and the ONNX Runtime TensorRT provider) at three
resolutions: over an hour on a Jetson AGX Xavier. ``--quick`` checks every path once at 512x1024 in FP16 only (no INT8,
so no calibration; two FP16 engine builds: TensorRT's and the TensorRT provider's) with few iterations: minutes.
"""
import argparse
import os
import sys
import time
import traceback
from dataclasses import asdict

from . import bench, benchreport
from .constants import BENCH_RESOLUTIONS
from .errors import SanetError

# PyTorch variants beyond the bench's own CUDA fp32/fp16 rows: (label, TorchRunner keyword arguments)
TORCH_VARIANTS = (("fp16 channels_last", {"precision": "fp16", "channels_last": True}),
                  ("fp32 CUDA graph", {"precision": "fp32", "cuda_graph": True}),
                  ("fp16 CUDA graph", {"precision": "fp16", "cuda_graph": True}),
                  ("fp16 channels_last CUDA graph", {"precision": "fp16", "channels_last": True, "cuda_graph": True}))


def require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise SanetError("no CUDA device: torch.cuda.is_available() is False (run sanet-gpucheck on a machine with an NVIDIA "
                         "GPU, its driver and a CUDA build of torch)")


def check_config(out, quick=False):
    """The bench settings of the check (GPU rows only, one round): full, or ``quick`` (one resolution, FP16 only, no
    INT8 calibration, 10 iterations per row)."""
    if quick:
        return bench.BenchConfig(resolutions=[BENCH_RESOLUTIONS[0]], precisions=("fp16",), iterations=10, rounds=1,
                                 out=os.path.join(out, "bench"), cpu_rows=False)
    return bench.BenchConfig(resolutions=list(BENCH_RESOLUTIONS), rounds=1, out=os.path.join(out, "bench"), cpu_rows=False)


def torch_variant_rows(model, resolution, config, dataset, report):
    """One bench row per PyTorch CUDA variant at ``resolution`` in the config's precisions; a variant that raises
    becomes a FAIL row."""
    import numpy as np

    from .parity import MemoRunner
    from .runners import TorchRunner

    reference, rows = MemoRunner(TorchRunner(model, "cpu", "fp32")), []
    bench.fill_reference(reference, dataset, resolution, config.parity_images)
    frame = np.random.default_rng(0).integers(0, 256, size=(1,) + tuple(resolution) + (3,), dtype=np.uint8)
    for label, options in TORCH_VARIANTS:
        if options["precision"] not in config.precisions:
            continue
        row = benchreport.Row("{}x{}".format(*resolution), "pytorch-cuda-" + label.replace(" ", "-"), "pytorch", "cuda",
                              options["precision"])
        report("pytorch cuda {} at {} ...".format(label, row.resolution))
        try:
            with TorchRunner(model, "cuda", **options) as runner:
                samples, row.copies_in_compute, _ = bench.time_visit(runner, frame, config)
                bench.check_parity(row, runner, reference, dataset, resolution, config)
            bench.summarize(row, samples, [samples])
        except Exception as exc:  # recorded, so one broken path does not hide the others
            row.verdict, row.failures = "FAIL", [bench.failure_line(exc)]
        rows.append(row)
    return rows


def run_check(out, checkpoint=None, report=print, quick=False):
    """Every CUDA path (``quick``: see check_config); writes ``out``/gpucheck.json and gpucheck.md and returns (rows,
    skipped)."""
    from .fileio import write_json_atomic, write_text_atomic

    require_cuda()
    model, name = bench.resolve_model(checkpoint, report=report)
    config = check_config(out, quick)
    root, dataset = bench.generated_scenes(out, config)
    config.calib = None if quick else root  # quick: no INT8 rows, so nothing to calibrate
    rows = torch_variant_rows(model, BENCH_RESOLUTIONS[0], config, dataset, report)
    try:
        bench_rows, skipped = bench.run_bench(model, config, dataset, report=report)
        rows += bench_rows
    except Exception as exc:
        skipped = ["bench rows: " + bench.failure_line(exc)]
        report(traceback.format_exc())
    facts = benchreport.host_facts()
    settings = {"checkpoint": name, "rounds": config.rounds, "date": time.strftime("%Y-%m-%d %H:%M"), "quick": quick,
                "parity_images": config.parity_images, "dataset": "synthetic"}
    write_json_atomic(os.path.join(out, "gpucheck.json"),
                      {"host": facts, "settings": settings, "skipped": skipped, "rows": [asdict(r) for r in rows]})
    failed = [r for r in rows if r.verdict == "FAIL"]
    summary = "{} path(s) run, {} failed on {}.\n\n".format(len(rows), len(failed), benchreport.host_label(facts))
    notes = "".join("\n- skipped: {}".format(s) for s in skipped) + "".join(
        "\n- FAIL {} at {}: {}".format(r.runner, r.resolution, "; ".join(r.failures)) for r in failed)
    table = benchreport.markdown_table(rows, facts, settings)
    write_text_atomic(os.path.join(out, "gpucheck.md"), "# sanet-gpucheck\n\n" + summary + table + notes + "\n")
    return rows, skipped


def parser():
    """The command line of ``sanet-gpucheck`` (also read by the documentation test and the CLI reference)."""
    result = argparse.ArgumentParser(prog="sanet-gpucheck", description=__doc__.splitlines()[0])
    result.add_argument("--checkpoint", help="checkpoint to run (default: the shipped model, else random init)")
    result.add_argument("-o", "--out", default="results/gpucheck", help="report folder (default %(default)s)")
    result.add_argument("--quick", action="store_true", help="one resolution (512x1024), FP16 only, no INT8 calibration, "
                        "10 iterations per path: minutes on a Xavier (the full check takes over an hour there)")
    return result


def main(argv=None):
    """Entry point of ``sanet-gpucheck``; a user-fixable problem is one line on stderr and exit status 1."""
    args = parser().parse_args(argv)
    try:
        rows, _ = run_check(args.out, args.checkpoint, report=lambda message: print(message, flush=True), quick=args.quick)
    except SanetError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    print("report: {}".format(os.path.join(args.out, "gpucheck.md")))
    return 1 if any(r.verdict == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
