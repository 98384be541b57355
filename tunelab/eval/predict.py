"""`tunelab predict RUN`: a finished run's model on new inputs, one JSON line per input.

    tunelab predict RUN --question Q --context C     extractive QA run: answer, character span, score
    tunelab predict RUN --text T                     classification run: label and class probabilities
    tunelab predict RUN --file INPUTS.jsonl          one input per line ({question, context} or {text})

The run is reloaded with `tunelab.models.artifact.load_run_model` (the loader eval and export use), so
predictions come from exactly the trained weights and, for QA, the no-answer threshold tuned during
training (task_state.json): below it the answer is "" (no answer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

BATCH = 32


def read_inputs(path: Path) -> list[dict[str, Any]]:
    """JSONL rows; a broken line is a one-line error naming the file and line."""
    if not path.is_file():
        raise TunelabError(f"--file: {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TunelabError(f"{path}:{number}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise TunelabError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def field(row: dict[str, Any], key: str, number: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TunelabError(f"row {number}: '{key}' is missing or empty")
    return value


def predict_qa(loaded, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    questions = [field(row, "question", i).strip() for i, row in enumerate(rows)]
    contexts = [field(row, "context", i) for i, row in enumerate(rows)]
    return loaded.task.predict_rows(loaded.model, loaded.tokenizer, questions, contexts)


def classification_text(row: dict[str, Any], fields: list[str], number: int) -> str:
    if "text" in row:
        return field(row, "text", number)
    present = [str(row[f]) for f in fields if f in row]
    if not present:
        raise TunelabError(f"row {number}: give 'text'" + (f" or {', '.join(fields)}" if fields else ""))
    return " ".join(present)


def predict_classification(loaded, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """softmax(logits) per text, tokenised as in training (truncated to model.max_length)."""
    import torch  # here, not at import: the CLI builds its parser without the training stack

    texts = [classification_text(row, list(loaded.config.data.text_fields), i) for i, row in enumerate(rows)]
    names = loaded.task.label_names
    device = next(loaded.model.parameters()).device
    out = []
    for first in range(0, len(texts), BATCH):
        encoded = loaded.tokenizer(texts[first:first + BATCH], truncation=True, padding=True,
                                   max_length=loaded.config.model.max_length, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            probabilities = torch.softmax(loaded.model(**inputs).logits.float(), dim=-1).cpu()
        for row in probabilities:
            best = int(row.argmax())
            label = names[best] if best < len(names) else str(best)
            out.append({"label": label, "probabilities": {
                (names[k] if k < len(names) else str(k)): float(p) for k, p in enumerate(row)}})
    return out


PREDICTORS = {"qa": predict_qa, "classification": predict_classification}


def predict_run(run_dir: Path | str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One output dict per input row."""
    from tunelab.models.artifact import load_run_model

    loaded = load_run_model(run_dir)
    predictor = PREDICTORS.get(loaded.config.task)
    if predictor is None:
        raise TunelabError(f"{run_dir}: tunelab predict serves {', '.join(PREDICTORS)} runs, not "
                           f"{loaded.config.task} (use tunelab eval for language models)")
    if not rows:
        raise TunelabError("tunelab predict: no input (give --question/--context, --text or --file)")
    return predictor(loaded, rows)


def inputs_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.file:
        if args.question or args.context or args.text:
            raise TunelabError("--file: give either --file or --question/--context/--text, not both")
        return read_inputs(Path(args.file))
    if args.text is not None:
        return [{"text": args.text}]
    if args.question is not None or args.context is not None:
        if args.question is None or args.context is None:
            raise TunelabError("--question and --context go together")
        return [{"question": args.question, "context": args.context}]
    return []


def cmd_predict(args: argparse.Namespace) -> int:
    from tunelab.runner import quiet_transformers

    quiet_transformers()
    rows = inputs_from_args(args)
    results = predict_run(args.run, rows)
    lines = "".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results)
    if args.out:
        from tunelab.rundir import atomic_write_text

        atomic_write_text(Path(args.out), lines)
        print(f"{len(results)} predictions: {args.out}")
    else:
        print(lines, end="")
    return 0


def add_parsers(verbs: Any) -> None:
    """Add the `predict` verb to cli.py's subparsers."""
    parser = verbs.add_parser("predict", help="a finished QA or classification run on new inputs (JSON lines out)")
    parser.add_argument("run", help="run folder (config.yaml + artifact/)")
    parser.add_argument("--question", help="QA: the question")
    parser.add_argument("--context", help="QA: the passage to answer from")
    parser.add_argument("--text", help="classification: the text to label")
    parser.add_argument("--file", help="JSONL inputs: {question, context} or {text} per line")
    parser.add_argument("--out", help="write the JSON lines here instead of stdout")
    parser.set_defaults(handler=cmd_predict)
