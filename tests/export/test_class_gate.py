"""The per-class recall gate (gate.max_class_recall_drop) on synthetic logits: an artifact that erases a
class fails and the reason names the class; one flipped image of a small class does not."""

from __future__ import annotations

import numpy as np

from edgekd.export.parity import apply_gate, class_recall_gate, parity_metrics

LABELS = ["ok", "crack", "rare"]


def _logits(pred: list[int]) -> np.ndarray:
    lg = np.zeros((len(pred), 3), np.float32)
    lg[np.arange(len(pred)), pred] = 5.0
    return lg


def test_an_artifact_that_drops_a_class_fails_naming_it():
    y = np.array([0] * 10 + [1] * 6 + [2] * 4)
    student = _logits(list(y))  # the float student is right everywhere
    artifact = _logits([0] * 10 + [1] * 6 + [0] * 4)  # ... the artifact never answers "rare"
    m = parity_metrics(student, artifact, y)
    assert m["per_class_recall"] == [1.0, 1.0, 0.0] and m["student_per_class_recall"] == [1.0, 1.0, 1.0]
    assert m["class_support"] == [10, 6, 4] and m["agreement"] == 0.8
    status, why = apply_gate(m, {"min_agreement": 0.5, **class_recall_gate(10.0, LABELS)})
    assert status == "failed"
    assert why == ["class 'rare' recall 100.0% -> 0.0% (4 of 4 images lost, -100.0 points > 10)"]
    assert apply_gate(m, {"min_agreement": 0.5, **class_recall_gate(None, LABELS)}) == ("passed", [])


def test_one_flipped_image_of_a_small_class_is_not_an_erased_class():
    y = np.array([0] * 10 + [1] * 6 + [2] * 4)
    student = _logits(list(y))
    one = _logits([0] * 10 + [1] * 6 + [0, 2, 2, 2])  # 1 of 4: 25 points, but one image
    assert apply_gate(parity_metrics(student, one, y), class_recall_gate(10.0, LABELS)) == ("passed", [])
    two = _logits([0] * 10 + [1] * 6 + [0, 0, 2, 2])  # 2 of 4: 50 points and two images
    status, why = apply_gate(parity_metrics(student, two, y), class_recall_gate(10.0, LABELS))
    assert status == "failed" and why[0].startswith("class 'rare' recall 100.0% -> 50.0% (2 of 4 images lost")
    # an artifact better than the student on a class is no failure
    better = parity_metrics(_logits([0] * 10 + [1] * 6 + [0, 0, 2, 2]), student, y)
    assert apply_gate(better, class_recall_gate(0.0, LABELS)) == ("passed", [])
