"""Named datasets: vendored slices (always there) and ../shared/data copies (benchmarks), each for a
task that trains on it (classification, sft, qa, lm, grpo; DPO reads the sft preference sets).

`resolve_dataset(name)` returns file paths plus the column roles a task needs, so recipes can say
`data.dataset: ag_news_demo` instead of repeating paths and column mappings. Hub ids (`owner/name`) and
`datasets` folders are not registered: tunelab.data.tables reads them like a data.train file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError

VENDORED = Path(__file__).resolve().parent.parent / "data" / "vendored"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # the task that trains on it (a tunelab.tasks.registry name)
    train: str  # "vendored:<file>" or "shared:<relative path>"; several joined by "+" are concatenated
    eval: str | None = None
    text_fields: tuple[str, ...] = ("text",)
    label: str = "label"
    label_names: tuple[str, ...] = ()
    eval_size: int | None = None  # split this many eval rows off train when `eval` is None
    columns: dict[str, str] = field(default_factory=dict)  # SFT roles -> columns (prompt, completion, ...)
    sft_format: str = "auto"
    hub: str | None = None  # where the full set lives on the hub (provenance; not loaded from here)
    description: str = ""


AG_NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
GSM8K = {"prompt": "question", "completion": "answer"}
EN_ES = {"source": "en", "target": "es"}
HH = {"prompt": "prompt", "completion": "chosen_response"}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("ag_news_demo", "classification", "vendored:ag_news_test.csv.gz", None,
                    ("title", "description"), "label", AG_NEWS_LABELS, eval_size=2000, hub="fancyzhx/ag_news",
                    description="AG News official test split, stratified 5,600 train / 2,000 eval (seed 0)"),
        DatasetSpec("ag_news", "classification", "shared:ag_news/test.csv.gz", None,
                    ("title", "description"), "label", AG_NEWS_LABELS, eval_size=2000, hub="fancyzhx/ag_news",
                    description="same split from ../shared/data (benchmarks)"),
        DatasetSpec("imdb", "classification", "shared:imdb/train.csv.gz", "shared:imdb/test.csv.gz",
                    ("text",), "label", ("negative", "positive"), hub="stanfordnlp/imdb",
                    description="IMDb 25k/25k from ../shared/data"),
        DatasetSpec("imdb_small", "classification", "vendored:imdb_train.csv.gz", "vendored:imdb_test.csv.gz",
                    ("text",), "label", ("negative", "positive"), description="IMDb 1,000 / 500 vendored slice"),
        DatasetSpec("cola", "classification", "vendored:cola_train.csv.gz", "vendored:cola_dev.csv.gz",
                    ("sentence",), "label", ("unacceptable", "acceptable"), hub="nyu-mll/glue",
                    description="CoLA in-domain train / dev"),
        DatasetSpec("sst2", "classification", "shared:sst2/train.csv.gz", "shared:sst2/dev.csv.gz",
                    ("sentence",), "label", ("negative", "positive"), description="SST-2 67k / 872"),
        DatasetSpec("sst2_small", "classification", "vendored:sst2_train.csv.gz", "vendored:sst2_dev.csv.gz",
                    ("sentence",), "label", ("negative", "positive"), description="SST-2 4,000 / 872 vendored"),
        DatasetSpec("gsm8k_small", "sft", "vendored:gsm8k_train.jsonl.gz", "vendored:gsm8k_test.jsonl.gz",
                    columns=GSM8K, sft_format="prompt_completion", description="GSM8K 600 / 100 vendored slice"),
        DatasetSpec("python_challenges", "sft", "vendored:python_challenges.jsonl.gz", None, eval_size=4,
                    columns={"prompt": "request", "completion": "response"}, sft_format="prompt_completion",
                    description="BIG-bench python_programming_challenge: 28 Python problems with solutions, "
                                "24 / 4 (HumanEval schema; also a --problems file)"),
        DatasetSpec("gsm8k", "sft", "shared:gsm8k/train.jsonl.gz", "shared:gsm8k/test.jsonl.gz", columns=GSM8K,
                    sft_format="prompt_completion", hub="openai/gsm8k", description="GSM8K 7,473 / 1,319"),
        DatasetSpec("spa_eng_small", "sft", "vendored:spa_eng_pairs.jsonl.gz", None, eval_size=300,
                    columns=EN_ES, sft_format="pairs", description="English-Spanish pairs, 3,000 vendored"),
        DatasetSpec("spa_eng", "sft", "shared:spa_eng/pairs.jsonl.gz", None, eval_size=1000, columns=EN_ES,
                    sft_format="pairs", description="English-Spanish pairs, 50,000 (Tatoeba)"),
        DatasetSpec("hh_helpful_small", "sft", "vendored:hh_helpful_base.jsonl.gz", None, eval_size=50,
                    columns=HH, sft_format="hh", description="HH-RLHF helpful-base: dialogue -> chosen, 400"),
        DatasetSpec("hh_rlhf", "sft", "+".join(f"shared:hh_rlhf/{part}_test.jsonl.gz" for part in (
                        "harmless_base", "helpful_online", "helpful_rejection_sampled")),
                    "shared:hh_rlhf/helpful_base_test.jsonl.gz", columns=HH, sft_format="hh", hub="Anthropic/hh-rlhf",
                    description="HH-RLHF: three test splits for training, helpful-base for eval"),
        DatasetSpec("squad2_small", "qa", "vendored:squad2_train.jsonl.gz", "vendored:squad2_dev.jsonl.gz",
                    hub="rajpurkar/squad_v2", description="SQuAD v1.1 dev split by article, 3,200 / 1,000 rows "
                    "with constructed unanswerable questions (SQuAD 2.0 format)"),
        DatasetSpec("hh_helpful", "sft", "shared:hh_rlhf/helpful_base_test.jsonl.gz", None, eval_size=300,
                    columns=HH, sft_format="hh", hub="Anthropic/hh-rlhf",
                    description="HH-RLHF helpful-base test pairs (2,354)"),
        DatasetSpec("causal_judgment", "grpo", "vendored:causal_judgment.jsonl.gz", None, eval_size=40,
                    columns={"prompt": "prompt", "answer": "answer"}, hub="lukaemon/bbh",
                    description="BIG-bench causal_judgment (190 yes/no questions), 150 / 40 stratified"),
        DatasetSpec("gsm8k_rl_small", "grpo", "vendored:gsm8k_train.jsonl.gz", "vendored:gsm8k_test.jsonl.gz",
                    columns={"prompt": "question", "answer": "answer"}, description="GSM8K 600 / 100 vendored "
                    "slice as prompts with numeric answers"),
        DatasetSpec("gsm8k_rl", "grpo", "shared:gsm8k/train.jsonl.gz", "shared:gsm8k/test.jsonl.gz",
                    columns={"prompt": "question", "answer": "answer"}, hub="openai/gsm8k",
                    description="GSM8K 7,473 / 1,319 as prompts with numeric answers"),
        DatasetSpec("tinyshakespeare", "lm", "vendored:tinyshakespeare.txt.gz",
                    description="tiny Shakespeare, 1.1M characters (val: a block of data.eval_fraction by position)"),
    ]
}


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (CI, benchmarks), or $TUNELAB_SHARED_DATA."""
    env = os.environ.get("TUNELAB_SHARED_DATA")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def locate_all(refs: str, dataset: str) -> list[Path]:
    """Every file of a (possibly "+"-joined) reference."""
    return [locate(ref, dataset) for ref in refs.split("+")]


def locate(ref: str, dataset: str) -> Path:
    kind, _, rel = ref.partition(":")
    if kind == "vendored":
        return VENDORED / rel
    base = shared_data_dir()
    if base is None:
        raise TunelabError(
            f"dataset '{dataset}' needs ../shared/data/{rel}, which is not on this machine "
            f"(set TUNELAB_SHARED_DATA, or use a vendored set: {', '.join(vendored_names())})")
    return base / rel


def vendored_names() -> list[str]:
    return [name for name, spec in DATASETS.items() if spec.train.startswith("vendored:")]


def resolve_dataset(name: str) -> DatasetSpec:
    spec = DATASETS.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(DATASETS)})"
        raise TunelabError(f"data.dataset: unknown dataset '{name}'{hint}; a hub dataset id looks like owner/name")
    return spec


def list_datasets() -> list[dict[str, str]]:
    """`tunelab data`: the registered sets, whether this machine has their files."""
    rows = []
    for spec in DATASETS.values():
        available = spec.train.startswith("vendored:") or shared_data_dir() is not None
        rows.append({"name": spec.name, "task": spec.task, "available": "yes" if available else "no (needs shared)",
                     "description": spec.description})
    return rows
