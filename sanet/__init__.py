"""SANet deployment toolkit: PyTorch model -> ONNX -> TensorRT engine, with evaluation, parity and benchmarks.

Modules in pipeline order (help(sanet.MODULE) for each; import sanet needs only torch and numpy):
  model                        SANet / SANet-Tiny network, ModelConfig, build_model()
  checkpoints                  load_model(path) -> SANet, save_checkpoint(), shipped_checkpoint("camvid"|"synth")
  data, synth, metrics         datasets (open_dataset), generated street scenes, confusion-matrix mIoU
  train                        training with the paper's recipe on CPU, GPU or DDP, resumable
  qat                          quantization-aware training (NVIDIA Model Optimizer) and its Q/DQ ONNX
  evaluate                     evaluate(runner, dataset) -> dict of mIoU, pixel accuracy, per-class IoU
  export                       ONNX export with sanet metadata (ExportConfig, export_onnx)
  calibration                  INT8 calibration crops and the Q/DQ and classic quantization routes
  numerics                     FP16/INT8 engine numerics emulated on the CPU (fp16_range_audit, to_fp16)
  routes                       which TensorRT build route an engine takes per release (route_for)
  engines                      TensorRT engine build, provenance sidecars, TrtRunner, Torch2trtRunner
  trtlint                      will an ONNX graph parse on a given TensorRT release?
  trtmemory                    device buffers for TensorRT I/O
  torch2trt_route              the reference repo's torch2trt speed method: convert() with our converters
  runners                      the runner contract: TorchRunner, OrtRunner, OpenVinoRunner (predict, infer, info)
  parity                       compare(reference, candidate, dataset) -> ParityResult, judged by a Budget
  pipeline                     Pipeline: checkpoint -> ONNX -> Q/DQ -> engine, each artifact named and cached
  bench, benchplan, benchreport, power   sanet-bench: rows, plan, reports; board power and clocks
  infer                        sanet-infer: masks and overlays for images, videos, cameras and streams
  gpucheck                     sanet-gpucheck: every CUDA path once on this machine, one report
  args, cli                    command-line argument groups and the console entry points
  constants, errors, fileio    shared facts, SanetError, atomic writes and hashes

Console commands (each has --help; docs/cli.md lists every flag): sanet-info, sanet-synth, sanet-train,
sanet-eval, sanet-export, sanet-parity, sanet-bench, sanet-infer, sanet-gpucheck.

Library use (CPU; CamVid root with val/ and valannot/; the ONNX is written to exports/):
    from sanet.checkpoints import load_model, shipped_checkpoint
    from sanet.data import open_dataset
    from sanet.evaluate import evaluate
    from sanet.parity import compare
    from sanet.pipeline import Pipeline
    from sanet.runners import OrtRunner, TorchRunner
    model = load_model(shipped_checkpoint("camvid"))
    val = open_dataset("data/camvid", "camvid", "val")
    with TorchRunner(model) as reference, OrtRunner(Pipeline(model).onnx((360, 480))) as ort:
        print(evaluate(ort, val)["miou"], compare(reference, ort, val).passed)
"""
from .errors import SanetError
from .model import ModelConfig, SANet, build_model

__version__ = "0.1.0"
__all__ = ["SANet", "ModelConfig", "SanetError", "build_model", "__version__"]
