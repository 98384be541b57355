"""The run config: one frozen, validated section per concern (model, data, adapter, train, eval).

A recipe's YAML maps one-to-one onto `RunConfig`; unknown keys and wrong types are rejected by
pydantic and reported by `tunelab.recipes` as one line naming the dotted key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunelab.adapters.spec import AdapterConfig, Frozen
from tunelab.tasks.registry import TASK_REGISTRY


class ModelConfig(Frozen):
    name: str = Field(default="minilm", description="packaged alias, hub id or local directory")
    revision: str | None = None
    # a model or tokenizer with its own Python code (auto_map in its config.json/tokenizer_config.json)
    # imports that code when loaded; off by default, so a downloaded folder never runs code unasked
    trust_remote_code: bool = Field(
        default=False, description="allow loading a model/tokenizer that runs its own Python code from its "
        "folder or hub repo (read that code first)")
    max_length: int = Field(default=128, ge=8, le=8192)
    quantize: Literal["none", "4bit", "8bit"] = Field(
        default="none", description="load the frozen base quantised (bitsandbytes, CPU or CUDA) for QLoRA")
    arch: dict[str, Any] | None = Field(
        default=None, description="from-scratch architecture {type: NAME, ...its settings}: no pretrained "
        "weights, no hub; the tokenizer is built from the training data")
    init_from: str | None = Field(
        default=None, description="a finished run folder whose trained weights this run starts from (its "
        "adapters carried over, same adapter settings); a stage chain sets it for every stage after the first")


class DataConfig(Frozen):
    dataset: str | None = Field(default=None, description="registered dataset name (see `tunelab data`)")
    train: str | None = Field(default=None, description="path of a CSV/JSONL/Parquet/text file")
    eval: str | None = None
    columns: dict[str, str] = Field(
        default_factory=dict, description="role -> column in the file, e.g. {text: review, label: stars}")
    text_fields: list[str] = Field(
        default_factory=list, description="columns joined with ' ' to form the text (e.g. [title, description])")
    limit: int | None = Field(default=None, ge=1, description="use at most this many training rows")
    eval_limit: int | None = Field(default=None, ge=1)
    format: Literal["auto", "instruction", "messages", "prompt_completion", "pairs", "hh"] = Field(
        default="auto", description="SFT row format; auto picks from the columns present")
    prompt_template: str = Field(
        default="Translate the following text to Spanish:\n{source}",
        description="user turn for 'pairs' rows ({source} is replaced)")
    system: str | None = Field(default=None, description="system message prepended to every SFT conversation")
    eval_fraction: float = Field(default=0.2, gt=0, lt=1, description="held out when no eval file is given")
    split_seed: int = 0
    on_error: Literal["skip", "fail"] = Field(
        default="skip", description="bad rows (unreadable, empty text, missing label, ...): skip = drop, count and "
        "warn; fail = stop with one line naming the first")
    split: str | None = Field(
        default=None, description="split of a datasets folder or hub id to train on (default: train, or the only one)")
    eval_split: str | None = Field(
        default=None, description="eval split (default: validation/valid/dev/test if present, else held out)")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is None and self.train is None:
            raise ValueError("data: give either data.dataset (a registered name) or data.train (a file path)")
        return self


class TrainConfig(Frozen):
    lr: float = Field(default=5e-4, gt=0)
    head_lr: float | None = Field(default=None, gt=0, description="learning rate of the task head")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    optimizer: Literal["adamw", "sgd", "muon"] = Field(
        default="adamw", description="adamw (betas below), sgd (momentum below, seed 000's CNN studies) or "
        "muon (hidden matrices; AdamW at lr for embeddings, norms, biases)")
    muon_lr: float = Field(default=0.02, gt=0, description="Muon's lr for the hidden matrices")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW's (β1, β2)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(default=False, description="SGD: Nesterov momentum")
    lookahead_every: int | None = Field(
        default=None, ge=1, description="adamw/sgd: every N steps move slow weights toward the trained ones and "
        "restart from them (airbench94's lookahead); the run ends on the slow weights")
    lookahead_decay: float = Field(
        default=0.95**5, gt=0, lt=1, description="lookahead: the slow weights' decay at the last step, "
        "reached along (step / steps)^3")
    weight_decay: float = Field(default=0.01, ge=0)
    scale_weight_decay: float = Field(default=1e-4, ge=0, description="weight decay on adapter scales (seed 000)")
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant", "step"] = "linear"
    min_lr_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="cosine/linear: decay to this fraction of lr (nanoGPT: 0.1)")
    step_milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], description="fractions of training where 'step' divides the lr")
    step_lrs: list[float] = Field(default_factory=lambda: [3e-4, 1e-4])
    clip: float | None = Field(default=1.0, gt=0)
    nan_patience: int = Field(default=5, ge=1, description="stop after this many steps in a row whose loss or "
                              "gradients are NaN/inf (each one is skipped with a warning)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    log_every: int = Field(default=10, ge=1)
    eval_every: int | None = Field(default=None, ge=1, description="evaluate every N optimizer steps")
    early_stopping: int | None = Field(default=None, ge=1, description="stop after N evals without improvement")
    bucket_pool: int = Field(default=16, ge=1, description="batches per shuffled pool sorted by length")
    checkpoint_every: int | None = Field(default=None, ge=1, description="save a resumable checkpoint every N steps")
    frozen_prefix_cache: bool = Field(default=True, description="reuse frozen bottom layers' outputs across steps")
    prefix_cache_max_gb: float = Field(default=4.0, gt=0)
    packing: bool = Field(default=False, description="SFT: pack examples into max_length rows (no cross-attention)")
    gradient_checkpointing: bool = False
    fast_dropout: bool = Field(
        default=True, description="CPU: dropout masks from 16-bit slices of 64-bit random draws, about 3x cheaper "
        "than torch's bernoulli (p kept to 1/65536); false draws them with torch's own dropout")
    loss_chunk: int = Field(default=1024, ge=16, description="SFT: tokens per chunk of the vocabulary projection")
    head_only: bool = Field(default=False, description="with adapter.variant=none: train only the task head")
    threads: int | None = Field(default=None, ge=1)
    fsdp: bool = Field(
        default=False, description="under torchrun (tunelab run --nproc N): shard weights, gradients and "
        "optimizer state over the processes (FSDP) instead of replicating them (DDP)")

    @model_validator(mode="after")
    def lookahead_wraps_one_optimizer(self) -> TrainConfig:
        if self.lookahead_every is not None and self.optimizer == "muon":
            raise ValueError("train.lookahead_every works with optimizer adamw or sgd, not muon")
        return self


class EvalConfig(Frozen):
    batch_size: int = Field(default=64, ge=1)
    metric: str | None = Field(
        default=None, description="metric for best checkpoint / early stopping (task default: accuracy, eval_loss)")
    generate: int = Field(default=0, ge=0, description="SFT: generate for this many eval prompts at the end")
    max_new_tokens: int = Field(default=64, ge=1)
    code: str | None = Field(
        default=None, description="SFT: after training, pass@1 on these code problems ('humaneval' or a JSONL "
                                  "file of {prompt, test, entry_point}) in chat mode, for the base and the tuned model")
    code_limit: int | None = Field(default=None, ge=1, description="SFT code evaluation: the first N problems")
    code_base: bool = Field(
        default=True, description="SFT code evaluation: also score the base (adapters switched off)")


class PreferenceConfig(Frozen):
    """Preference optimisation (task: dpo). With log-ratios ρ = log πθ(y|x) − log π_ref(y|x) and the
    margin m = ρ_chosen − ρ_rejected: sigmoid −(1−ε)·logσ(βm) − ε·logσ(−βm), ipo (m − 1/(2β))²,
    hinge relu(1 − βm); simpo −logσ(β·(mean logp_chosen − mean logp_rejected) − γ), no reference."""

    beta: float = Field(default=0.1, gt=0, description="β: strength of the KL pull towards the reference")
    loss: Literal["sigmoid", "ipo", "hinge", "simpo"] = Field(
        default="sigmoid", description="sigmoid (DPO), ipo, hinge (SLiC) or simpo (reference-free)")
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=0.5, description="ε: assumed rate of flipped preference labels (sigmoid loss only)")
    simpo_gamma: float = Field(default=0.5, ge=0, description="γ: SimPO's target reward margin")
    share_prompt: bool = Field(
        default=True, description="run each pair's prompt once and continue chosen and rejected from its KV "
                                  "cache (off with gradient checkpointing, which disables the cache)")


class RewardSpec(Frozen):
    """One reward term: a built-in name or a user function, its weight, and keyword settings."""

    name: str = Field(description="built-in (yes_no, exact_answer, numeric_answer, format_regex, "
                      "length_penalty, tests_pass) or a user function 'module:function' / 'path/file.py:function'")
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict, description="keyword settings passed to the function")


class GRPOConfig(Frozen):
    """Group Relative Policy Optimization (task: grpo). Per prompt, G completions o_i are sampled from the
    current policy and scored r_i = Σ_k w_k·reward_k; the advantage A_i = (r_i − mean r) / (std r + 1e-4)
    (Dr. GRPO, scale_rewards false: r_i − mean r); per completion token t, with the ratio
    ρ_t = πθ(o_t) / π_old(o_t):  ℓ_t = −min(ρ_t·A, clip(ρ_t, 1−ε_low, 1+ε_high)·A) + β·KL_t(πθ‖π_ref)."""

    num_generations: int = Field(default=4, ge=2, description="G: completions sampled per prompt")
    max_new_tokens: int = Field(default=64, ge=1, description="longest completion, in tokens")
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling mass of the rollouts")
    beta: float = Field(default=0.0, ge=0, description="β: weight of the KL to the reference (0: no reference pass)")
    epsilon: float = Field(default=0.2, gt=0, lt=1, description="ε_low: lower clip of the policy ratio")
    epsilon_high: float | None = Field(default=None, gt=0, description="ε_high (default ε_low; DAPO raises it)")
    iterations: int = Field(default=1, ge=1, description="μ: optimizer steps on one set of rollouts")
    scale_rewards: bool = Field(default=True, description="divide advantages by the group's reward std "
                                "(false: Dr. GRPO)")
    loss_aggregation: Literal["sequence", "token"] = Field(
        default="sequence", description="sequence: mean over each completion's tokens, then over completions "
        "(GRPO); token: mean over every completion token of the optimizer step (DAPO)")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="exact_answer")], description="reward terms, summed with weights")
    answer: Literal["none", "exact", "yes_no", "numeric"] = Field(
        default="exact", description="how the eval split's accuracy is judged against the answer column")


class VisionConfig(Frozen):
    """Image classification (task: image_classification): input size, augmentation, loss and CPU speed."""

    image_size: int = Field(default=32, ge=4, le=1024, description="image folders are resized to this square size")
    flip: bool = Field(default=False, description="random left-right flips while training")
    translate: int = Field(default=0, ge=0, le=16, description="random shifts of up to this many pixels (reflect pad)")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    tta_flip: bool = Field(default=False, description="evaluate on the mean logits of each image and its mirror")
    tta_translate: int = Field(
        default=0, ge=0, le=4, description="test-time translation by this many pixels (reflect pad): half the "
        "weight on the image, half on the mean of its copies shifted up-left and down-right (airbench's tta_level 2 "
        "with tta_flip and 1)")
    channels_last: bool = Field(default=False, description="NHWC memory layout (measure: helps some CPU convs)")
    compile: bool = Field(default=False, description="torch.compile the training forward (measure first)")
    misclassified: int = Field(default=36, ge=0, le=400, description="misclassified eval images in the grid image")


class QAConfig(Frozen):
    """Extractive QA (task: qa): how contexts are windowed and answers decoded."""

    doc_stride: int = Field(default=64, ge=0, description="tokens shared by consecutive windows of a long context")
    max_answer_length: int = Field(default=30, ge=1, description="longest answer span, in tokens")
    n_best: int = Field(default=20, ge=1, description="start and end candidates per window")
    no_answer: bool | None = Field(
        default=None, description="SQuAD 2.0 no-answer with a tuned threshold (default: when the data has "
        "unanswerable questions)")


class LMConfig(Frozen):
    """Causal language modelling from scratch (task: lm): tokenizer, evaluation windows and the samples
    the final evaluation writes (softmax(logits / temperature) over the top_k tokens, seeded)."""

    tokenizer: Literal["chars", "bytes"] = Field(default="chars", description="built from the text")
    eval_windows: int = Field(default=500, ge=1, description="fixed val windows (evenly spaced) per eval")
    samples: int = Field(default=3, ge=0, description="samples written by the final evaluation")
    sample_tokens: int = Field(default=300, ge=1)
    prompt: str = Field(default="\n", description="text every sample starts from")
    temperature: float = Field(default=0.8, ge=0, description="0 = greedy")
    top_k: int | None = Field(default=200, ge=1)
    sample_seed: int = 0


class RunConfig(Frozen):
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: str = Field(default="classification", description="one of tunelab.tasks.registry")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    qa: QAConfig = Field(default_factory=QAConfig)
    lm: LMConfig = Field(default_factory=LMConfig)
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named dotted overrides run one after another and compared, e.g. {dora: {adapter.variant: dora}}")
    stages: list[dict[str, Any]] = Field(
        default_factory=list,
        description="a chain [{name: sft, task: sft, ...sections}, {name: dpo, task: dpo, ...}]: each stage is the "
        "recipe with its sections merged in, starting from the previous stage's weights (see docs/stages.md)")
    compare_prompts: str | None = Field(
        default=None, description="after a stage chain: compare the base and every stage on this prompt file "
        "or packaged set (tunelab eval: per-prompt perplexity, BLEU, refusals)")
    compare_limit: int | None = Field(default=None, ge=1, description="use only the first N compare_prompts")
    output_dir: str = "runs"

    @model_validator(mode="after")
    def _packing_is_for_sft(self) -> RunConfig:
        if self.train.packing and self.task != "sft" and not self.stages:
            raise ValueError(f"train.packing: only task sft packs examples into rows; task {self.task} cannot")
        if self.eval.code and self.task != "sft" and not self.stages:
            raise ValueError(f"eval.code: only task sft scores code after training; task {self.task} cannot "
                             "(use `tunelab eval humaneval --model RUN_DIR`)")
        return self

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASK_REGISTRY:
            raise ValueError(f"unknown task {value!r}; known: {', '.join(TASK_REGISTRY)}")
        return value
