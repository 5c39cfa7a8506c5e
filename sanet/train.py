"""Training with the paper's recipe on one CPU, one GPU or many (torchrun + DDP), resumable.

SGD (momentum 0.9, no weight decay on 1-D parameters), linear warm-up then poly(0.9) per iteration,
OHEM cross-entropy on the main head plus 0.4 x the auxiliary head. A checkpoint is written atomically
every epoch and every ``checkpoint_every`` iterations (``last.pt``: weights, optimizer, scheduler, AMP
GradScaler, RNG states and the position (epoch, iteration) reached), and the best by validation mIoU
(``best.safetensors``). ``--resume`` continues at that exact iteration: the epoch's sample order is a
function of (seed, epoch) and each sample's augmentation of (seed, epoch, index), so the remaining
batches are exactly those an uninterrupted run would have seen. SIGINT/SIGTERM finish the current
iteration, save and exit; under DDP the ranks all-reduce a stop flag every iteration, so all stop at
the same iteration even when only one received the signal.
"""
import copy
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoints import load_weights, read_checkpoint, save_checkpoint
from .constants import IGNORE_INDEX
from .data import TrainTransform, open_dataset
from .errors import SanetError
from .evaluate import evaluate, progress_bar
from .fileio import ensure_writable_dir
from .model import AUX_PREFIX, ModelConfig, SANet
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
    checkpoint_every: int = 0  # also write last.pt every N iterations inside an epoch (0: at epoch ends only)
    val_limit: Optional[int] = None
    workers: int = 4
    amp: bool = True
    sync_bn: bool = False
    seed: int = 0
    out: str = "runs/train"
    device: str = "auto"
    init: Optional[str] = None  # start from these weights (a checkpoint file) instead of random ones: fine-tuning, QAT
    # Quantization-aware training (sanet.qat, NVIDIA Model Optimizer; needs init): fake int8 on every Conv2d, ranges
    # calibrated on qat_calib_batches training batches, BatchNorm frozen; best.safetensors then carries the ranges.
    qat: bool = False
    qat_calib_batches: int = 8
    # Distillation toward the frozen init model (its FP32 logits): loss = (1 - distill) x label loss + distill x per-pixel
    # KL divergence. 0: labels only; 1: the network only learns to predict what the init model predicts.
    distill: float = 0.0

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

    def __init__(self, thresh=0.9, min_kept=131072, ignore_index=IGNORE_INDEX, class_weights=None):
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


def distillation_loss(logits, teacher_logits):
    """Per-pixel KL(teacher || student) of the class distributions, averaged over pixels: (B, C, H, W) each."""
    log_student = F.log_softmax(logits, dim=1)
    log_teacher = F.log_softmax(teacher_logits, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(dim=1).mean()


def class_balance_weights(dataset, num_classes, limit=None):
    """ENet class weights 1 / ln(1.02 + p_c) from the label frequencies p_c of ``dataset`` (rare -> up to ~50)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        label = dataset.load(index)[1]
        counts += np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
    frequency = counts / max(1.0, counts.sum())
    return (1.0 / np.log(1.02 + frequency)).astype(np.float32)


def amp_dtype(amp, device):
    """The autocast dtype of a run with ``amp``: float16 on CUDA (with loss scaling), bfloat16 on CPUs that
    compute it natively (AVX-512 BF16 / AMX: about 2x faster steps than float32 on 2 Zen 4 cores), else None."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


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
        if config.checkpoint_every < 0:
            raise SanetError("checkpoint_every={}: use 0 (checkpoints at epoch ends only) or a number of iterations".format(
                config.checkpoint_every))
        if config.dataset == "folder":
            raise SanetError("dataset=folder has no labels to train on: arrange the frames in the cityscapes or camvid "
                             "layout (docs/training.md)")
        if not 0.0 <= config.distill <= 1.0:
            raise SanetError("distill={} is a mixing weight: use 0 (labels only) to 1 (distillation only)".format(config.distill))
        if config.distill and not config.init:
            raise SanetError("distill={} needs init=CHECKPOINT: the model whose predictions training keeps".format(config.distill))
        if config.qat and not (config.init or resume):
            raise SanetError("qat=true fine-tunes a trained network: set init=CHECKPOINT")
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
        # NHWC is oneDNN's native layout: about 15 % faster CPU steps than NCHW (same results, other strides).
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        if config.init:
            self._load_init(config.init)
        # The init model, frozen (eval mode, no gradients), whose logits the distillation loss follows.
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False) if config.distill else None
        resumed = read_checkpoint(resume) if resume else None  # (state, config, extra): QAT ranges, then training state
        if config.qat:
            self._quantize(resumed)
        if config.sync_bn and self.device.type != "cuda":
            raise SanetError("sync_bn=true needs CUDA (PyTorch's SyncBatchNorm has no CPU path): set sync_bn=false")
        if self.distributed and config.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, config.weight_decay), lr=config.lr,
                                         momentum=config.momentum)
        self.iters_per_epoch = max(1, len(self.train_set) // (config.batch_size * self._world()))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, config.epochs * self.iters_per_epoch))
        self.amp_dtype = amp_dtype(config.amp, self.device)
        scaled = self.amp_dtype == torch.float16  # bf16 has float32's range: no loss scaling
        # torch.amp.GradScaler("cuda") appeared in torch 2.3; torch.cuda.amp's is the torch 2.0 spelling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled) if hasattr(torch.amp, "GradScaler") else \
            torch.cuda.amp.GradScaler(enabled=scaled)
        weights = class_balance_weights(self.train_set, config.classes) if config.class_balance else None
        self.criterion = OhemCrossEntropy(config.ohem_thresh, config.ohem_min_kept, class_weights=weights)
        self.start_epoch, self.start_iteration, self.best_miou, self.history = 0, 0, -1.0, []
        self.epoch_loss = (0.0, 0)  # (sum, iterations) of the epoch in progress: a resumed epoch's mean stays exact
        if resume:
            self._resume(resume, resumed)
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        self.stop_requested = False  # set by SIGINT/SIGTERM on this rank
        self.stopped_at = None  # (epoch, iterations done in it) when a stop request ended fit() early

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

    def _load_init(self, path):
        """Strict load of ``path``'s weights. A deployment file has no training-only auxiliary head (conv_out16): with
        aux_weight=0 that head keeps its random weights and trains nothing; otherwise that is an error."""
        state = dict(read_checkpoint(path)[0])
        aux = {key: value for key, value in self.model.state_dict().items() if key.startswith(AUX_PREFIX)}
        if aux and not any(key in state for key in aux):
            if self.config.aux_weight:
                raise SanetError("init {} has no auxiliary head (conv_out16): its loss would train a random head into the "
                                 "backbone; set aux_weight=0".format(path))
            self.log.info("init %s has no auxiliary head (conv_out16); aux_weight=0, so it stays unused", path)
            state.update(aux)
        load_weights(self.model, state)
        self.log.info("initialised from %s", path)

    def _quantize(self, resumed):
        """QAT: Model Optimizer's fake quantization, its ranges calibrated on the first qat_calib_batches batches of
        epoch 0 (augmented training crops), or when resuming taken from the checkpoint read (its state holds them)."""
        from . import qat

        if resumed:
            qat.quantize(self.model, ranges=qat.ranges_from_state(resumed[0]))
            return

        def calibrate(model):
            for index, (images, _) in enumerate(self._loader(0)):
                if index == self.config.qat_calib_batches:
                    break
                model(images.to(self.device, memory_format=self.memory_format))

        qat.quantize(self.model, calibrate)
        self.log.info("qat: %d convolutions fake-quantized to int8, ranges from %d training batches",
                      len(qat.quantized_convs(self.model)), self.config.qat_calib_batches)

    def _resume(self, path, checkpoint):
        state, config, extra = checkpoint  # read_checkpoint(path)
        if config is None or "optimizer" not in extra:
            raise SanetError("{} is not a training checkpoint (last.pt): resume needs optimizer state".format(path))
        if (config.variant, config.num_classes) != (self.config.variant, self.config.classes):
            raise SanetError("cannot resume {} ({}, {} classes) into a {} run with {} classes: use the same config".format(
                path, config.variant, config.num_classes, self.config.variant, self.config.classes))
        epoch, iteration = int(extra.get("resume_epoch", int(extra["epoch"]) + 1)), int(extra.get("resume_iteration", 0))
        if iteration:
            # Mid-epoch: the remaining batches are found by position, which needs the same data and batching.
            saved = [extra.get(key) for key in ("train_samples", "batch_size", "world_size")]
            now = [len(self.train_set), self.config.batch_size, self._world()]
            if saved != now:
                raise SanetError("cannot resume {} mid-epoch: it was saved with {} training images, batch_size {} on {} "
                                 "process(es), this run has {}, {} on {}: use the same data, batch_size and process count".format(
                                     path, *(saved + now)))
        self.model.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        if extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.start_epoch, self.start_iteration, self.best_miou = epoch, iteration, float(extra["best_miou"])
        self.epoch_loss = (float(extra.get("epoch_loss_sum", 0.0)), int(extra.get("epoch_loss_count", 0)))
        self.history = [dict(zip(("epoch", "loss", "miou"), row)) for row in extra.get("history", [])]
        torch.set_rng_state(extra["rng_torch"])
        if "rng_cuda" in extra and torch.cuda.is_available() and len(extra["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(list(extra["rng_cuda"]))
        self.log.info("resumed from %s at epoch %d iteration %d", path, epoch, iteration)

    def _loader(self, epoch, start_iteration=0):
        """Batches of ``epoch`` from ``start_iteration`` on: the epoch's full order, minus the batches already done."""
        self.train_set.set_epoch(epoch)
        if self.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(self.train_set, seed=self.config.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)  # same order when resumed
            sampler = torch.utils.data.RandomSampler(self.train_set, generator=generator)
        order = list(sampler)[start_iteration * self.config.batch_size:]
        # An explicit generator seeds the workers, so building a loader never draws from the global torch RNG.
        workers_seed = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.config.batch_size, sampler=order,
                                           num_workers=self.config.workers, drop_last=True, generator=workers_seed,
                                           persistent_workers=False, pin_memory=self.device.type == "cuda")

    def save(self, epoch, iteration=None, name="last.pt"):
        """Write the training state at a position: ``iteration`` batches done in ``epoch``, or (None) the epoch complete."""
        if not self.is_main:
            return
        resume_epoch, resume_iteration = (epoch + 1, 0) if iteration is None else (epoch, iteration)
        total, count = (0.0, 0) if iteration is None else self.epoch_loss
        extra = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": resume_epoch - 1, "resume_epoch": resume_epoch,
                 "resume_iteration": resume_iteration, "epoch_loss_sum": total, "epoch_loss_count": count,
                 "train_samples": len(self.train_set), "batch_size": self.config.batch_size, "world_size": self._world(),
                 "best_miou": self.best_miou, "rng_torch": torch.get_rng_state(),
                 "history": [[h["epoch"], h["loss"], h["miou"]] for h in self.history]}
        if torch.cuda.is_available() and self.device.type == "cuda":
            extra["rng_cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(os.path.join(self.out, name), self.model, extra)

    def _handle_signal(self, signum, frame):
        self.stop_requested = True
        # A second Ctrl-C / SIGTERM acts at once (the checkpoint is written atomically, so nothing is lost but time).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _agree_to_stop(self):
        """True on every rank when any rank was asked to stop; called once per iteration by all ranks alike."""
        if not self.distributed:
            return self.stop_requested
        flag = torch.tensor([1.0 if self.stop_requested else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def fit(self, until_epoch=None):
        """Train to ``config.epochs`` (or stop after ``until_epoch`` epochs, as a resumable pause)."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.signal(sig, self._handle_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._fit(until_epoch)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _fit(self, until_epoch):
        config, writer = self.config, self._tensorboard()
        for epoch in range(self.start_epoch, min(config.epochs, until_epoch or config.epochs)):
            start_iteration, self.start_iteration = self.start_iteration if epoch == self.start_epoch else 0, 0
            loss, done = self._train_epoch(epoch, start_iteration, writer)
            if self.stopped_at is not None:
                self.save(epoch, done)
                self.log.info("interrupted at epoch %d iteration %d: saved %s; --resume continues from that iteration",
                              epoch, done, os.path.join(self.out, "last.pt"))
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
                    self._save_best(os.path.join(self.out, "best.safetensors"))
            self.save(epoch)
            self.log.info("epoch %d loss %.4f val mIoU %s lr %.5f", epoch, loss,
                          "-" if miou is None else "{:.4f}".format(miou), self.optimizer.param_groups[0]["lr"])
        if writer:
            writer.close()
        if self.distributed:
            self.check_ranks_in_sync()
        return self.history

    def _save_best(self, path):
        """The weights (after QAT: the plain FP32 SANet plus its quantizer ranges, sanet.qat) as safetensors."""
        if not self.config.qat:
            save_checkpoint(path, self.model)
            return
        from .fileio import sha256_file
        from .qat import save_qat_checkpoint

        save_qat_checkpoint(path, self.model, {"init_sha256": sha256_file(self.config.init) if self.config.init else None})

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

    def _train_epoch(self, epoch, start_iteration, writer):
        """Run ``epoch`` from batch ``start_iteration``; returns (mean loss of the whole epoch, batches done in it)."""
        self.net.train()
        if self.config.qat:  # BatchNorm uses and keeps its running statistics, as the deployed network does
            from .qat import freeze_batchnorm

            freeze_batchnorm(self.model)
        if start_iteration == 0:
            self.epoch_loss = (0.0, 0)
        loader = self._loader(epoch, start_iteration)
        bar = progress_bar(loader, len(loader), "epoch {}/{}".format(epoch + 1, self.config.epochs), self.is_main)
        done = start_iteration
        for images, labels in bar:
            images = images.to(self.device, memory_format=self.memory_format, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                main, aux = self.net(images)
                loss = self.criterion(main.float(), labels) + self.config.aux_weight * self.criterion(aux.float(), labels)
                if self.teacher is not None:
                    with torch.no_grad():
                        target = self.teacher(images)
                    loss = (1 - self.config.distill) * loss + self.config.distill * distillation_loss(main.float(), target.float())
            if not torch.isfinite(loss):
                raise SanetError("loss became {} at epoch {}: training stopped; {} holds the last good weights "
                                 "(lower lr or check the data)".format(loss.item(), epoch, os.path.join(self.out, "last.pt")))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            done += 1
            self.epoch_loss = (self.epoch_loss[0] + loss.item(), self.epoch_loss[1] + 1)
            step = epoch * self.iters_per_epoch + done
            if writer:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss="{:.3f}".format(loss.item()), lr="{:.4f}".format(self.optimizer.param_groups[0]["lr"]))
            if self._agree_to_stop():
                self.stopped_at = (epoch, done)
                break
            if self.config.checkpoint_every and done % self.config.checkpoint_every == 0 and done < len(loader) + start_iteration:
                self.save(epoch, done)
        return self.epoch_loss[0] / max(1, self.epoch_loss[1]), done

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
