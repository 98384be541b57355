"""Hand-written run dirs (summary.json, config.yaml, metrics.jsonl, ...) for report tests: no training."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

BASE_CONFIG: dict[str, Any] = {
    "name": "fab", "description": "", "task": "classification", "output_dir": "runs",
    "model": {"name": "minilm", "max_length": 128},
    "adapter": {"variant": "lora", "rank": 8, "alpha": 16.0, "targets": ["query", "value"], "layers": []},
    "train": {"lr": 0.001, "batch_size": 32, "seed": 0},
    "eval": {"metric": "accuracy"},
    "variants": {},
}


def make_run(folder: Path, label: str, metrics: dict[str, Any], config: dict[str, Any] | None = None,
             task: str = "classification", steps: int = 4, files: dict[str, Any] | None = None,
             trainable: int = 1000) -> Path:
    """Write one finished run dir; `config` is {dotted.key: value} on top of BASE_CONFIG."""
    run_dir = Path(folder) / label
    run_dir.mkdir(parents=True, exist_ok=True)
    raw = copy.deepcopy(BASE_CONFIG)
    raw["task"] = task
    for key, value in (config or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    history = [{"step": s, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, steps + 1)]
    history += [{"step": s, "eval": {k: v for k, v in metrics.items() if isinstance(v, float)}}
                for s in range(2, steps + 1, 2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    summary = {"label": label, "recipe": raw["name"], "task": task, "variant": raw["adapter"]["variant"],
               "trainable_params": trainable, "total_params": 10 * trainable, "metrics": metrics, "steps": steps,
               "samples_per_s": 100.0, "train_seconds": 3.5, "wall_seconds": 5.25}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    for name, content in (files or {}).items():
        path = run_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in content) if name.endswith(".jsonl")
                            else json.dumps(content))
    return run_dir


def classification_metrics(accuracy: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "mcc": accuracy - 0.1,
            "confusion_matrix": [[3, 1], [1, 3]]}


def adapter_stats(scaled: bool = True) -> list[dict[str, Any]]:
    stats = []
    for layer in range(2):
        for kind in ("attention.self.query", "attention.self.value"):
            record = {"name": f"bert.encoder.layer.{layer}.{kind}", "layer": layer, "kind": kind,
                      "variant": "dora_scaled" if scaled else "lora", "rank": 4,
                      "A_norm": 1.5 + layer, "B_norm": 0.1 * (layer + 1)}
            if scaled:
                record["scale"] = [1.9, 2.0, 2.1, 2.2]
            stats.append(record)
    return stats
