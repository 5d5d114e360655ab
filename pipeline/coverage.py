"""Does the distillation data cover the test data? (The classic mistake of distilling without diverse data.)

Per split (train, data.unlabeled, test): the class shares (true labels; the teacher's for unlabelled images), the
teacher's predicted shares, its mean confidence (top softmax probability) and the share of images it is unsure of
(confidence < 0.5). Flags name what the training data does not cover: a test set the teacher is much less sure
of than the training set, and classes that are much rarer in training than in test.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# A test set whose mean teacher confidence is this far below the training set's looks unlike it to the teacher.
CONFIDENCE_DROP = 0.10
# A class whose test share is this many times its share of the distillation data (and at least MIN_SHARE).
RARE_RATIO = 2.0
MIN_SHARE = 0.05


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def split_coverage(logits: np.ndarray, labels: Optional[np.ndarray], classes: list[str]) -> dict:
    p = _softmax(np.asarray(logits, dtype=np.float64))
    conf = p.max(1)
    pred = p.argmax(1)
    k = len(classes)
    n = len(p)
    out = {
        "images": int(n),
        "teacher_confidence_mean": round(float(conf.mean()), 4) if n else None,
        "teacher_unsure_share": round(float((conf < 0.5).mean()), 4) if n else None,
        "teacher_class_share": dict(zip(classes, (np.bincount(pred, minlength=k) / max(1, n)).round(4).tolist())),
    }
    if labels is not None:
        out["class_share"] = dict(zip(classes, (np.bincount(labels, minlength=k) / max(1, n)).round(4).tolist()))
    return out


def coverage_report(
    classes: list[str],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    unlabeled: Optional[np.ndarray] = None,
) -> dict:
    """(logits, labels) of train and test, the logits of the unlabelled images; -> report.json `coverage`."""
    rep = {"train": split_coverage(*train, classes), "test": split_coverage(*test, classes)}
    if unlabeled is not None and len(unlabeled):
        rep["unlabeled"] = split_coverage(unlabeled, None, classes)
    flags = []
    tr, te = rep["train"], rep["test"]
    if tr["teacher_confidence_mean"] is not None and te["teacher_confidence_mean"] is not None:
        drop = tr["teacher_confidence_mean"] - te["teacher_confidence_mean"]
        if drop > CONFIDENCE_DROP:
            flags.append(
                f"the teacher is much less sure on test than on training images (mean confidence "
                f"{te['teacher_confidence_mean']:.2f} vs {tr['teacher_confidence_mean']:.2f}): the test data may lie "
                "outside what the training data covers; add training (or data.unlabeled) images like the test images"
            )
    # the distillation data's class mix: labelled shares plus the teacher's view of the unlabelled images
    n_tr = tr["images"]
    n_un = rep.get("unlabeled", {}).get("images", 0)
    for c in classes:
        share = tr["class_share"][c] * n_tr
        if n_un:
            share += rep["unlabeled"]["teacher_class_share"][c] * n_un
        share /= max(1, n_tr + n_un)
        ts = te["class_share"][c]
        if ts >= MIN_SHARE and ts > RARE_RATIO * share:
            flags.append(
                f"class {c} is {ts:.1%} of the test split but {share:.1%} of the distillation data: add {c} images"
            )
    rep["flags"] = flags
    return rep
