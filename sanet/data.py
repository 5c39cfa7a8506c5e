"""Datasets (Cityscapes, CamVid, image folders), image I/O and the paper's training augmentation.

Datasets return raw samples, ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) trainIds or None, name)``;
the transforms turn them into network tensors. Evaluation and calibration use the raw form, so every
runner (PyTorch, ONNX Runtime, TensorRT) receives the same pixels.
"""
import glob
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from .constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .errors import SanetError, require
from .model import CAMVID_CLASSES, CITYSCAPES_CLASSES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Official Cityscapes labelId -> trainId table (cityscapesScripts helpers/labels.py); all others -> 255.
CITYSCAPES_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                          25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAIN.items():
    LABEL_TO_TRAIN[_label_id] = _train_id
TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)  # for test-server submissions; ignore -> 0 (unlabeled)
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAIN.items():
    TRAIN_TO_LABEL[_train_id] = _label_id
CAMVID_VOID = 11

CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)
CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)], dtype=np.uint8)


def import_cv2():
    return require("cv2", "pip install opencv-python-headless (or 'sanet[data]')")


def read_image(path):
    """Read an image as uint8 RGB (H, W, 3). Grayscale, palette and RGBA files are converted to RGB."""
    cv2 = import_cv2()
    if not os.path.isfile(path):
        raise SanetError("image not found: {}".format(path))
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)  # gray/palette/RGBA -> 3-channel BGR
    if image is None or image.size == 0:
        raise SanetError("cannot decode image {}: the file is corrupt, truncated or not an image".format(path))
    return np.ascontiguousarray(image[:, :, ::-1])


def read_label(path):
    """Read a single-channel label PNG as (H, W) uint8."""
    cv2 = import_cv2()
    if not os.path.isfile(path):
        raise SanetError("label not found: {}".format(path))
    label = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise SanetError("cannot decode label {}: the file is corrupt or truncated".format(path))
    if label.ndim != 2 or label.dtype != np.uint8:
        raise SanetError("label {} must be a single-channel 8-bit PNG of class ids, got shape {} {}".format(
            path, label.shape, label.dtype))
    return label


def write_png(path, array):
    from .fileio import atomic_path

    cv2 = import_cv2()
    array = array[:, :, ::-1] if array.ndim == 3 else array  # RGB -> BGR for OpenCV
    with atomic_path(path) as tmp:
        encoded = tmp + ".png"  # OpenCV picks the encoder from the extension
        try:
            if not cv2.imwrite(encoded, np.ascontiguousarray(array)):
                raise SanetError("cannot write {}".format(path))
            os.replace(encoded, tmp)
        finally:
            if os.path.exists(encoded):
                os.remove(encoded)


def is_label_folder(name):
    """Folders of label maps, not camera frames: Cityscapes gtFine/gtCoarse, CamVid *annot, labels, label*, gt*."""
    name = name.lower()
    return name.startswith(("gt", "label")) or name.endswith("annot")


def find_images(root, extensions=IMAGE_EXTENSIONS):
    """Every file under ``root`` (recursively, sorted) whose name ends in ``extensions``, skipping label folders
    (gtFine, *annot, labels, gt*) and hidden entries (temporary files of interrupted writes among them)."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and not is_label_folder(d))
        found.extend(os.path.join(folder, n) for n in names if not n.startswith(".") and n.lower().endswith(extensions))
    return sorted(found)


@dataclass
class Sample:
    image: str
    label: Optional[str]
    label_kind: str  # "labelIds" (Cityscapes ids, mapped), "trainIds" (as is), "camvid", or "none"


class SegmentationDataset(torch.utils.data.Dataset):
    """A list of image/label files; yields raw samples, or the output of ``transform`` when given."""

    def __init__(self, samples: List[Sample], num_classes, class_names, palette, transform=None, unlabelled_skipped=0):
        if not samples:
            raise SanetError("no samples to load")
        self.samples, self.num_classes = samples, num_classes
        self.unlabelled_skipped = unlabelled_skipped  # frames of the split left out because they have no label
        self.class_names, self.palette = list(class_names), palette
        self.transform = transform
        self.epoch = 0

    def __len__(self):
        return len(self.samples)

    @property
    def has_labels(self):
        return all(sample.label is not None for sample in self.samples)

    def set_epoch(self, epoch):
        """Augmentation randomness depends on (seed, epoch, index): reproducible with any worker count."""
        self.epoch = epoch

    def load(self, index):
        sample = self.samples[index]
        image = read_image(sample.image)
        label = None if sample.label is None else self._train_ids(read_label(sample.label), sample)
        if label is not None and label.shape != image.shape[:2]:
            raise SanetError("label {} is {}x{} but its image is {}x{}: they must match".format(
                sample.label, label.shape[0], label.shape[1], image.shape[0], image.shape[1]))
        return image, label, os.path.basename(sample.image)

    def _train_ids(self, label, sample):
        if sample.label_kind == "labelIds":
            if label.max() > 33:
                raise SanetError("{} has label ids above 33: not a Cityscapes labelIds file".format(sample.label))
            return LABEL_TO_TRAIN[label]
        if sample.label_kind == "camvid":
            if label.max() > CAMVID_VOID:
                raise SanetError("{} has values above 11: CamVid labels are 0-10 with 11 = void".format(sample.label))
            return np.where(label == CAMVID_VOID, IGNORE_INDEX, label).astype(np.uint8)
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            raise SanetError("{} has trainIds outside 0-{} and 255 (e.g. {}): wrong label file or class count".format(
                sample.label, self.num_classes - 1, int(label[bad][0])))
        return label

    def __getitem__(self, index):
        image, label, name = self.load(index)
        if self.transform is None:
            return image, label, name
        rng = np.random.default_rng([getattr(self.transform, "seed", 0), self.epoch, index])
        return self.transform(image, label, rng)


def _need_dir(path, what):
    if not os.path.isdir(path):
        raise SanetError("{} not found: {} (check --data and --split)".format(what, path))


def cityscapes_samples(root, split="val", require_labels=True):
    """Pairs in the official layout; labelIds preferred, labelTrainIds accepted. Unlabelled frames are
    skipped when ``require_labels`` (evaluation, training; ``open_dataset`` counts them) and kept for inference."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    _need_dir(image_dir, "Cityscapes split")
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise SanetError("no *_leftImg8bit.png images under {}".format(image_dir))
    samples = []
    for image in images:
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        base = os.path.join(root, "gtFine", split, city, stem + "_gtFine_")
        for suffix, kind in (("labelIds.png", "labelIds"), ("labelTrainIds.png", "trainIds")):
            if os.path.isfile(base + suffix):
                samples.append(Sample(image, base + suffix, kind))
                break
        else:
            samples.append(Sample(image, None, "none"))
    if require_labels:
        samples = [sample for sample in samples if sample.label is not None]
    if not samples:
        raise SanetError("no labelled images under {}: each needs gtFine/{}/<city>/<name>_gtFine_labelIds.png".format(
            image_dir, split))
    return samples


def camvid_samples(root, split="val", require_labels=True):
    image_dir, label_dir = os.path.join(root, split), os.path.join(root, split + "annot")
    _need_dir(image_dir, "CamVid split")
    images = sorted(p for p in glob.glob(os.path.join(image_dir, "*")) if p.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise SanetError("no images under {}".format(image_dir))
    samples = []
    for image in images:
        label = os.path.join(label_dir, os.path.basename(image))
        if os.path.isfile(label):
            samples.append(Sample(image, label, "camvid"))
        elif require_labels:
            raise SanetError("image {} has no label {}: add it or remove the image".format(image, label))
        else:
            samples.append(Sample(image, None, "none"))
    return samples


def folder_samples(pattern_or_dir, recursive=True):
    """Images in a folder (recursively) or matching a glob; no labels."""
    if os.path.isdir(pattern_or_dir) and recursive:
        images = find_images(pattern_or_dir)
    else:
        pattern = os.path.join(pattern_or_dir, "*") if os.path.isdir(pattern_or_dir) else pattern_or_dir
        images = sorted(p for p in glob.glob(pattern) if p.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise SanetError("no images found at {} (expected {} files)".format(pattern_or_dir, "/".join(IMAGE_EXTENSIONS)))
    return [Sample(image, None, "none") for image in images]


def open_dataset(root, dataset="cityscapes", split="val", transform=None, require_labels=True):
    """The dataset named on the command line: cityscapes | camvid | folder."""
    if not os.path.exists(root):
        raise SanetError("dataset root not found: {}".format(root))
    if dataset == "cityscapes":
        samples = cityscapes_samples(root, split, require_labels)
        skipped = len(cityscapes_samples(root, split, require_labels=False)) - len(samples)
        return SegmentationDataset(samples, 19, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform, skipped)
    if dataset == "camvid":
        samples = camvid_samples(root, split, require_labels)
        return SegmentationDataset(samples, 11, CAMVID_CLASSES, CAMVID_PALETTE, transform)
    if dataset == "folder":
        return SegmentationDataset(folder_samples(root), 19, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform)
    raise SanetError("unknown dataset {!r}: use cityscapes, camvid or folder".format(dataset))


# ----------------------------------------------------------------------------------------------
# Transforms


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) normalised tensor, the runners' preprocessing."""
    return torch.from_numpy(Preprocess(tuple(mean), tuple(std)).normalize(image))


def colour_jitter(image, strength, rng):
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], in random order."""
    image = image.astype(np.float32)
    for op in rng.permutation(3):
        factor = rng.uniform(1 - strength, 1 + strength)
        if op == 0:
            image = image * factor
        elif op == 1:
            image = (image - image.mean()) * factor + image.mean()
        else:
            gray = image.mean(axis=2, keepdims=True)
            image = (image - gray) * factor + gray
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class TrainTransform:
    """Paper augmentation: random scale, crop (max single-class ratio), flip, colour jitter; image and label
    always get the same geometry (nearest for labels)."""

    crop: Tuple[int, int] = (1024, 1024)
    scale_range: Tuple[float, float] = (0.5, 2.0)
    max_class_ratio: float = 0.75
    flip: bool = True
    jitter: float = 0.5
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    seed: int = 0

    def __call__(self, image, label, rng):
        cv2 = import_cv2()
        scale = rng.uniform(*self.scale_range)
        size = (max(1, int(image.shape[1] * scale + 0.5)), max(1, int(image.shape[0] * scale + 0.5)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        image, label = self._pad(image, label)
        image, label = self._crop(image, label, rng)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.jitter:
            image = colour_jitter(image, self.jitter, rng)
        return normalize(image, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

    def _pad(self, image, label):
        pad_h, pad_w = max(self.crop[0] - image.shape[0], 0), max(self.crop[1] - image.shape[1], 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        return image, label

    def _crop(self, image, label, rng, attempts=10):
        height, width = self.crop
        for _ in range(attempts):
            top = int(rng.integers(0, image.shape[0] - height + 1))
            left = int(rng.integers(0, image.shape[1] - width + 1))
            window = label[top:top + height, left:left + width]
            counts = np.bincount(window[window != IGNORE_INDEX].ravel(), minlength=1)
            if counts.sum() == 0 or counts.max() / counts.sum() < self.max_class_ratio:
                break
        return image[top:top + height, left:left + width], window
