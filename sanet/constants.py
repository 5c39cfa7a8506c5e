"""Facts shared by every stage: label conventions, precisions, benchmark resolutions, and the one
preprocessing spec (mean/std/layout) that data loading, runners, export and calibration all apply.

Plain Python and numpy only, so every module (and the CLI's help texts) can import it cheaply.
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np

IGNORE_INDEX = 255  # label value excluded from losses and metrics (Cityscapes trainId convention)
PRECISIONS = ("fp32", "fp16", "int8")
BENCH_RESOLUTIONS = ((512, 1024), (768, 1536), (1024, 2048))  # (H, W) of the paper's speed table
INPUT_LAYOUTS = ("float-nchw", "uint8-nhwc")
# TensorRT's calibrator on the classic INT8 route (8.5, Xavier) when --calib-method is not given: min-max, not
# entropy (TensorRT's own default), because entropy clips sparse tensors. Measured by emulation on real CamVid val
# (docs/int8.md, docs/ptq_table.py): entropy -2.1 pt mIoU / 94.6 % pixel agreement, min-max within 0.1 pt / 99 %.
CLASSIC_CALIBRATOR = "minmax"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_group_prefix(group):
    """'sff1' or 'layer4.0' -> the node/layer name prefix the classic ONNX exporter gives that module."""
    return "/model/{}/".format(group.replace(".", "/"))


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB -> network input: (x / 255 - mean) / std per channel, in ``layout``.

    ``float-nchw``: the host normalises and feeds float32 (B, 3, H, W);
    ``uint8-nhwc``: the host feeds the raw uint8 (B, H, W, 3) frame and the graph normalises.
    """

    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    layout: str = "float-nchw"

    @property
    def scale(self):
        """(mean * 255, std * 255) as float32 (3,) arrays: normalisation applied to 0..255 values."""
        return np.asarray(self.mean, np.float32) * 255.0, np.asarray(self.std, np.float32) * 255.0

    def normalize(self, images):
        """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) normalised; a single image or a batch."""
        mean, std = self.scale
        array = (np.asarray(images).astype(np.float32) - mean) / std
        return np.ascontiguousarray(np.moveaxis(array, -1, -3))

    def to_input(self, images):
        """uint8 RGB (B, H, W, 3) -> the array this layout feeds the network."""
        if self.layout == "uint8-nhwc":
            return np.ascontiguousarray(images)
        return self.normalize(images)
