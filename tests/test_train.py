"""Training: learning happens, resume is exact, OHEM and weight-decay groups, torchrun, bad input."""
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, small_train_config

from sanet.checkpoints import load_model, read_checkpoint
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


@pytest.fixture(scope="module")
def synth_tiny(tmp_path_factory):
    """8 train / 1 val frames at 64x128: 4 iterations per epoch at batch 2, for the resume tests."""
    from sanet.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth_tiny")
    generate_dataset(str(root), SynthConfig(64, 128, train=8, val=1, seed=0))
    return root


TINY = dict(epochs=2, batch_size=2, crop=[64, 128], val_every=1, val_limit=1, variant="sanet-tiny", device="cpu")


def test_resume_gives_same_weights_as_uninterrupted(synth_tiny, tmp_path):
    straight = Trainer(small_train_config(synth_tiny, tmp_path / "a", **TINY))
    straight.fit()
    paused = Trainer(small_train_config(synth_tiny, tmp_path / "b", **TINY))
    paused.fit(until_epoch=1)
    resumed = Trainer(small_train_config(synth_tiny, tmp_path / "b", **TINY), resume=str(tmp_path / "b" / "last.pt"))
    assert (resumed.start_epoch, resumed.start_iteration) == (1, 0)
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# Runs a Trainer whose training set, at its Nth sample load, either freezes (so the test can SIGKILL the process
# at a known point: after the checkpoint of the batch before) or sends this process SIGINT (a stop request
# reaching this rank only). The trainer itself is the real one; only the moment of the event is pinned.
TRAIN_SCRIPT = """
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
import torch.distributed as dist
from sanet.train import TrainConfig, Trainer
args = json.loads(sys.argv[1])
trainer = Trainer(TrainConfig(**args["config"]))
load, calls = trainer.train_set.load, [0]
def load_with_event(index):
    calls[0] += 1
    if calls[0] == args["at_load"] and trainer.rank == 0:
        if args["event"] == "freeze":
            open(args["marker"], "w").close()
            while True:
                time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)
    return load(index)
trainer.train_set.load = load_with_event
trainer.fit()
names = [name for name, _ in trainer.model.named_parameters()]
torch.save({"names": names, "flat": torch.cat([p.detach().flatten() for p in trainer.model.parameters()])},
           os.path.join(args["config"]["out"], "rank{}.pt".format(trainer.rank)))
print(json.dumps({"rank": trainer.rank, "stopped_at": trainer.stopped_at, "requested": trainer.stop_requested}))
if trainer.distributed:
    dist.destroy_process_group()
"""


def start_training(tmp_path, config, event, at_load, env=None):
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    args = {"config": vars(config), "event": event, "at_load": at_load, "marker": str(tmp_path / "frozen")}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def one_thread():
    """Same intra-op thread count as the subprocesses, so CPU kernels sum in the same order (bitwise equal)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(synth_tiny, tmp_path):
    config = small_train_config(synth_tiny, tmp_path / "killed", checkpoint_every=3, **TINY)
    # 8 images / batch 2 = 4 iterations per epoch; freeze while loading batch 4 of epoch 0, i.e. after the
    # checkpoint written at iteration 3.
    process = start_training(tmp_path, config, "freeze", at_load=3 * 2 + 1)
    try:
        while not (tmp_path / "frozen").exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.05)
        process.kill()  # SIGKILL: no handler runs, only what is on disk survives
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -9
    _, _, extra = read_checkpoint(tmp_path / "killed" / "last.pt")
    assert (extra["resume_epoch"], extra["resume_iteration"], extra["epoch_loss_count"]) == (0, 3, 3)
    assert not [p for p in os.listdir(tmp_path / "killed") if p.startswith(".tmp-")]
    with one_thread():
        straight = Trainer(small_train_config(synth_tiny, tmp_path / "straight", **TINY))
        straight.fit()
        resumed = Trainer(config, resume=str(tmp_path / "killed" / "last.pt"))
        assert (resumed.start_epoch, resumed.start_iteration) == (0, 3)
        resumed.fit()
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 8
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.history == straight.history  # the interrupted epoch's mean loss counts all 4 iterations


def test_mid_epoch_resume_refuses_a_different_batching(synth_tiny, tmp_path):
    trainer = Trainer(small_train_config(synth_tiny, tmp_path / "a", **TINY))
    trainer.save(0, 1)
    with pytest.raises(SanetError, match="cannot resume .* mid-epoch.*batch_size 2 .* this run has 8, 4"):
        Trainer(small_train_config(synth_tiny, tmp_path / "b", **dict(TINY, batch_size=4)), resume=str(tmp_path / "a" / "last.pt"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_ranks_stop_together_when_only_rank0_is_signalled(synth_tiny, tmp_path):
    config = small_train_config(synth_tiny, tmp_path / "ddp", **dict(TINY, epochs=1, batch_size=1))
    port = str(free_port())
    # 8 images over 2 ranks, batch 1: 4 iterations per epoch; rank 0 gets SIGINT while loading batch 2.
    processes = [start_training(tmp_path, config, "signal", at_load=2,
                                env=dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                         MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for rank in (0, 1)]
    try:
        results = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]
    assert [r["requested"] for r in reports] == [True, False]  # only rank 0 received the request
    assert [r["stopped_at"] for r in reports] == [[0, 2], [0, 2]]  # both stopped after the same iteration
    state, _, extra = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert (extra["resume_epoch"], extra["resume_iteration"], extra["world_size"]) == (0, 2, 2)
    ranks = [torch.load(tmp_path / "ddp" / "rank{}.pt".format(r), weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["flat"], ranks[1]["flat"])
    saved = torch.cat([state[name].flatten() for name in ranks[0]["names"]])
    assert torch.equal(saved, ranks[0]["flat"])  # the one checkpoint holds the weights both ranks stopped with
    assert "interrupted at epoch 0 iteration 2" in (tmp_path / "ddp" / "train.log").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the AMP GradScaler is active on CUDA only")
def test_amp_grad_scaler_state_survives_resume(synth_tiny, tmp_path):
    config = small_train_config(synth_tiny, tmp_path / "amp", **dict(TINY, epochs=2, amp=True, device="cuda"))
    trainer = Trainer(config)
    trainer.fit(until_epoch=1)
    scale, tracker = trainer.scaler.get_scale(), trainer.scaler.state_dict()["_growth_tracker"]
    assert trainer.scaler.is_enabled() and (scale, tracker) != (65536.0, 0)  # a fresh scaler's state
    resumed = Trainer(config, resume=str(tmp_path / "amp" / "last.pt"))
    assert resumed.scaler.get_scale() == scale and resumed.scaler.state_dict()["_growth_tracker"] == tracker


def test_cpu_amp_trains_in_bfloat16_where_the_cpu_computes_it(synth_tiny, tmp_path):
    trainer = Trainer(small_train_config(synth_tiny, tmp_path / "bf16", **dict(TINY, epochs=1, amp=True)))
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert trainer.amp_dtype == (torch.bfloat16 if native else None) and not trainer.scaler.is_enabled()
    seen = []
    trainer.model.resnet.conv1[0].register_forward_hook(lambda module, inputs, output: seen.append(output))
    history = trainer.fit()
    assert math.isfinite(history[-1]["loss"]) and seen
    assert seen[0].dtype == (torch.bfloat16 if native else torch.float32)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # NHWC on the CPU
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # float32 master weights


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


def test_torchrun_two_processes_gloo(synth_tiny, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "sanet.cli", "train", "--config", "configs/synthetic.yaml", "data={}".format(synth_tiny),
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
    with pytest.raises(SanetError, match="checkpoint_every=-5: use 0"):
        Trainer(small_train_config(synth_small, tmp_path / "o", checkpoint_every=-5))
    with pytest.raises(SanetError, match="dataset=folder has no labels"):
        Trainer(small_train_config(synth_small, tmp_path / "o", dataset="folder"))


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
