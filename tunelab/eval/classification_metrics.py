"""Classification metrics, computed by scikit-learn (never re-implemented here)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> dict[str, Any]:
    labels = list(range(num_labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def confusion_table(matrix: list[list[int]], label_names: list[str]) -> str:
    """Markdown table: rows are true labels, columns predictions."""
    header = "| true \\ predicted | " + " | ".join(label_names) + " |"
    rule = "|---" * (len(label_names) + 1) + "|"
    rows = [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(label_names, matrix,
                                                                                         strict=True)]
    return "\n".join([header, rule, *rows])
