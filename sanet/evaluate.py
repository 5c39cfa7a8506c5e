"""Single- or multi-scale evaluation of any runner over a labelled split, the Cityscapes way.

Images are resized to the runner's input size (or scaled and snapped to multiples of 8 for runners
that take any size), logits are resized back to the label's size and summed over scales and flips,
and one confusion matrix accumulates the whole split.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from .data import TRAIN_TO_LABEL, import_cv2, write_png
from .errors import SanetError
from .metrics import ConfusionMatrix
from .runners import activated


def progress_bar(iterable, total, desc, enabled=True):
    """tqdm on stderr when installed and wanted; the bare iterable otherwise."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _snap(value):
    return max(32, int(round(value / 8.0)) * 8)


def input_sizes(runner, image_hw, scales, size=None):
    """Network input sizes for one image: the runner's fixed size, ``size``, or the image scaled by each factor."""
    fixed = runner.info.input_size or size
    if fixed is not None:
        if len(scales) > 1 or scales[0] != 1.0:
            raise SanetError("multi-scale evaluation needs a runner that accepts any size (PyTorch without --size)")
        return [tuple(fixed)]
    return [(_snap(image_hw[0] * s), _snap(image_hw[1] * s)) for s in scales]


def predict_full(runner, image, label_hw, scales=(1.0,), flip=False, size=None):
    """(H, W) class map for one uint8 RGB image, at the label's resolution; logits summed over scales/flips."""
    cv2 = import_cv2()
    if flip and runner.info.output == "argmax":
        raise SanetError("flip evaluation needs logits: use a runner exported with --output logits")
    total, classes = None, None
    for height, width in input_sizes(runner, image.shape[:2], scales, size):
        resized = image if image.shape[:2] == (height, width) else cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        batch = [resized, resized[:, ::-1]] if flip else [resized]
        for index, view in enumerate(batch):
            classes, logits = runner.predict(np.ascontiguousarray(view)[None])
            if logits is None:  # argmax-only runner, single view: nearest-resize the class map
                return cv2.resize(classes[0].astype(np.uint8), label_hw[::-1], interpolation=cv2.INTER_NEAREST).astype(np.int64)
            logits = torch.from_numpy(np.ascontiguousarray(logits[:, :, :, ::-1] if index else logits))
            if tuple(logits.shape[-2:]) != tuple(label_hw):
                logits = F.interpolate(logits, size=tuple(label_hw), mode="bilinear", align_corners=False)
            probs = torch.softmax(logits, dim=1)[0]
            total = probs if total is None else total + probs
    return total.argmax(dim=0).numpy()


def frames_message(result):
    """One line saying which frames the numbers cover, e.g. '2 of 2 labelled frames evaluated; 5 unlabelled skipped'."""
    text = "{} of {} labelled frames evaluated".format(result["images"], result["labelled_frames"])
    if result["images"] < result["labelled_frames"]:
        text += " (--limit)"
    if result["unlabelled_skipped"]:
        text += "; {} frames without labels skipped (they have no gtFine *_labelIds.png)".format(result["unlabelled_skipped"])
    return text


def evaluate(runner, dataset, scales=(1.0,), flip=False, size=None, submit_dir=None, limit=None, progress=True, report=None):
    """Evaluate ``runner`` on ``dataset`` (raw samples with labels); returns the metrics summary dict.

    Args:
        runner: any runner (sanet.runners contract) with the dataset's class count; activated for the call unless
            the caller already did, and closed again only then.
        dataset: a labelled sanet.data.SegmentationDataset (``open_dataset(root, "camvid", "val")``).
        scales, flip: multi-scale / flipped inference (logits summed at the label's size; needs a runner taking any
            size, and logits for flip). size: (H, W) every frame is resized to for a runner taking any size.
        submit_dir: also write each prediction there as a Cityscapes labelIds PNG (Cityscapes datasets only).
        limit: the first ``limit`` frames.
        progress: a tqdm bar on stderr. report: callable receiving one line on what the numbers cover.
    Returns:
        dict (JSON-ready): ``miou`` and ``pixel_accuracy`` (fractions 0..1), ``per_class_iou`` (list of {"class",
        "iou"} in class-id order, iou None for a class absent from labels and predictions), ``pixels`` (labelled pixels
        counted), ``images`` (frames evaluated), ``labelled_frames`` and ``unlabelled_skipped`` (frames of the split
        without labels), ``runner`` (info.label), ``scales``, ``flip``.
    """
    if not dataset.has_labels:
        raise SanetError("evaluation needs labels for every image; unlabelled frames are for inference only")
    if runner.info.num_classes != dataset.num_classes:
        raise SanetError("model has {} classes but the dataset has {}: use a matching checkpoint".format(
            runner.info.num_classes, dataset.num_classes))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(dataset.num_classes)
    with activated(runner):
        for index in progress_bar(range(count), count, "eval " + runner.info.label, progress):
            image, label, name = dataset.load(index)
            prediction = predict_full(runner, image, label.shape, scales, flip, size)
            matrix.update(prediction, label)
            if submit_dir:
                write_png(os.path.join(submit_dir, name), TRAIN_TO_LABEL[prediction.astype(np.uint8)])
    result = matrix.summary(dataset.class_names)
    result.update({"images": count, "labelled_frames": len(dataset),
                   "unlabelled_skipped": int(getattr(dataset, "unlabelled_skipped", 0)),
                   "runner": runner.info.label, "scales": list(scales), "flip": flip})
    if report is not None:
        report(frames_message(result))
    return result
