"""One training loop for the teacher fine-tune, the distilled student and the hard-label baseline.

Resumable and deterministic on CPU: each epoch re-seeds every random source from (seed, epoch),
and a checkpoint holding model, optimizer, scheduler, epoch, RNG state and best weights is
written atomically after every epoch, so an interrupted run resumed with --resume reaches the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.pipeline import distributed as dist_
from edgekd.pipeline import preprocess, tracking
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.losses import FeatureAdapter, FeatureHook, dkd_loss, kd_loss, soft_cross_entropy
from edgekd.pipeline.progress import log, progress
from edgekd.pipeline.rundir import atomic_path, atomic_write_json
from edgekd.pipeline.views import CachedViews, augment, render


@dataclass
class TrainSpec:
    name: str
    out_dir: Path
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.02
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    mixup: float = 0.0
    crop_scale: tuple[float, float] = (0.6, 1.0)
    seed: int = 0
    balance: bool = True
    head_epochs: int = 0  # first epochs train only the classifier (teacher fine-tuning)
    freeze_blocks: list[nn.Module] = field(default_factory=list)
    head: Optional[nn.Module] = None
    # distillation (None: hard labels only)
    kd_loss: Optional[str] = None  # "kd" | "dkd"
    alpha: float = 0.9
    temperature: float = 4.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    feature_layers: Optional[tuple[str, str]] = None  # (teacher layer, student layer)
    feature_weight: float = 1.0
    fingerprint: str = ""
    channels_last: bool = True
    amp: bool = True
    # schedule: epochs grow until at least min_steps optimizer steps are taken (small data sets would
    # otherwise starve: 400 images at batch 64 are 6 steps an epoch); early stop and time budget end it sooner
    min_steps: int = 0
    patience_steps: Optional[int] = None
    max_minutes: Optional[float] = None
    # logit adjustment (Menon et al. 2021) of the hard-label term by the class prior the sampler produces
    logit_adjust: float = 0.0
    # torchvision's MobileNetV3 and EfficientNet-Lite use BatchNorm momentum 0.01, tuned for
    # ImageNet-length runs; over a few hundred steps the running statistics then lag the weights
    # and evaluation collapses to one class. 0.1 (PyTorch's default) tracks them.
    bn_momentum: Optional[float] = 0.1


@dataclass
class TrainData:
    images: Any  # N x 3 x S x S uint8 (S >= image_size), augmentation source: a tensor or an imagestore store
    labels: torch.Tensor  # N int64
    image_size: int
    mean: tuple
    std: tuple
    # normalised float N x 3 x H x W: a tensor, or an imagestore.Normalised view that reads a batch at a time
    val_x: Any = None
    val_y: Optional[torch.Tensor] = None
    teacher_logits: Optional[torch.Tensor] = None  # cached soft labels, N x C
    num_classes: int = 0
    views: Optional[CachedViews] = None  # cached augmented views + their teacher logits (kd.cache_views)


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    best_val_accuracy: Optional[float]
    seconds: float
    resumed_from: int
    steps: int = 0  # optimizer steps taken
    epochs_planned: int = 0
    stopped: Optional[str] = None  # why training ended before the planned epochs: "patience" | "time budget"


@dataclass(frozen=True)
class Schedule:
    """Optimizer steps per epoch and epochs, sized by steps: max(epochs, ceil(min_steps / steps per epoch))."""

    steps_per_epoch: int
    epochs: int
    head_epochs: int

    @classmethod
    def of(cls, spec: TrainSpec, n: int) -> Schedule:
        spe = max(1, n // spec.batch_size)  # drop_last: BatchNorm dislikes a batch of 1
        epochs = max(spec.epochs, math.ceil(spec.min_steps / spe)) if spec.min_steps else spec.epochs
        head = spec.head_epochs
        if head and epochs != spec.epochs:  # the head-only phase keeps its share when epochs grow
            head = epochs if head >= spec.epochs else min(epochs - 1, max(1, round(head * epochs / spec.epochs)))
        return cls(spe, epochs, head)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def sampled_prior(labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class distribution the sampler draws (what the model sees), for logit adjustment."""
    mass = torch.zeros(num_classes, dtype=torch.double).index_add_(0, labels, weights.double())
    return (mass / mass.sum()).clamp_min(1e-12).float()


def onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot rows; label -1 (an unlabelled image) gives a zero row, which the hard-label term skips."""
    return F.one_hot(labels.clamp_min(0), num_classes).float() * (labels >= 0).unsqueeze(1).float()


def _sample_weights(labels: torch.Tensor, balance: bool, pseudo: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sampling weight per image. Unlabelled images (label -1) are balanced by `pseudo`, the teacher's class."""
    if not balance:
        return torch.ones(len(labels), dtype=torch.double)
    cls = labels if pseudo is None else torch.where(labels >= 0, labels, pseudo)
    counts = torch.bincount(cls.clamp_min(0)).double().clamp_min(1)
    # 1/sqrt(count): minority classes are seen more often without drowning the majority
    # (full inverse-frequency sampling cost ELPV test accuracy, which is majority-heavy).
    w = (1.0 / counts.sqrt())[cls.clamp_min(0)]
    return torch.where(cls >= 0, w, w.mean())


class EpochBatches(torch.utils.data.Dataset):
    """Step s of an epoch -> this rank's share of global batch s, augmented (float 0..255), labels, indices.

    Everything random comes from (epoch seed, step), so the result is the same with any number of
    DataLoader workers or ranks, and after a resume."""

    def __init__(
        self,
        data: TrainData,
        order: torch.Tensor,
        batch_size: int,
        steps: int,
        scale,
        seed: int,
        mixup: float,
        rank: int = 0,
        world: int = 1,
    ):
        self.data, self.order, self.bs, self.steps, self.scale = data, order, batch_size, steps, scale
        self.seed, self.mixup, self.rank, self.world = seed, mixup, rank, world

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, s: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100_003 + s)
        gidx = self.order[s * self.bs : (s + 1) * self.bs]
        r = torch.rand((len(gidx), 5), generator=g)
        lam = (
            float(np.random.default_rng(self.seed * 100_003 + s).beta(self.mixup, self.mixup))
            if self.mixup > 0
            else 1.0
        )
        part = torch.arange(len(gidx)).tensor_split(self.world)[self.rank]
        idx = gidx[part]
        d, y = self.data, self.data.labels[gidx[part]]
        if d.views is not None:
            # replay one cached view per image (drawn for the global batch: rank-independent); the view carries
            # its own mixup partner and lam, and the teacher's logits for exactly these pixels
            v = torch.randint(d.views.k, (len(gidx),), generator=g)[part]
            vw = d.views
            partner, lam_v = vw.partner[idx, v], vw.lam[idx, v]
            x = render(d.images, idx, vw.r[idx, v], partner, vw.r_partner[idx, v], lam_v, d.image_size, self.scale)
            target = onehot(y, d.num_classes)
            # a mix with an unlabelled image has no hard label: its row stays zero (KD term only)
            mixed = partner >= 0
            if mixed.any():
                w = lam_v[mixed].unsqueeze(1)
                yp = d.labels[partner[mixed]]
                both = ((y[mixed] >= 0) & (yp >= 0)).float().unsqueeze(1)
                target[mixed] = both * (w * target[mixed] + (1 - w) * onehot(yp, d.num_classes))
            return {
                "x": x,
                "y": y,
                "idx": idx,
                "target": target,
                "teacher": vw.logits[idx, v],
                "lam": 1.0,
                "partner": None,
            }
        x = augment(d.images[idx], d.image_size, self.scale, r[part])
        if self.mixup <= 0:
            return {"x": x, "y": y, "idx": idx, "target": None, "teacher": None, "lam": lam, "partner": None}
        # batch mixup: partners are drawn over the global batch and rendered here with their own crop, so the
        # pairs (and the result) do not depend on how many ranks share the batch
        perm = torch.randperm(len(gidx), generator=g)
        pidx = gidx[perm][part]
        x = lam * x + (1 - lam) * augment(d.images[pidx], d.image_size, self.scale, r[perm][part])
        oh, ohp = onehot(y, d.num_classes), onehot(d.labels[pidx], d.num_classes)
        both = ((y >= 0) & (d.labels[pidx] >= 0)).float().unsqueeze(1)  # a mix with an unlabelled image: no label
        target = both * (lam * oh + (1 - lam) * ohp)
        return {"x": x, "y": y, "idx": idx, "target": target, "teacher": None, "lam": lam, "partner": pidx}


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


class _Slices(torch.utils.data.Dataset):
    """Batch b of `x` (a tensor or an imagestore view): what a DataLoader worker reads."""

    def __init__(self, x, batch_size: int):
        self.x, self.bs = x, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.bs)

    def __getitem__(self, b: int) -> torch.Tensor:
        return self.x[b * self.bs : (b + 1) * self.bs]


def loader_workers(num_workers: int, images) -> int:
    """DataLoader workers for reading `images`: train.num_workers, or, when it is 0 and the images are decoded
    from the files on access (data.cache=none), enough workers that decoding overlaps the model instead of
    stalling it (results do not depend on the number of workers); the cores are shared by this node's ranks."""
    if num_workers or getattr(images, "kind", None) != "none":
        return num_workers
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(4, ((os.cpu_count() or 2) - ranks) // ranks))


def predict_logits(
    model: nn.Module,
    x: Any,
    batch_size: int = 128,
    device: str = "cpu",
    desc: Optional[str] = None,
    channels_last: bool = True,
    num_workers: int = 0,
) -> torch.Tensor:
    """Logits of `x` (normalised NCHW: a tensor, or an imagestore view read a batch at a time), `batch_size` at a
    time; with `num_workers`, the batches are read in DataLoader workers (a view decoded from the files)."""
    return predict_many({"": model}, x, batch_size, device, desc, channels_last, num_workers)[""]


@torch.no_grad()
def predict_many(
    models: dict[str, nn.Module],
    x: Any,
    batch_size: int = 128,
    device: str = "cpu",
    desc: Optional[str] = None,
    channels_last: bool = True,
    num_workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Logits of every model on `x`, reading each batch once for all of them (a view decoded from the files,
    data.cache=none, is decoded once, not once per model)."""
    for m in models.values():
        m.eval()
    outs: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    n_batches = math.ceil(len(x) / batch_size)
    if num_workers and not isinstance(x, torch.Tensor) and n_batches:
        it = torch.utils.data.DataLoader(
            _Slices(x, batch_size),
            batch_size=None,
            num_workers=min(num_workers, n_batches),
            pin_memory=str(device).startswith("cuda"),
        )
    else:
        it = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    for xb in progress(it, desc=desc, unit="batch", total=n_batches) if desc else it:
        xb = xb.to(device, non_blocking=True)
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        for name, m in models.items():
            outs[name].append(m(xb).float().cpu())
    return {name: torch.cat(o) if o else torch.empty(0) for name, o in outs.items()}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _prepare(model: nn.Module, spec: TrainSpec, device: torch.device) -> None:
    model.to(device)
    if spec.channels_last:
        model.to(memory_format=torch.channels_last)
    if spec.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = spec.bn_momentum


def _feature_matching(
    model: nn.Module, teacher: Optional[nn.Module], spec: TrainSpec, image_size: int, device: torch.device
) -> tuple[list[FeatureHook], Optional[FeatureAdapter]]:
    """Forward hooks on (teacher layer, student layer) and the learned 1x1 adapter between them."""
    if not spec.feature_layers:
        return [], None
    if teacher is None:
        raise EdgekdError("feature distillation needs the teacher in the loop (kd.mode=online)")
    th, sh = FeatureHook(teacher, spec.feature_layers[0]), FeatureHook(model, spec.feature_layers[1])
    with torch.no_grad():  # one probe forward to learn the feature shapes
        probe = torch.zeros(2, 3, image_size, image_size, device=device)
        teacher.eval(), model.eval()
        teacher(probe), model(probe)
    if th.output.dim() != 4 or sh.output.dim() != 4:
        raise EdgekdError("feature distillation layers must output N x C x H x W feature maps")
    return [th, sh], FeatureAdapter(sh.output.shape[1], th.output.shape[1]).to(device)


def _optimizer(model: nn.Module, spec: TrainSpec, adapter: Optional[FeatureAdapter], sch: Schedule):
    """AdamW over (body, head, adapter) groups; frozen blocks excluded; warm-up + cosine per step, with the
    body's learning rate held at 0 during the head-only epochs. Returns (optimizer, scheduler, body params)."""
    head_params = list(spec.head.parameters()) if spec.head is not None else []
    head_ids = {id(p) for p in head_params}
    frozen_ids = {id(p) for m in spec.freeze_blocks for p in m.parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids and id(p) not in frozen_ids]
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen_ids)
    groups = [{"params": body}]
    if head_params:
        groups.append({"params": head_params})
    if adapter is not None:
        groups.append({"params": list(adapter.parameters())})
    opt = torch.optim.AdamW(groups, lr=spec.lr, weight_decay=spec.weight_decay)

    base = lr_lambda(sch.total_steps, sch.steps_per_epoch * min(spec.warmup_epochs, sch.epochs))
    head_steps = sch.steps_per_epoch * sch.head_epochs

    def body_lr(step: int) -> float:
        return 0.0 if step < head_steps else base(step)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [body_lr] + [base] * (len(groups) - 1))
    return opt, sched, body


def _resume(
    ckpt_path: Path,
    spec: TrainSpec,
    resume: bool,
    model: nn.Module,
    opt,
    sched,
    adapter: Optional[FeatureAdapter],
    epochs: int,
) -> tuple[list[dict], dict, int]:
    """(history, best, first epoch to run): restored from the checkpoint when resuming the same inputs."""
    fresh: tuple[list[dict], dict, int] = ([], {"acc": None, "epoch": -1, "state": None}, 0)
    if not ckpt_path.exists():
        return fresh
    if not resume:
        log(f"{spec.name}: an earlier run stopped early ({ckpt_path}); starting over (pass --resume to continue it)")
        return fresh
    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise EdgekdError(
            f"checkpoint {ckpt_path} cannot be read ({type(e).__name__}); delete it or rerun without --resume"
        ) from None
    if ck.get("fingerprint") != spec.fingerprint:
        log(f"{spec.name}: checkpoint is from different inputs/settings; starting over")
        return fresh
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    if adapter is not None and ck.get("adapter"):
        adapter.load_state_dict(ck["adapter"])
    torch.set_rng_state(ck["rng"]["torch"])
    log(f"{spec.name}: resumed after epoch {ck['epoch'] + 1}/{epochs}")
    return ck["history"], ck["best"], ck["epoch"] + 1


def _loss(
    spec: TrainSpec,
    s_logits: torch.Tensor,
    t_logits: Optional[torch.Tensor],
    y: torch.Tensor,
    target: torch.Tensor,
    lam: float,
    t_partner: Optional[torch.Tensor],
    ce_offset: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The objective for one batch: KD (alpha*T^2*KL + (1-alpha)*CE), DKD, or hard labels only.

    `t_partner`: the cached logits of each image's mixup partner (fixed cached teacher under batch mixup);
    `ce_offset` (tau * log prior, or None) logit-adjusts the hard-label term."""
    if spec.kd_loss and t_partner is not None:
        # fixed cached logits under batch mixup: the teacher's distribution of the mix is approximated by the mix
        # of its two distributions (at temperature T); consistent views (kd.cache_views) need no approximation
        tp = F.softmax(t_logits / spec.temperature, dim=1)
        tp = lam * tp + (1 - lam) * F.softmax(t_partner / spec.temperature, dim=1)
        t_logits = spec.temperature * tp.clamp_min(1e-12).log()
    if spec.kd_loss == "dkd":
        # DKD splits target vs non-target classes, so it needs one class per image: under mixup, the class with
        # the larger share of the mixed image
        cls = target.argmax(1) if target.is_floating_point() else y
        return dkd_loss(s_logits, t_logits, cls, spec.dkd_alpha, spec.dkd_beta, spec.temperature)
    if spec.kd_loss == "kd":
        tp = F.softmax(t_logits / spec.temperature, dim=1)
        return kd_loss(s_logits, tp, target, spec.alpha, spec.temperature, spec.label_smoothing, ce_offset)
    return soft_cross_entropy(s_logits if ce_offset is None else s_logits + ce_offset, target, spec.label_smoothing)


def _train_epoch(
    net: nn.Module,
    spec: TrainSpec,
    data: TrainData,
    loader,
    device: torch.device,
    opt,
    sched,
    teacher: Optional[nn.Module],
    hooks: list[FeatureHook],
    adapter: Optional[FeatureAdapter],
    epoch: int,
    bar,
    ce_offset: Optional[torch.Tensor] = None,
) -> tuple[float, int, int]:
    """One pass over the loader's batches; returns (mean loss, correct, labelled images)."""
    tl, tc, tn, na = 0.0, 0, 0, 0
    for b in loader:
        x, y, idx, lam = b["x"], b["y"], b["idx"], b["lam"]
        target: torch.Tensor = y if b["target"] is None else b["target"]
        x = preprocess.normalize(x.to(device, non_blocking=True), data.mean, data.std)
        if spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y_dev, target = y.to(device), target.to(device)
        with _autocast(device, spec.amp):
            t_logits = t_partner = None
            if spec.kd_loss:
                if b["teacher"] is not None:  # the cached view's own logits
                    t_logits = b["teacher"].to(device)
                elif teacher is not None:
                    with torch.no_grad():
                        teacher.eval()
                        t_logits = teacher(x).float().to(device)  # an ONNX teacher answers on the CPU
                else:
                    t_logits = data.teacher_logits[idx].to(device)
                    if b["partner"] is not None:
                        t_partner = data.teacher_logits[b["partner"]].to(device)
            s_logits = net(x).float()
            loss = _loss(spec, s_logits, t_logits, y_dev, target, lam, t_partner, ce_offset)
            if adapter is not None:
                loss = loss + spec.feature_weight * adapter(hooks[1].output.float(), hooks[0].output.float())
        if not torch.isfinite(loss):
            raise EdgekdError(f"{spec.name}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if adapter is not None and dist_.world_size() > 1:
            # the feature adapter lives outside DDP: average its gradients by hand so every rank keeps one copy
            dist_.all_reduce_mean([p.grad for p in adapter.parameters() if p.grad is not None])
        opt.step()
        sched.step()
        tl += loss.item() * len(idx)
        tc += (s_logits.argmax(1) == y_dev).sum().item()
        tn += int((y >= 0).sum())
        na += len(idx)
        bar.update(1)
    return tl / max(1, na), tc, tn


def improved(rec: dict, best: dict) -> bool:
    """Higher validation accuracy, or equal accuracy with lower validation loss. On a handful of validation
    images many epochs tie (a 4-image split reads 100% after 5 steps of 100); the tie-break keeps the epoch
    that fits them best instead of the first, undertrained one."""
    if best.get("acc") is None or rec["val_accuracy"] > best["acc"]:
        return True
    return rec["val_accuracy"] == best["acc"] and rec["val_loss"] < best.get("loss", float("inf"))


def should_stop(history: list[dict], best: dict, spec: TrainSpec, steps_per_epoch: int) -> Optional[str]:
    """Why to stop before the next epoch ("patience" / "time budget"), or None. Decided from the history alone,
    so a resumed run stops where an uninterrupted one did (the time budget excepted: it is wall time)."""
    if not history:
        return None
    step = history[-1]["epoch"] * steps_per_epoch
    if step < spec.min_steps:
        return None
    if spec.patience_steps and best.get("epoch", -1) > 0:
        since = step - best["epoch"] * steps_per_epoch
        if since >= spec.patience_steps:
            return f"patience: validation accuracy last improved {since} steps ago (train.patience_steps)"
    if spec.max_minutes and history[-1].get("elapsed_seconds", 0) >= spec.max_minutes * 60:
        used = history[-1]["elapsed_seconds"] / 60
        return f"time budget: {used:.1f} min of train.max_minutes={spec.max_minutes:g}"
    return None


def train_model(
    model: nn.Module,
    spec: TrainSpec,
    data: TrainData,
    device: torch.device,
    resume: bool = False,
    teacher: Optional[nn.Module] = None,
    num_workers: int = 0,
) -> TrainResult:
    """Train `model` in place; writes out_dir/checkpoint.pt each epoch, out_dir/history.json at the end.

    On return the model holds the best-on-validation weights (last epoch without a val split)."""
    t0 = time.time()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    _prepare(model, spec, device)
    hooks, adapter = _feature_matching(model, teacher, spec, data.image_size, device)
    n = len(data.labels)
    # unlabelled images (data.unlabeled) widen what an epoch draws from, not its length: the KD student takes as
    # many steps as the baseline, so a KD gain is not bought with extra steps
    n_labelled = int((data.labels >= 0).sum())
    sch = Schedule.of(spec, n_labelled)
    steps_per_epoch = sch.steps_per_epoch
    opt, sched, body = _optimizer(model, spec, adapter, sch)
    history, best, start_epoch = _resume(ckpt_path, spec, resume, model, opt, sched, adapter, sch.epochs)

    pseudo = None
    if (data.labels < 0).any():
        t = data.views.logits.mean(1) if data.views is not None else data.teacher_logits
        pseudo = t.argmax(1) if t is not None else None
    weights = _sample_weights(data.labels, spec.balance, pseudo)
    ce_offset = None
    if spec.logit_adjust:
        prior = sampled_prior(data.labels, weights, data.num_classes)
        ce_offset = (spec.logit_adjust * prior.log()).to(device)
    rank, world = dist_.rank(), dist_.world_size()
    if spec.batch_size % world:
        raise EdgekdError(f"train.batch_size={spec.batch_size} must be divisible by the {world} processes")
    net: nn.Module = model
    if world > 1:  # gradients averaged over ranks; each rank sees batch_size/world images per step
        # find_unused_parameters: the head-only epochs leave the body without gradients
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=sch.head_epochs > 0,
        )
    workers = loader_workers(num_workers, data.images)
    if workers != num_workers and rank == 0:
        log(f"{spec.name}: images decoded from the files (data.cache=none): {workers} DataLoader worker(s) decode them")
    val_workers = loader_workers(num_workers, data.val_x)
    bar = progress(
        None,
        desc=f"train {spec.name}",
        total=sch.total_steps,
        unit="step",
        initial=start_epoch * steps_per_epoch,
    )
    stopped = None
    try:
        for epoch in range(start_epoch, sch.epochs):
            stopped = should_stop(history, best, spec, steps_per_epoch)
            if stopped:
                log(f"{spec.name}: stopped after epoch {epoch}/{sch.epochs}: {stopped}")
                break
            t_epoch = time.time()
            es = _epoch_seed(spec.seed, epoch)
            torch.manual_seed(es + rank)  # dropout and anything else on the global RNG
            random.seed(es)
            g = torch.Generator().manual_seed(es)
            head_only = epoch < sch.head_epochs
            for p in body:
                p.requires_grad_(not head_only)
            model.train()
            order = (
                torch.multinomial(weights, n, replacement=True, generator=g)
                if spec.balance
                else torch.randperm(n, generator=g)
            )
            batches = EpochBatches(
                data, order, spec.batch_size, steps_per_epoch, spec.crop_scale, es, spec.mixup, rank, world
            )
            loader = torch.utils.data.DataLoader(
                batches,
                batch_size=None,
                shuffle=False,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            tl, tc, tn = _train_epoch(
                net, spec, data, loader, device, opt, sched, teacher, hooks, adapter, epoch, bar, ce_offset
            )
            rec = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch,
                "train_loss": tl,
                "train_accuracy": tc / max(1, tn),
                "lr": sched.get_last_lr()[0],
                "train_seconds": round(time.time() - t_epoch, 2),
            }
            if data.val_x is not None and len(data.val_x):
                vl = predict_logits(
                    model, data.val_x, device=str(device), channels_last=spec.channels_last, num_workers=val_workers
                )
                rec["val_accuracy"] = (vl.argmax(1) == data.val_y).float().mean().item()
                rec["val_loss"] = F.cross_entropy(vl, data.val_y).item()
                if improved(rec, best):
                    best = {
                        "acc": rec["val_accuracy"],
                        "loss": rec["val_loss"],
                        "epoch": epoch + 1,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    }
            rec["elapsed_seconds"] = round(
                (history[-1]["elapsed_seconds"] if history else 0) + time.time() - t_epoch, 2
            )
            history.append(rec)
            if rank == 0:
                tracking.epoch_end(spec.name, rec)
            bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{rec.get('val_accuracy', float('nan')):.3f}")
            ck = {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "rng": {"torch": torch.get_rng_state()},
                "fingerprint": spec.fingerprint,
                "adapter": adapter.state_dict() if adapter is not None else None,
            }
            if rank == 0:  # one writer; every rank holds the same weights
                with atomic_path(ckpt_path) as tmp:
                    torch.save(ck, tmp)
    finally:
        bar.close()
        for h in hooks:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(True)

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.to(memory_format=torch.contiguous_format)
    result = TrainResult(
        history=history,
        best_epoch=best["epoch"] if best["state"] is not None else len(history),
        best_val_accuracy=best["acc"],
        seconds=time.time() - t0,
        resumed_from=start_epoch,
        steps=len(history) * steps_per_epoch,
        epochs_planned=sch.epochs,
        stopped=stopped,
    )
    if rank == 0:
        atomic_write_json(
            out / "history.json",
            {
                "history": history,
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "world_size": world,
                "steps": result.steps,
                "steps_per_epoch": steps_per_epoch,
                "epochs_planned": sch.epochs,
                "stopped": result.stopped,
            },
        )
    return result
