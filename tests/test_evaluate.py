"""sanet-eval end to end on generated scenes, including submission files and one-line errors."""
import json

import numpy as np
import pytest

from sanet.checkpoints import save_checkpoint
from sanet.data import LABEL_TO_TRAIN, open_dataset, read_label
from sanet.evaluate import evaluate
from sanet.model import CITYSCAPES_CLASSES, build_model
from sanet.runners import TorchRunner
from sanet.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    generate_dataset(str(root), SynthConfig(64, 128, train=0, val=2, seed=2))
    ckpt = root / "tiny.safetensors"
    save_checkpoint(ckpt, build_model("sanet-tiny", 19, aux_head=False))
    return root, ckpt


def test_eval_writes_json_and_submission(small_setup, tmp_path, sanet_cli):
    root, ckpt = small_setup
    out = tmp_path / "r.json"
    result = sanet_cli("eval", str(ckpt), "--data", str(root), "--json", str(out), "--submit", str(tmp_path / "sub"),
                       "--no-progress", "--flip")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["images"] == 2 and 0.0 <= data["miou"] <= 1.0
    assert [row["class"] for row in data["per_class_iou"]] == list(CITYSCAPES_CLASSES)  # class order survives the JSON
    assert "mIoU" in result.stdout
    written = sorted((tmp_path / "sub").glob("*_leftImg8bit.png"))
    assert len(written) == 2
    label_ids = read_label(str(written[0]))
    assert set(np.unique(label_ids)) <= set(range(34))
    assert set(np.unique(LABEL_TO_TRAIN[label_ids])) <= set(range(19))


def test_eval_counts_labelled_and_skipped_frames(tmp_path):
    root = tmp_path / "partly_labelled"
    generate_dataset(str(root), SynthConfig(64, 128, train=0, val=3, seed=5))
    unlabelled = sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))[1]
    unlabelled.unlink()
    dataset = open_dataset(str(root), "cityscapes", "val")
    assert len(dataset) == 2 and dataset.unlabelled_skipped == 1
    messages = []
    runner = TorchRunner(build_model("sanet-tiny", 19, aux_head=False))
    result = evaluate(runner, dataset, progress=False, report=messages.append)
    assert (result["images"], result["labelled_frames"], result["unlabelled_skipped"]) == (2, 2, 1)
    assert messages == ["2 of 2 labelled frames evaluated; 1 frames without labels skipped "
                        "(they have no gtFine *_labelIds.png)"]
    limited = evaluate(runner, dataset, limit=1, progress=False, report=messages.append)
    assert limited["images"] == 1 and messages[-1].startswith("1 of 2 labelled frames evaluated (--limit)")
    assert [row["class"] for row in result["per_class_iou"]] == list(CITYSCAPES_CLASSES)


@pytest.mark.parametrize("argv,message", [
    (["--data", "{root}/missing"], "dataset root not found"),
    (["--data", "{root}", "--split", "test"], "Cityscapes split not found"),
    (["--data", "{root}", "--dataset", "camvid"], "CamVid split not found"),
])
def test_eval_bad_input_is_one_line(small_setup, argv, message, sanet_cli):
    root, ckpt = small_setup
    result = sanet_cli("eval", str(ckpt), *[a.format(root=root) for a in argv])
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_eval_unknown_flag_exits_nonzero(small_setup, sanet_cli):
    root, ckpt = small_setup
    result = sanet_cli("eval", str(ckpt), "--data", str(root), "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
