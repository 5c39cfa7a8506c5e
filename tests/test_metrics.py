"""Metrics against hand-computed matrices and the official cityscapesScripts evaluator."""
import json
import math

import numpy as np
import pytest

from sanet.data import LABEL_TO_TRAIN, TRAIN_TO_LABEL, read_label, write_png
from sanet.metrics import ConfusionMatrix


def test_hand_computed_confusion_matrix():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    cm = ConfusionMatrix(4).update(pred, label)
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = cm.per_class_iou()
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(2 / 3) and iou[2] == pytest.approx(1 / 2)
    assert math.isnan(iou[3])  # absent from labels and predictions: reported, not averaged
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    rows = cm.summary(["road", "car", "bus", "absent"])["per_class_iou"]
    assert [row["class"] for row in rows] == ["road", "car", "bus", "absent"]  # class order, not alphabetical
    assert rows[0]["iou"] == pytest.approx(1 / 3) and rows[3]["iou"] is None


def test_summary_keeps_class_order_through_sorted_json(tmp_path):
    from sanet.fileio import write_json_atomic

    names = ["road", "sidewalk", "building", "bicycle"]
    cm = ConfusionMatrix(4).update(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]))
    write_json_atomic(tmp_path / "eval.json", cm.summary(names))
    assert [row["class"] for row in json.loads((tmp_path / "eval.json").read_text())["per_class_iou"]] == names


def test_split_is_accumulated_not_averaged_per_image():
    images = [(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])),  # image 1: the one class-1 pixel missed
              (np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))]  # image 2: all class 1, perfect
    cm = ConfusionMatrix(2)
    for prediction, label in images:
        cm.update(prediction, label)
    # One matrix over the split: class 0 TP 3 FP 1 -> 3/4; class 1 TP 4 FN 1 -> 4/5.
    assert cm.per_class_iou().tolist() == pytest.approx([3 / 4, 4 / 5])
    assert cm.miou() == pytest.approx((3 / 4 + 4 / 5) / 2)
    per_image = [ConfusionMatrix(2).update(p, label).miou() for p, label in images]
    assert per_image == pytest.approx([3 / 8, 1.0])  # a per-image mean would report 0.6875, not 0.775
    assert cm.miou() != pytest.approx(float(np.mean(per_image)))


def test_submission_mapping_round_trips():
    train_ids = np.arange(19, dtype=np.uint8)
    assert np.array_equal(LABEL_TO_TRAIN[TRAIN_TO_LABEL[train_ids]], train_ids)


def test_equals_official_cityscapes_evaluator(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    evaluator = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
                                    reason="cityscapesscripts not installed (pip install 'sanet[dev]')")
    rng = np.random.default_rng(0)
    ours, gt_files, pred_files = ConfusionMatrix(19), [], []
    valid_ids = np.array(sorted(set(range(34))))
    for index in range(3):
        label_ids = rng.choice(valid_ids, size=(64, 128)).astype(np.uint8)
        label_ids[:, :40] = 7 + index  # some large regions so IoUs are not all tiny
        train = LABEL_TO_TRAIN[label_ids]
        pred = np.where(rng.random(train.shape) < 0.7, train, rng.integers(0, 19, train.shape)).astype(np.uint8)
        pred[pred == 255] = 0
        pred[:, 120:] = 18 if index else 13  # class 16 never appears in predictions; 18 only sometimes
        stem = "city_{:06d}_000019".format(index)
        gt_files.append(str(tmp_path / (stem + "_gtFine_labelIds.png")))
        pred_files.append(str(tmp_path / "pred" / (stem + "_leftImg8bit.png")))
        write_png(gt_files[-1], label_ids)
        write_png(pred_files[-1], TRAIN_TO_LABEL[pred])
        ours.update(LABEL_TO_TRAIN[read_label(pred_files[-1])], train)
    args = evaluator.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    result = evaluator.evaluateImgLists(pred_files, gt_files, args)
    official = result["averageScoreClasses"]
    assert ours.miou() == pytest.approx(official, abs=1e-9)
    names = [label.name for label in evaluator.labels if not label.ignoreInEval]
    for name, value in zip(names, ours.per_class_iou()):
        reference = result["classScores"][name]
        assert (math.isnan(value) and math.isnan(reference)) or value == pytest.approx(reference, abs=1e-9)
