import math

import numpy as np
import pytest

from tunelab.eval.classification_metrics import classification_metrics, confusion_table


def test_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-class F1: class 0 = 0.5, class 1 = 0.8, class 2 = 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # balanced classes
    # multiclass MCC from the confusion matrix: (c*s - sum p_k t_k) / sqrt((s^2 - sum p^2)(s^2 - sum t^2))
    assert m["mcc"] == pytest.approx((4 * 6 - (2 * 2 + 3 * 2 + 1 * 2)) / math.sqrt((36 - 14) * (36 - 12)))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_missing_class_in_predictions_keeps_matrix_shape():
    m = classification_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]), 4)
    assert len(m["confusion_matrix"]) == 4 and m["accuracy"] == pytest.approx(1 / 3)


def test_confusion_table_markdown():
    table = confusion_table([[3, 1], [0, 4]], ["neg", "pos"])
    assert table.splitlines()[2] == "| neg | 3 | 1 |"
