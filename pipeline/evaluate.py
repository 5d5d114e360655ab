"""Classification metrics on held-out data, and the accuracy-gap gate."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, classes: list[str], reference: np.ndarray | None = None
) -> dict:
    """accuracy, macro-F1, per-class recall, confusion matrix, ECE, and top-1 agreement with `reference` logits."""
    k = len(classes)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    out = {
        "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall)},
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(softmax(logits), labels),
        "num_images": int(len(labels)),
    }
    if reference is not None:
        out["agreement_teacher"] = float((reference.argmax(1) == pred).mean())
    return out


def accuracy_gap_gate(teacher_acc: float, student_acc: float, max_drop_points: float) -> dict:
    drop = (teacher_acc - student_acc) * 100
    return {
        "name": "max_accuracy_drop",
        "limit_points": max_drop_points,
        "value_points": round(drop, 2),
        "passed": bool(drop <= max_drop_points),
        "message": f"student trails teacher by {drop:.2f} points (limit {max_drop_points:g})",
    }


def majority_share(labels: np.ndarray, num_classes: int) -> float:
    """The accuracy of always answering the commonest class (>= chance, 1/k, on balanced data)."""
    if not len(labels):
        return 0.0
    return float(np.bincount(labels, minlength=num_classes).max() / len(labels))


def collapse_gate(name: str, metrics: dict, labels: np.ndarray, num_classes: int, margin_points: float) -> dict:
    """Fails when a model is no better than answering the commonest class (or chance): it learned nothing
    a user could ship, even if its accuracy looks respectable on imbalanced data."""
    floor = max(1.0 / num_classes, majority_share(labels, num_classes))
    acc = float(metrics["accuracy"])
    margin = (acc - floor) * 100
    passed = margin >= margin_points
    predicted = int(np.count_nonzero(np.asarray(metrics["confusion_matrix"]).sum(0)))
    msg = (
        f"{name} accuracy {acc:.1%} is {margin:+.1f} points from the majority-class share / chance {floor:.1%} "
        f"(needs +{margin_points:g}); macro-F1 {metrics['macro_f1']:.2f}"
    )
    if not passed:
        msg += "; it has collapsed to the commonest classes: train longer (train.min_steps), check the data"
    return {
        "name": f"{name}_above_majority",
        "limit_points": margin_points,
        "value_points": round(margin, 2),
        "floor": round(floor, 4),
        "classes_predicted": predicted,
        "passed": bool(passed),
        "message": msg,
    }


# Fidelity (Stanton et al. 2021, "Does knowledge distillation really work?"): a student that does not match its
# teacher on the very images it was trained on has an optimisation problem, which more data cannot fix; one that
# matches on train but not on test needs more (diverse) distillation data, which longer training cannot fix.
FIDELITY_IMAGES = 2000  # training images the fidelity check predicts (evenly spaced): +-1 pt on the agreement
UNDERFIT_AGREEMENT = 0.90  # below this train agreement the student has not learnt its teacher
FIDELITY_GAP = 0.10  # train minus test agreement above this: the student learnt the training images only


def fidelity_sample(n: int, limit: int = FIDELITY_IMAGES) -> np.ndarray:
    """Indices of at most `limit` of n training images, evenly spaced (every class, no RNG)."""
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64)) if n else np.zeros(0, np.int64)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two logit arrays (share of rows with the same argmax)."""
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 0.0


def fidelity_advice(train_agreement: float, test_agreement: float, epochs: int | None = None) -> list[str]:
    """What the KD student's agreement with its teacher on train and on test says to change (means over seeds)."""
    if train_agreement < UNDERFIT_AGREEMENT:
        now = f", now {epochs}" if epochs else ""
        return [
            f"the KD student matches its teacher on only {train_agreement:.0%} of its own training images (test "
            f"{test_agreement:.0%}): it underfits the teacher, an optimisation problem. Try a larger student "
            f"(student.arch=mobilenet_v3_large, student.width_mult) or a longer schedule (train.epochs{now}); "
            "more data will not help until it fits"
        ]
    if train_agreement - test_agreement > FIDELITY_GAP:
        return [
            f"the KD student matches its teacher on {train_agreement:.0%} of its training images but on only "
            f"{test_agreement:.0%} of test images: it learnt the training images, not the teacher's function. Give "
            "it more diverse distillation data: data.unlabeled (teacher-labelled images), kd.cache_views, "
            "train.mixup"
        ]
    return []


def kd_advice(
    teacher: dict, student: dict, baseline: dict, student_val: float | None = None, baseline_val: float | None = None
) -> list[str]:
    """Plain-language findings about whether distillation could help and did, for the report and headline."""
    out = []
    t, s, b = (float(m["accuracy"]) for m in (teacher, student, baseline))
    if t <= b + 0.005:
        out.append(
            f"the teacher ({t:.1%}) is no better than the student trained on hard labels ({b:.1%}): this teacher "
            "cannot help. Use a stronger teacher, more teacher epochs (teacher.epochs / teacher.min_steps), or the "
            "teacher's own input size (data.image_size)"
        )
    if student_val is not None and baseline_val is not None and student_val < baseline_val:
        out.append(
            f"on the validation split the KD student ({student_val:.1%}) is below the hard-label baseline "
            f"({baseline_val:.1%}): do not ship it without the verdict over several seeds (--seeds 3)"
        )
    elif s < b:
        out.append(f"on the test split the KD student ({s:.1%}) is below the hard-label baseline ({b:.1%})")
    return out
