"""Training with the paper's recipe on one CPU, one GPU or many (torchrun + DDP), resumable.

SGD (momentum 0.9, no weight decay on 1-D parameters), linear warm-up then poly(0.9) per iteration,
OHEM cross-entropy on the main head plus 0.4 x the auxiliary head. A checkpoint is written atomically
every epoch (``last.pt``: weights, optimizer, scheduler, epoch, RNG states) and the best by validation
mIoU (``best.safetensors``); ``--resume`` continues exactly; SIGINT/SIGTERM save and exit.
"""
import dataclasses
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoints import read_checkpoint, save_checkpoint
from .data import IGNORE, TrainTransform, open_dataset
from .errors import SanetError
from .evaluate import evaluate, progress_bar
from .fileio import ensure_writable_dir
from .model import ModelConfig, SANet
from .runners import TorchRunner


@dataclass
class TrainConfig:
    dataset: str = "cityscapes"
    data: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    variant: str = "sanet"
    classes: int = 19
    crop: List[int] = dataclasses.field(default_factory=lambda: [1024, 1024])
    scale_range: List[float] = dataclasses.field(default_factory=lambda: [0.5, 2.0])
    max_class_ratio: float = 0.75
    jitter: float = 0.5
    batch_size: int = 12
    epochs: int = 480
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 1000
    warmup_ratio: float = 0.1
    poly_power: float = 0.9
    ohem_thresh: float = 0.9
    ohem_min_kept: int = 131072
    aux_weight: float = 0.4
    class_balance: bool = False  # ENet-style class weights in the loss (helps short runs learn rare classes)
    val_every: int = 10
    val_limit: Optional[int] = None
    workers: int = 4
    amp: bool = True
    sync_bn: bool = False
    seed: int = 0
    out: str = "runs/train"
    device: str = "auto"

    @classmethod
    def load(cls, path=None, overrides=()):
        import yaml

        values = {}
        if path:
            if not os.path.isfile(path):
                raise SanetError("config not found: {} (see configs/ for examples)".format(path))
            try:
                with open(path, encoding="utf-8") as handle:
                    values = yaml.safe_load(handle) or {}
            except yaml.YAMLError as exc:
                raise SanetError("config {} does not parse as YAML: {}".format(path, str(exc).splitlines()[0])) from exc
            if not isinstance(values, dict):
                raise SanetError("config {} must be a mapping of keys to values".format(path))
        for item in overrides:
            if "=" not in item:
                raise SanetError("override {!r} must look like key=value".format(item))
            key, text = item.split("=", 1)
            values[key] = yaml.safe_load(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise SanetError("unknown config key(s) {}: valid keys are {}".format(", ".join(unknown), ", ".join(sorted(fields))))
        return cls(**values)


class OhemCrossEntropy(torch.nn.Module):
    """Cross-entropy over the hardest pixels: those whose true-class probability is below ``thresh``,
    and never fewer than ``min_kept`` (the hardest ones) when enough labelled pixels exist."""

    def __init__(self, thresh=0.9, min_kept=131072, ignore_index=IGNORE, class_weights=None):
        super().__init__()
        self.loss_thresh = -math.log(thresh)
        self.min_kept, self.ignore_index = min_kept, ignore_index
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def forward(self, logits, labels):
        losses = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="none").flatten()
        labels = labels.flatten()
        valid = labels != self.ignore_index
        losses, labels = losses[valid], labels[valid]  # (N_valid,)
        if losses.numel() == 0:
            return logits.sum() * 0.0
        keep = losses > self.loss_thresh  # hardness is judged on the unweighted loss
        if int(keep.sum()) < min(self.min_kept, losses.numel()):
            keep = torch.zeros_like(keep)
            keep[torch.topk(losses, min(self.min_kept, losses.numel())).indices] = True
        hard = losses[keep]
        if self.class_weights is None:
            return hard.mean()
        weights = self.class_weights.to(hard.device, hard.dtype)[labels[keep]]
        return (hard * weights).sum() / weights.sum()


def class_balance_weights(dataset, num_classes, limit=None):
    """ENet class weights 1 / ln(1.02 + p_c) from the label frequencies p_c of ``dataset`` (rare -> up to ~50)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        label = dataset.load(index)[1]
        counts += np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
    frequency = counts / max(1.0, counts.sum())
    return (1.0 / np.log(1.02 + frequency)).astype(np.float32)


def parameter_groups(model, weight_decay):
    """Weight decay on conv/linear weights only, never on 1-D parameters (biases, BatchNorm)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(config, total_iters):
    def factor(iteration):
        if iteration < config.warmup_iters:
            return config.warmup_ratio + (1 - config.warmup_ratio) * iteration / max(1, config.warmup_iters)
        progress = (iteration - config.warmup_iters) / max(1, total_iters - config.warmup_iters)
        return max(0.0, 1 - progress) ** config.poly_power

    return factor


class Trainer:
    def __init__(self, config: TrainConfig, resume=None):
        self.config = config
        self.distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        self.rank = int(os.environ.get("RANK", 0))
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.distributed:
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
            if device == "cuda":
                device = "cuda:{}".format(int(os.environ.get("LOCAL_RANK", 0)))
                torch.cuda.set_device(device)
        self.device = torch.device(device)
        self.is_main = self.rank == 0
        torch.manual_seed(config.seed)
        self.out = ensure_writable_dir(config.out) if self.is_main else config.out
        self.log = self._logger()
        transform = TrainTransform(tuple(config.crop), tuple(config.scale_range), config.max_class_ratio, True,
                                   config.jitter, seed=config.seed)
        self.train_set = open_dataset(config.data, config.dataset, config.train_split, transform)
        self.val_set = open_dataset(config.data, config.dataset, config.val_split)
        if self.train_set.num_classes != config.classes:
            raise SanetError("config says {} classes but {} has {}".format(config.classes, config.dataset, self.train_set.num_classes))
        self.model = SANet(ModelConfig(variant=config.variant, num_classes=config.classes,
                                       class_names=list(self.train_set.class_names))).to(self.device)
        if config.sync_bn and self.device.type != "cuda":
            raise SanetError("sync_bn=true needs CUDA (PyTorch's SyncBatchNorm has no CPU path): set sync_bn=false")
        if self.distributed and config.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, config.weight_decay), lr=config.lr,
                                         momentum=config.momentum)
        self.iters_per_epoch = max(1, len(self.train_set) // (config.batch_size * self._world()))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, config.epochs * self.iters_per_epoch))
        amp = config.amp and self.device.type == "cuda"
        # torch.amp.GradScaler("cuda") appeared in torch 2.3; torch.cuda.amp's is the torch 2.0 spelling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp) if hasattr(torch.amp, "GradScaler") else \
            torch.cuda.amp.GradScaler(enabled=amp)
        weights = class_balance_weights(self.train_set, config.classes) if config.class_balance else None
        self.criterion = OhemCrossEntropy(config.ohem_thresh, config.ohem_min_kept, class_weights=weights)
        self.start_epoch, self.best_miou, self.history = 0, -1.0, []
        if resume:
            self._resume(resume)
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        self.stop_requested = False

    def _world(self):
        return int(os.environ.get("WORLD_SIZE", 1)) if self.distributed else 1

    def _logger(self):
        logger = logging.getLogger("sanet.train")
        logger.setLevel(logging.INFO)
        logger.handlers.clear()
        if self.is_main:
            handler = logging.FileHandler(os.path.join(self.out, "train.log"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
        return logger

    def _resume(self, path):
        state, config, extra = read_checkpoint(path)
        if config is None or "optimizer" not in extra:
            raise SanetError("{} is not a training checkpoint (last.pt): resume needs optimizer state".format(path))
        if (config.variant, config.num_classes) != (self.config.variant, self.config.classes):
            raise SanetError("cannot resume {} ({}, {} classes) into a {} run with {} classes: use the same config".format(
                path, config.variant, config.num_classes, self.config.variant, self.config.classes))
        self.model.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.start_epoch, self.best_miou = int(extra["epoch"]) + 1, float(extra["best_miou"])
        self.history = [dict(zip(("epoch", "loss", "miou"), row)) for row in extra.get("history", [])]
        torch.set_rng_state(extra["rng_torch"])
        self.log.info("resumed from %s at epoch %d", path, self.start_epoch)

    def _loader(self, epoch):
        self.train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)  # same order when resumed
        if self.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(self.train_set, seed=self.config.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = torch.utils.data.RandomSampler(self.train_set, generator=generator)
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.config.batch_size, sampler=sampler,
                                           num_workers=self.config.workers, drop_last=True,
                                           persistent_workers=False, pin_memory=self.device.type == "cuda")

    def save(self, epoch, name="last.pt"):
        if not self.is_main:
            return
        extra = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "epoch": epoch,
                 "best_miou": self.best_miou, "rng_torch": torch.get_rng_state(),
                 "history": [[h["epoch"], h["loss"], h["miou"]] for h in self.history]}
        save_checkpoint(os.path.join(self.out, name), self.model, extra)

    def _handle_signal(self, signum, frame):
        self.stop_requested = True

    def fit(self, until_epoch=None):
        """Train to ``config.epochs`` (or stop after ``until_epoch`` epochs, as a resumable pause)."""
        config, writer = self.config, self._tensorboard()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle_signal)
        for epoch in range(self.start_epoch, min(config.epochs, until_epoch or config.epochs)):
            loss = self._train_epoch(epoch, writer)
            if self.stop_requested:
                # Saved as the previous epoch, so --resume re-runs the interrupted epoch from these weights.
                self.save(epoch - 1)
                self.log.info("interrupted in epoch %d: saved %s; --resume re-runs that epoch", epoch,
                              os.path.join(self.out, "last.pt"))
                return self.history
            miou = None
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
                miou = self.validate()
                if writer:
                    writer.add_scalar("val/miou", miou, epoch)
            self.history.append({"epoch": epoch, "loss": loss, "miou": miou})
            if miou is not None and miou > self.best_miou:
                self.best_miou = miou
                if self.is_main:
                    save_checkpoint(os.path.join(self.out, "best.safetensors"), self.model)
            self.save(epoch)
            self.log.info("epoch %d loss %.4f val mIoU %s lr %.5f", epoch, loss,
                          "-" if miou is None else "{:.4f}".format(miou), self.optimizer.param_groups[0]["lr"])
        if writer:
            writer.close()
        if self.distributed:
            self.check_ranks_in_sync()
        return self.history

    def check_ranks_in_sync(self):
        """All ranks must end with bit-identical parameters; a mismatch means broken gradient synchronisation.
        (BatchNorm running statistics are rank-local between DDP's broadcasts; rank 0 writes them.)"""
        flat = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
        digest = torch.tensor([flat.sum().item(), (flat * flat).sum().item(), flat.abs().max().item()], dtype=torch.float64)
        gathered = [torch.zeros_like(digest) for _ in range(self._world())]
        dist.all_gather(gathered, digest.to(self.device) if self.device.type == "cuda" else digest)
        if any(not torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered):
            raise SanetError("ranks finished with different weights: distributed synchronisation failed")
        self.log.info("weights identical on all %d ranks", self._world())

    def _tensorboard(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log.info("tensorboard not installed: scalars are only in train.log (pip install tensorboard)")
            return None
        return SummaryWriter(os.path.join(self.out, "tb"))

    def _train_epoch(self, epoch, writer):
        self.net.train()
        total, count = 0.0, 0
        loader = self._loader(epoch)
        bar = progress_bar(loader, len(loader), "epoch {}/{}".format(epoch + 1, self.config.epochs), self.is_main)
        for images, labels in bar:
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
                main, aux = self.net(images)
                loss = self.criterion(main.float(), labels) + self.config.aux_weight * self.criterion(aux.float(), labels)
            if not torch.isfinite(loss):
                raise SanetError("loss became {} at epoch {}: training stopped; {} holds the last good weights "
                                 "(lower lr or check the data)".format(loss.item(), epoch, os.path.join(self.out, "last.pt")))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total, count = total + loss.item(), count + 1
            step = epoch * self.iters_per_epoch + count
            if writer:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss="{:.3f}".format(loss.item()), lr="{:.4f}".format(self.optimizer.param_groups[0]["lr"]))
            if self.stop_requested:
                break
        return total / max(1, count)

    def validate(self):
        runner = TorchRunner(self.model, str(self.device))
        result = evaluate(runner, self.val_set, limit=self.config.val_limit, progress=False)
        self.model.train()
        return result["miou"]


def plot_history(history, path):
    """mIoU and loss per epoch as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    epochs = [h["epoch"] + 1 for h in history]
    fig, loss_axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    loss_axis.plot(epochs, [h["loss"] for h in history], color="tab:gray", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss")
    miou_axis = loss_axis.twinx()
    points = [(e, 100 * h["miou"]) for e, h in zip(epochs, history) if h["miou"] is not None]
    miou_axis.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:blue", label="val mIoU")
    miou_axis.set_ylabel("val mIoU (%)")
    fig.legend(loc="center right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def train(config: TrainConfig, resume=None):
    start = time.perf_counter()
    trainer = Trainer(config, resume)
    try:
        history = trainer.fit()
    finally:
        if trainer.distributed:
            dist.destroy_process_group()
    return trainer, history, time.perf_counter() - start
