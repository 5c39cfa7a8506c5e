"""Confusion-matrix segmentation metrics, accumulated over a whole split (the Cityscapes protocol).

IoU_c = TP / (TP + FP + FN) from one confusion matrix over all pixels of the split, not a mean of
per-image scores; ignore-labelled pixels count nowhere; a class absent from both labels and
predictions has no IoU (NaN, printed as "absent") and is left out of the mean, as the official
cityscapesScripts evaluator does.
"""
import math

import numpy as np

from .constants import IGNORE_INDEX


class ConfusionMatrix:
    def __init__(self, num_classes, ignore_index=IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: label, cols: prediction
        self.invalid = np.zeros(num_classes, dtype=np.int64)  # per label: predictions outside 0..C-1

    def update(self, prediction, label):
        """Add one or more (…, H, W) predictions against labels of the same shape."""
        prediction, label = np.asarray(prediction).ravel(), np.asarray(label).ravel()
        if prediction.shape != label.shape:
            raise ValueError("prediction and label sizes differ: {} vs {}".format(prediction.size, label.size))
        keep = label != self.ignore_index
        label, prediction = label[keep].astype(np.int64), prediction[keep].astype(np.int64)
        # A prediction outside 0..C-1 can only be wrong: count it as a miss for its label (FN), never a hit.
        valid = (prediction >= 0) & (prediction < self.num_classes)
        n = self.num_classes
        self.matrix += np.bincount(label[valid] * n + prediction[valid], minlength=n * n).reshape(n, n)
        self.invalid += np.bincount(label[~valid], minlength=n)
        return self

    def per_class_iou(self):
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(axis=0) - tp
        fn = self.matrix.sum(axis=1) - tp + self.invalid
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def miou(self):
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if not np.all(np.isnan(iou)) else float("nan")

    def pixel_accuracy(self):
        total = self.matrix.sum() + int(self.invalid.sum())
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")

    def summary(self, class_names):
        """JSON-ready dict: mIoU, pixel accuracy and per-class IoU (None for absent classes).

        ``per_class_iou`` is a list of {"class", "iou"} in class-id order: a mapping would be re-sorted
        alphabetically by JSON writers that sort keys.
        """
        iou = self.per_class_iou()
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": [{"class": name, "iou": None if math.isnan(v) else float(v)} for name, v in zip(class_names, iou)],
            "pixels": int(self.matrix.sum()),
        }


def format_iou(value):
    return "absent" if value is None or (isinstance(value, float) and math.isnan(value)) else "{:.2f}".format(100 * value)
