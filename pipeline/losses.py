"""Distillation losses: Hinton KD, DKD, and hook-based intermediate-feature matching."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE for int labels or probability targets (mixup), averaged over the labelled rows: label -1 (or an
    all-zero target row) marks an unlabelled image (data.unlabeled), which the hard-label term skips."""
    if target.dtype in (torch.int64, torch.int32):
        if not (target >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing, ignore_index=-1)
    labelled = target.sum(1) > 0.5
    if not labelled.any():
        return logits.sum() * 0.0
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / logits.shape[1]
    return -(target * F.log_softmax(logits, dim=1)).sum(1)[labelled].mean()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
    ce_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(y, s + ce_offset), batch-mean.

    `teacher_probs` is softmax(teacher_logits / T) (probabilities so mixup can mix them);
    T^2 keeps the soft term's gradient scale independent of T (Hinton et al. 2015). `ce_offset`
    (tau * log prior) makes the hard-label term logit-adjusted (Menon et al. 2021); the soft term
    matches the teacher as it is."""
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_ps, teacher_probs, reduction="batchmean")
    ce = soft_cross_entropy(
        student_logits if ce_offset is None else student_logits + ce_offset, target, label_smoothing
    )
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): CE + alpha*TCKD + beta*NCKD, hard labels only."""
    gt = F.one_hot(target, student_logits.shape[1]).bool()
    ps = F.softmax(student_logits / temperature, dim=1)
    pt = F.softmax(teacher_logits / temperature, dim=1)
    # Target-class KD: binary (target vs rest) distributions.
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1).clamp_min(1e-12)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * temperature**2
    # Non-target KD: distributions over the other classes only (target masked out).
    big = 1000.0
    log_ps_nt = F.log_softmax(student_logits / temperature - big * gt, dim=1)
    pt_nt = F.softmax(teacher_logits / temperature - big * gt, dim=1)
    nckd = F.kl_div(log_ps_nt, pt_nt, reduction="batchmean") * temperature**2
    return F.cross_entropy(student_logits, target) + alpha * tckd + beta * nckd


class FeatureHook:
    """Captures a named module's output with a forward hook (no model edits)."""

    def __init__(self, model: nn.Module, layer: str):
        modules = dict(model.named_modules())
        if layer not in modules:
            import difflib

            from edgekd.pipeline.errors import EdgekdError

            close = difflib.get_close_matches(layer, list(modules), n=3)
            raise EdgekdError(
                f"no layer {layer!r} in {type(model).__name__}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        self.output: torch.Tensor | None = None
        self.handle = modules[layer].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.output = output

    def remove(self) -> None:
        self.handle.remove()


class FeatureAdapter(nn.Module):
    """Learned 1x1 conv from student channels to teacher channels; spatial size matched by pooling."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        fs = self.proj(fs)
        if fs.shape[-2:] != ft.shape[-2:]:
            fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
        return F.mse_loss(fs, ft.detach())
