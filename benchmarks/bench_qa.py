"""tunelab vs HF Trainer + PEFT LoRA on extractive QA (SQuAD 2.0 format), side by side in one run.

Workload: MiniLM-L6, LoRA r16 alpha 32 on query/value (qa_outputs trained), the vendored SQuAD slice
(squad2_small, first `--n` / `--eval` rows after tunelab's own data.limit sampling, written to JSONL so
both sides read the same questions), windows of 192 tokens with a stride of 48, batch 16, lr 2e-3, one
epoch (--epochs), fp32 (--precision bf16: autocast on both sides), 2 threads.

The peer follows the transformers question-answering example (examples/pytorch/question-answering):
`prepare_train_features` (question/context pair, truncation="only_second", return_overflowing_tokens,
offset mapping, start/end token labels, [CLS] for answers outside the window), tuned as its best user
would: no padding at tokenisation + DataCollatorWithPadding (dynamic padding) + group_by_length
sampling. Its post-processing follows the example's `postprocess_qa_predictions` (n-best 20, max answer
length 30, null score = min over windows of the [CLS] score, null_score_diff_threshold 0). Both sides are
scored with tunelab.eval.squad_metrics; best_f1 (threshold tuned on the eval rows) compares them on equal
terms, f1 is each side's own thresholding (tunelab: tuned; peer: the example's fixed 0).

    python benchmarks/bench_qa.py                 # peer, then tunelab, each in its own process
    python benchmarks/bench_qa.py --rounds 2 --precision bf16
    python benchmarks/bench_qa.py --skip-peer
Needs `datasets` for the peer's Trainer (installed in the project venv).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"max_length": 192, "stride": 48, "rank": 16, "alpha": 32, "lr": 2e-3, "batch": 16, "threads": 2,
            "epochs": 1, "precision": "fp32"}


def matmul_rate(threads: int) -> float:
    """The machine's fp32 matmul GFLOP/s at the benchmark's thread count (benchmarks/machine.py)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import matmul_gflops

    torch.set_num_threads(threads)
    return matmul_gflops()


def write_rows(n: int, n_eval: int, folder: Path) -> tuple[Path, Path]:
    """The questions both sides use: tunelab's checked rows of the vendored slice."""
    from tunelab.config import DataConfig
    from tunelab.data.pairs import BadRows
    from tunelab.data.qa_rows import frame_rows, load_qa_frames

    train, evaluation, _ = load_qa_frames(DataConfig(dataset="squad2_small", limit=n, eval_limit=n_eval))
    paths = []
    for name, frame in (("train.jsonl", train), ("eval.jsonl", evaluation)):
        rows = frame_rows(frame, {}, name, BadRows())
        path = folder / name
        with open(path, "w", encoding="utf-8") as handle:
            for qid, q, c, a in zip(rows.ids, rows.questions, rows.contexts, rows.answers, strict=True):
                answers = {"text": [t for t, _ in a], "answer_start": [s for _, s in a]}
                handle.write(json.dumps({"id": qid, "question": q, "context": c, "answers": answers}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----- the peer: HF Trainer + PEFT with the question-answering example's preprocessing -----
def peer_train_features(tokenizer, rows: list[dict]) -> dict:
    s = SETTINGS
    enc = tokenizer([r["question"].lstrip() for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=s["max_length"], stride=s["stride"], return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        answers = rows[enc["overflow_to_sample_mapping"][i]]["answers"]
        if not answers["answer_start"]:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != 1:
            token_start += 1
        token_end = len(enc["input_ids"][i]) - 1
        while sequence_ids[token_end] != 1:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        while token_start < len(offsets) and offsets[token_start][0] <= start_char:
            token_start += 1
        starts.append(token_start - 1)
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        ends.append(token_end + 1)
    enc.pop("offset_mapping")
    enc.pop("overflow_to_sample_mapping")
    return {**enc, "start_positions": starts, "end_positions": ends}


def peer_eval_features(tokenizer, rows: list[dict]) -> tuple[dict, list[int], list[list]]:
    s = SETTINGS
    enc = tokenizer([r["question"].lstrip() for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=s["max_length"], stride=s["stride"], return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    example, offsets = [], []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        example.append(enc["overflow_to_sample_mapping"][i])
        offsets.append([o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])])
    enc.pop("offset_mapping")
    enc.pop("overflow_to_sample_mapping")
    return dict(enc), example, offsets


def peer_postprocess(rows, example, offsets, start_logits, end_logits, n_best=20, max_answer=30):
    """The example's postprocess_qa_predictions, version_2_with_negative, null_score_diff_threshold 0."""
    import numpy as np

    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for w, q in enumerate(example):
        s, e, offs = start_logits[w], end_logits[w], offsets[w]
        null[q] = min(null.get(q, float("inf")), float(s[0] + e[0]))
        for i in np.argsort(s)[-1:-n_best - 1:-1]:
            for j in np.argsort(e)[-1:-n_best - 1:-1]:
                if i >= len(offs) or j >= len(offs) or offs[i] is None or offs[j] is None:
                    continue
                if j < i or j - i + 1 > max_answer:
                    continue
                score = float(s[i] + e[j])
                if q not in best or score > best[q][0]:
                    best[q] = (score, rows[q]["context"][offs[i][0]:offs[j][1]])
    predictions, na_probs = {}, {}
    for q, row in enumerate(rows):
        if q not in best:  # no valid span in any window
            predictions[row["id"]], na_probs[row["id"]] = "", 1e9
            continue
        score, text = best[q]
        diff = null[q] - score
        predictions[row["id"]], na_probs[row["id"]] = ("" if diff > 0.0 else text), diff
    return predictions, na_probs


def run_peer(train_path: Path, eval_path: Path, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunelab.assets.models import resolve_model
    from tunelab.eval.squad_metrics import squad_v2_metrics

    s = SETTINGS
    torch.set_num_threads(s["threads"])
    torch.manual_seed(0)
    path = str(resolve_model("minilm").path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = get_peft_model(AutoModelForQuestionAnswering.from_pretrained(path),
                           LoraConfig(task_type=TaskType.QUESTION_ANS, r=s["rank"], lora_alpha=s["alpha"],
                                      lora_dropout=0.0, target_modules=["query", "value"]))
    train_rows, eval_rows = read_jsonl(train_path), read_jsonl(eval_path)
    features = Dataset.from_dict(peer_train_features(tokenizer, train_rows))
    args = TrainingArguments(output_dir=str(work / "peer"), per_device_train_batch_size=s["batch"],
                             per_device_eval_batch_size=64, num_train_epochs=s["epochs"], learning_rate=s["lr"],
                             bf16=s["precision"] == "bf16",
                             warmup_steps=round(0.06 * s["epochs"] * math.ceil(len(features) / s["batch"])),
                             weight_decay=0.01,
                             lr_scheduler_type="linear", save_strategy="no",
                             report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
                             logging_steps=10, train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    enc, example, offsets = peer_eval_features(tokenizer, eval_rows)
    collate = DataCollatorWithPadding(tokenizer)
    model.eval()
    starts, ends = [], []
    with torch.inference_mode():
        for first in range(0, len(enc["input_ids"]), 64):
            batch = collate([{k: enc[k][i] for k in enc} for i in range(first, min(first + 64, len(enc["input_ids"])))])
            out = model(**batch)
            for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
                starts.append(out.start_logits[row, :n].numpy())
                ends.append(out.end_logits[row, :n].numpy())
    predictions, na_probs = peer_postprocess(eval_rows, example, offsets, starts, ends)
    gold = {r["id"]: r["answers"]["text"] for r in eval_rows}
    metrics = squad_v2_metrics(gold, predictions, na_probs, float("inf"))
    return {"side": "HF Trainer + PEFT", "windows": s["epochs"] * len(features), "train_s": round(train_s, 2),
            "samples_per_s": round(s["epochs"] * len(features) / train_s, 3), "f1": round(metrics["f1"], 2),
            "best_f1": round(metrics["best_f1"], 2), "HasAns_f1": round(metrics.get("HasAns_f1", 0.0), 2),
            "NoAns_f1": round(metrics.get("NoAns_f1", 0.0), 2),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_tunelab(train_path: Path, eval_path: Path, work: Path) -> dict:
    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    s = SETTINGS
    config = validate({
        "name": "bench_qa", "task": "qa", "output_dir": str(work / "tunelab"),
        "model": {"name": "minilm", "max_length": s["max_length"]},
        "data": {"train": str(train_path), "eval": str(eval_path)},
        "qa": {"doc_stride": s["stride"]},
        "adapter": {"variant": "lora", "rank": s["rank"], "alpha": s["alpha"], "targets": ["query", "value"]},
        "train": {"lr": s["lr"], "batch_size": s["batch"], "epochs": s["epochs"], "precision": s["precision"],
                  "threads": s["threads"]},
        "eval": {"batch_size": 64},
    })
    summary = run_recipe(config)[0].summary
    m = summary["metrics"]
    return {"side": "tunelab", "windows": summary["train_samples"], "train_s": summary["train_seconds"],
            "samples_per_s": summary["samples_per_s"], "f1": round(m["f1"], 2), "best_f1": round(m["best_f1"], 2),
            "HasAns_f1": round(m.get("HasAns_f1", 0.0), 2), "NoAns_f1": round(m.get("NoAns_f1", 0.0), 2),
            "trainable": summary["trainable_params"]}


def child(side: str, train_path: Path, eval_path: Path, work: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--train", str(train_path), "--eval-file",
                          str(eval_path), "--work", str(work), "--epochs", str(SETTINGS["epochs"]),
                          "--precision", SETTINGS["precision"]], capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="both sides (the peer: TrainingArguments(bf16=True), i.e. CPU autocast)")
    parser.add_argument("--rounds", type=int, default=1, help="peer, tunelab, peer, tunelab, ...")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--side", choices=["peer", "tunelab"], help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--eval-file", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    SETTINGS.update(epochs=args.epochs, precision=args.precision)
    if args.side:
        run = run_peer if args.side == "peer" else run_tunelab
        print("RESULT " + json.dumps(run(Path(args.train), Path(args.eval_file), Path(args.work))))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-qa-"))
    train_path, eval_path = write_rows(args.n, args.eval, work)
    print(f"matmul fp32, {SETTINGS['threads']} threads: {matmul_rate(SETTINGS['threads']):.1f} GFLOP/s")
    ratios = []
    for round_ in range(args.rounds):  # alternating sides: a drifting machine speed hits both alike
        results = [] if args.skip_peer else [child("peer", train_path, eval_path, work)]
        results.append(child("tunelab", train_path, eval_path, work))
        print(f"round {round_ + 1}, settings: {SETTINGS}, {args.n} train / {args.eval} eval questions of squad2_small")
        for r in results:
            print(f"{r['side']:>18}: {r['samples_per_s']:.2f} windows/s ({r['windows']} windows, "
                  f"{r['train_s']:.1f} s), F1 {r['f1']:.1f} (best_f1 {r['best_f1']:.1f}, HasAns {r['HasAns_f1']:.1f}, "
                  f"NoAns {r['NoAns_f1']:.1f}), {r['trainable']:,} trainable")
        if len(results) == 2:
            ratios.append(results[1]["samples_per_s"] / results[0]["samples_per_s"])
            print(f"ratio tunelab / peer: {ratios[-1]:.2f}x")
    if len(ratios) > 1:
        print(f"ratios over {len(ratios)} rounds: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")
    print(f"matmul fp32 after: {matmul_rate(SETTINGS['threads']):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
