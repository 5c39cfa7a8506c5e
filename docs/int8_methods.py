"""Compare Q/DQ INT8 calibration methods (and the auto-fallback) against PyTorch FP32 on a set of frames.

    python docs/int8_methods.py CHECKPOINT H W CALIB_ROOT CROPS EVAL_ROOT SPLIT [minmax,entropy,percentile,fallback97]

The README's calibration-method table was made with
``python docs/int8_methods.py sanet/weights/sanet_synth.safetensors 256 512 data/synth 16 ../shared/data/real/cityscapes val``.
"""
import sys
import tempfile
import time
import warnings

from sanet.calibration import CropConfig, QuantizeConfig, plan_crops, quantize_qdq, quantize_with_fallback
from sanet.checkpoints import load_model
from sanet.data import open_dataset
from sanet.export import ExportConfig, export_onnx
from sanet.parity import Budget, MemoRunner, compare
from sanet.runners import OrtRunner, TorchRunner


def main(argv):
    checkpoint, height, width, calib, crops, root, split = argv[0], int(argv[1]), int(argv[2]), argv[3], int(argv[4]), argv[5], argv[6]
    methods = argv[7].split(",") if len(argv) > 7 else ["minmax", "entropy", "percentile", "fallback97"]
    warnings.simplefilter("ignore")  # few calibration images is expected here
    model = load_model(checkpoint)
    work = tempfile.mkdtemp(prefix="int8-methods-")
    source = "{}/fp32.onnx".format(work)
    export_onnx(model, source, ExportConfig(height, width))
    manifest = plan_crops(calib, CropConfig(height, width, count=crops))
    frames = open_dataset(root, "cityscapes", split, require_labels=False)  # agreement needs no labels
    reference = MemoRunner(TorchRunner(model))  # PyTorch FP32 class maps computed once, reused for every method
    for method in methods:
        started = time.perf_counter()
        if method == "fallback97":
            result, moved = quantize_with_fallback(source, "{}/auto.onnx".format(work), manifest, QuantizeConfig(), reference,
                                                   frames, budget=Budget(min_pixel_agreement=0.97), cache_dir=work)
            label = "auto-fallback (minmax, >= 97 % pixel agreement), float groups: {}".format(", ".join(moved) or "none")
        else:
            out = "{}/{}.onnx".format(work, method)
            quantize_qdq(source, out, manifest, QuantizeConfig(method=method), cache_dir=work)
            with OrtRunner(out) as candidate:
                result = compare(reference, candidate, frames, progress=False)
            label = method
        print("{}: pixel agreement {:.2%}, agreement mIoU {:.2%}, {:.0f} s".format(
            label, result.pixel_agreement, result.agreement_miou, time.perf_counter() - started), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
