"""Training: learning happens, resume is exact, OHEM and weight-decay groups, torchrun, bad input."""
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import small_train_config

from sanet.checkpoints import load_model
from sanet.data import open_dataset
from sanet.errors import SanetError
from sanet.evaluate import evaluate
from sanet.model import build_model
from sanet.runners import TorchRunner
from sanet.train import OhemCrossEntropy, TrainConfig, Trainer, class_balance_weights, parameter_groups


def test_short_run_lowers_loss_and_raises_miou(trained, synth_small):
    trainer, history, best = trained
    assert history[-1]["loss"] < 0.9 * history[0]["loss"]
    val = open_dataset(str(synth_small), "cityscapes", "val")
    torch.manual_seed(0)
    untrained = evaluate(TorchRunner(build_model("sanet", 19, aux_head=False)), val, progress=False)["miou"]
    trained_miou = evaluate(TorchRunner(load_model(best)), val, progress=False)["miou"]
    assert trained_miou > untrained + 0.03
    assert trained_miou == pytest.approx(trainer.best_miou)
    assert (best.parent / "last.pt").is_file() and (best.parent / "train.log").is_file()


def test_resume_gives_same_weights_as_uninterrupted(synth_small, tmp_path):
    overrides = dict(epochs=2, batch_size=2, crop=[64, 128], val_every=1, val_limit=1, variant="sanet-tiny")
    straight = Trainer(small_train_config(synth_small, tmp_path / "a", **overrides))
    straight.fit()
    paused = Trainer(small_train_config(synth_small, tmp_path / "b", **overrides))
    paused.fit(until_epoch=1)
    resumed = Trainer(small_train_config(synth_small, tmp_path / "b", **overrides), resume=str(tmp_path / "b" / "last.pt"))
    assert resumed.start_epoch == 1
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_ohem_keeps_at_least_min_kept():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    logits = torch.zeros(1, 3, 8, 8)
    logits[:, 0] = 10.0  # every pixel confidently right: none is "hard"
    logits[0, 0, 0, :5] = -10.0  # five pixels wrong
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none").flatten()
    kept = OhemCrossEntropy(thresh=0.9, min_kept=20)(logits, labels)
    assert kept == pytest.approx(torch.topk(per_pixel, 20).values.mean().item())
    only_hard = OhemCrossEntropy(thresh=0.9, min_kept=2)(logits, labels)
    assert only_hard == pytest.approx(per_pixel[:5].mean().item())


def test_class_balance_weights_favour_rare_classes(synth_small):
    from sanet.data import open_dataset

    weights = class_balance_weights(open_dataset(str(synth_small), "cityscapes", "train"), 19)
    road, pole = weights[0], weights[5]  # road covers a large share of every scene, poles a few pixels
    assert pole > 5 * road and weights.max() <= 1 / math.log(1.02) + 1e-3 and weights.min() > 1.0
    labels = torch.tensor([[[0, 0, 0, 5]]])
    logits = torch.zeros(1, 19, 1, 4)  # uniform: every pixel has the same loss, ln 19
    weighted = OhemCrossEntropy(thresh=0.9, min_kept=4, class_weights=weights)(logits, labels)
    assert weighted == pytest.approx(math.log(19), rel=1e-5)  # equal losses: the weighted mean is unchanged
    logits[0, 5, 0, 3] = 5.0  # the pole pixel becomes easy; its large weight now lowers the mean a lot
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none").flatten()
    picked = torch.as_tensor(weights)[[0, 0, 0, 5]]
    expected = (per_pixel * picked).sum() / picked.sum()
    assert OhemCrossEntropy(thresh=0.9, min_kept=4, class_weights=weights)(logits, labels) == pytest.approx(float(expected))


def test_weight_decay_groups_exclude_1d_parameters():
    model = build_model("sanet", 19)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_torchrun_two_processes_gloo(synth_small, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "sanet.cli", "train", "--config", "configs/synthetic.yaml", "data={}".format(synth_small),
         "out={}".format(out), "epochs=1", "batch_size=2", "crop=[64,128]", "variant=sanet-tiny", "val_limit=1",
         "workers=0"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "weights identical on all 2 ranks" in log
    assert (out / "last.pt").is_file()


def test_config_errors(tmp_path, synth_small):
    with pytest.raises(SanetError, match="config not found"):
        TrainConfig.load(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(SanetError, match="does not parse"):
        TrainConfig.load(str(bad))
    with pytest.raises(SanetError, match="unknown config key.*epoch_count"):
        TrainConfig.load("configs/synthetic.yaml", ["epoch_count=3"])
    with pytest.raises(SanetError, match="dataset root not found"):
        Trainer(small_train_config(tmp_path / "missing", tmp_path / "o"))


def test_resume_from_other_variant_is_refused(trained, synth_small, tmp_path):
    _, _, best = trained
    last = best.parent / "last.pt"
    with pytest.raises(SanetError, match="cannot resume"):
        Trainer(small_train_config(synth_small, tmp_path / "x", variant="sanet-tiny"), resume=str(last))


def test_unwritable_output_dir(synth_small, tmp_path):
    locked = tmp_path / "locked"
    locked.write_text("a file, not a directory")
    with pytest.raises(SanetError, match="output directory"):
        Trainer(small_train_config(synth_small, locked / "run"))
