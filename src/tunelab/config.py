"""One validated config object per run, loaded from YAML and overridable from the CLI.

A config file may start from another with ``base: other.yaml`` (a path relative to
the file); its keys are merged over the base's, section by section.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tunelab import config_aliases
from tunelab.errors import ConfigError
from tunelab.redaction import is_secret_key, redact

Task = Literal["classification", "generation", "chat", "preference", "prompts"]
Method = Literal["baseline", "full", "lora", "prefix", "prompt", "ia3", "dpo", "reward", "grpo"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitFractions(Section):
    train: float = Field(0.8, gt=0, lt=1, description="Share of rows for training.")
    validation: float = Field(0.1, ge=0, lt=1, description="Share of rows for validation.")
    test: float = Field(0.1, gt=0, lt=1, description="Share of rows for the frozen test split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, got {total:g}")
        return self


class CheckThresholds(Section):
    min_chars: int = Field(
        1, ge=1, description="Shortest allowed text (for chat: turn), in characters."
    )
    max_chars: int = Field(
        4000, ge=1, description="Longest allowed text (for chat: turn), in characters."
    )
    max_duplicate_rate: float = Field(
        0.05, ge=0, le=1, description="Largest allowed share of rows whose normalised text repeats."
    )
    min_rows_per_class: int = Field(5, ge=1, description="Fewest rows a label may have overall.")
    max_imbalance_ratio: float = Field(
        5.0, ge=1, description="Largest allowed ratio of the biggest to the smallest class."
    )
    max_too_long_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest allowed share of examples longer than model.max_length tokens.",
    )
    max_mojibake_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest allowed share of rows with mojibake (UTF-8 read as cp1252 or "
        "latin-1, e.g. 'Ã©' for 'é'); any is reported as a warning.",
    )


SPLIT_NAMES = ("train", "validation", "test")


class CleanConfig(Section):
    """A recorded cleaning policy, off by default: what it drops is counted and listed in
    the dataset report and the version record, and the gate runs on the cleaned data."""

    strip: bool = Field(False, description="Strip leading and trailing whitespace of texts.")
    drop_empty: bool = Field(False, description="Drop rows whose text (or target) is empty.")
    drop_duplicates: bool = Field(
        False, description="Drop rows whose normalised text repeats within a split (keep first)."
    )
    drop_leaked: Literal["train"] | None = Field(
        None,
        description="train = drop from train the examples whose normalised text is also in "
        "validation or test (the held-out splits stay whole). None = leaks fail the gate.",
    )


CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


class ChatConfig(Section):
    """How the turns of chat data (data.task=chat) are read from the source."""

    format: Literal["auto", "openai", "sharegpt"] = Field(
        "auto",
        description="Turn keys: openai = {role, content}, sharegpt = {from, value}; auto = "
        "whichever keys each turn has.",
    )
    roles: dict[str, str] = Field(
        default_factory=lambda: dict(SHAREGPT_ROLES),
        description="Source role name -> system/user/assistant (case-insensitive), added to "
        "the defaults human: user, gpt: assistant; e.g. {bot: assistant}. Unmapped roles "
        "fail the gate.",
    )

    @model_validator(mode="after")
    def _known_targets(self) -> ChatConfig:
        wrong = {k: v for k, v in self.roles.items() if v not in CHAT_ROLES}
        if wrong:
            raise ValueError(
                f"data.chat.roles maps {wrong}; each role must map to one of "
                f"{', '.join(CHAT_ROLES)}"
            )
        return self


class DataConfig(Section):
    name: str = Field(
        "sentiment",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Dataset name: folder under data/, experiment and report name.",
    )
    task: Task = Field("classification", description="Task type; fixes the canonical columns.")
    source: str = Field(
        "bundled:sentiment",
        description="Where rows come from: 'bundled:NAME', 'hf:ORG/NAME' (Hugging Face hub) "
        "or a path to a CSV/JSONL/Parquet file or a folder of them.",
    )
    hf_config: str | None = Field(None, description="Hub dataset config name, if it has several.")
    hf_revision: str | None = Field(None, description="Hub dataset revision (tag, branch, commit).")
    source_splits: dict[str, str] = Field(
        default_factory=dict,
        description="Map our split names (train/validation/test) to the source's split names "
        "or file stems; empty = use the source's splits when it has them.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Rename source columns to canonical ones, e.g. {label_text: label}.",
    )
    split_columns: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per-split renames, applied with `columns`, for sources whose files name "
        "a column differently, e.g. {test: {summary1: summary}}.",
    )
    labels: list[str] | None = Field(
        None, description="Declared label set (classification). None = the labels found."
    )
    max_rows: int | dict[str, int] | None = Field(
        None,
        description="Keep at most this many rows (sampled): one number for the whole data "
        "set, or per split, e.g. {train: 4000} (splits not named are kept whole).",
    )
    splits: SplitFractions = Field(default_factory=SplitFractions, description="Split fractions.")
    seed: int = Field(13, description="Seed for sampling and splitting.")
    checks: CheckThresholds = Field(
        default_factory=CheckThresholds, description="Validation gate thresholds."
    )
    clean: CleanConfig = Field(
        default_factory=CleanConfig, description="Recorded cleaning before the gate (off)."
    )
    truncation: Literal["keep_end", "keep_start", "drop"] | None = Field(
        None,
        description="DPO prompts longer than model.max_length (train.dpo.max_length when "
        "set): keep_end keeps their last tokens (the latest turns), keep_start their first, "
        "drop leaves those pairs out; a cut prompt leaves room for the longer response (at "
        "most half the length). Counted per split in the run's metrics "
        "({split}_prompts_truncated, {split}_pairs_dropped). None = refuse them with an error.",
    )

    chat: ChatConfig = Field(
        default_factory=ChatConfig, description="Turn keys and role names of chat data."
    )
    tokenizer: str | None = Field(
        None,
        description="Whose tokenizer counts tokens for the gate's length check and the "
        "report: a model reference (alias, folder, hub id) or 'whitespace' (the estimate). "
        "None = model.name's. If it cannot be loaded, the whitespace estimate is used and "
        "the report and command output say so. Never part of the data version.",
    )

    remote: str | None = Field(
        None, description="DVC remote URL or folder; None = dvc-remote/ in the workspace."
    )

    @model_validator(mode="after")
    def _known_splits(self) -> DataConfig:
        named = {"max_rows": self.max_rows if isinstance(self.max_rows, dict) else {}}
        named["split_columns"] = self.split_columns
        for field, mapping in named.items():
            unknown = sorted(set(mapping) - set(SPLIT_NAMES))
            if unknown:
                raise ValueError(
                    f"data.{field} names unknown split(s) {unknown}; splits are "
                    f"{', '.join(SPLIT_NAMES)}"
                )
        caps = self.max_rows.values() if isinstance(self.max_rows, dict) else [self.max_rows]
        if any(cap is not None and cap < 1 for cap in caps):
            raise ValueError(f"data.max_rows must be at least 1, got {self.max_rows}")
        return self


class ModelConfig(Section):
    name: str = Field(
        "tiny-gpt2", description="Model reference: a bundled alias, a local path or a hub id."
    )
    revision: str | None = Field(None, description="Hub revision when name is a hub id.")
    max_length: int = Field(256, ge=8, description="Longest input, in tokens.")
    trust_remote_code: bool = Field(
        False, description="Allow code from the model repository to run. Off unless needed."
    )
    quantization: Literal["4bit", "8bit"] | None = Field(
        None,
        description="Load the base model quantised with bitsandbytes (QLoRA): needs CUDA; "
        "adapter methods only. None = full precision (train.precision).",
    )


class PromptingConfig(Section):
    """Zero/few-shot prompting of an instruct LM: a pattern around the input, a verbalizer."""

    shots: int = Field(
        0, ge=0, description="Demonstrations (k) drawn deterministically from train; 0 = zero-shot."
    )
    pattern: str | None = Field(
        None,
        description="Template around one input; fields {text}, {text_pair}, {prompt}, "
        "{choices}. None = the task's default: a choice question for classification; for "
        "generation 'Respond to the following.' before the input, or a summarise "
        "instruction when most inputs are bare conversations; the prompt itself for "
        "preference data.",
    )
    verbalizer: dict[str, str] | None = Field(
        None, description="Label -> words the model says for it; None = the label itself."
    )
    mode: Literal["score", "generate"] = Field(
        "score",
        description="Classification: score = pick the label whose verbalization is most likely "
        "(always valid), generate = free generation mapped back to a label. Generation data "
        "is always generated; preference data is scored by log-likelihood.",
    )
    calibrate: bool = Field(
        False,
        description="Contextual calibration (score mode): subtract each label's score on "
        "content-free inputs ('N/A', '', '[MASK]') so the model's prior for a label does not "
        "decide the answer. Helps small models with a strong label bias.",
    )
    use_chat_template: bool = Field(
        True, description="Wrap the prompt in the model's chat template when it has one."
    )
    max_new_tokens: int = Field(48, ge=1, description="Longest generated answer (generate mode).")
    max_examples: int | None = Field(
        None, ge=1, description="Score at most this many test examples (None = all)."
    )
    score_validation: bool = Field(
        True,
        description="Also score the validation split (prompting fits nothing, so only the "
        "test scores are needed to compare methods).",
    )


class BaselineConfig(Section):
    kind: Literal["majority", "tfidf", "prompt"] = Field(
        "majority",
        description="majority class; TF-IDF + logistic regression; or prompting an LM.",
    )
    prompting: PromptingConfig = Field(
        default_factory=PromptingConfig, description="Settings for kind=prompt."
    )


class AdapterConfig(Section):
    """PEFT settings, used by methods lora, prefix, prompt and ia3."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None = sane defaults for the architecture."
    )
    num_virtual_tokens: int = Field(
        16, ge=1, description="Virtual tokens for prefix and prompt tuning."
    )
    merge: bool = Field(
        True, description="Also save a merged model (merge_and_unload) where the method allows."
    )
    merge_atol: float = Field(
        1e-3,
        gt=0,
        description="Absolute tolerance of the merged == unmerged check on output logits "
        "(torch.allclose, default rtol 1e-5); fp32 rounding in a 135M model reaches ~1e-4.",
    )


class DpoConfig(Section):
    beta: float = Field(0.1, gt=0, description="DPO temperature: strength of the KL anchor.")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = Field(
        "sigmoid", description="DPO loss variant."
    )
    max_length: int | None = Field(
        None, ge=8, description="Longest prompt+completion in tokens; None = model.max_length."
    )
    use_adapter: bool = Field(
        True,
        description="Train a LoRA adapter (reference = adapter disabled, one model in memory); "
        "False = full DPO with an explicit frozen reference copy.",
    )
    init_from: str | None = Field(
        None,
        description="Start the policy from an earlier run's output folder (e.g. an SFT or LoRA "
        "run); None = model.name.",
    )


class RewardSection(Section):
    """train.method=reward: a reward model (a sequence classifier with one output) trained
    on preference pairs with trl's RewardTrainer."""

    use_adapter: bool = Field(
        True,
        description="Train LoRA on the linear projections and the new score head in full "
        "(saved with a verified merged model); False = train every weight.",
    )
    max_length: int | None = Field(
        None, ge=8, description="Longest prompt+response in tokens; None = model.max_length."
    )
    center_rewards_coefficient: float | None = Field(
        None,
        ge=0,
        description="Weight of a penalty on the mean reward's square, which keeps rewards "
        "centred on 0 (trl's center_rewards_coefficient; e.g. 0.01); None = off.",
    )


class RewardSource(Section):
    """One reward of train.grpo.rewards: exactly one of ``model``, ``classifier``,
    ``regex`` or a length rule (``min_words``/``max_words``)."""

    model: str | None = Field(
        None,
        description="A reward model trained by tunelab (train.method=reward): a registered "
        "version, NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS (e.g. "
        "preferences-reward@champion), or a run folder holding merged/ or model/. The "
        "reward is its raw score of prompt and completion.",
    )
    classifier: str | None = Field(
        None,
        description="A registered classifier (NAME@ALIAS or NAME/VERSION, e.g. "
        "sentiment-classifier@champion) that reads the completion; the reward is its "
        "probability of ``label``.",
    )
    label: str | None = Field(None, description="The classifier's label whose probability pays.")
    regex: str | None = Field(
        None,
        description="A format rule: 1 when the completion matches this regular expression "
        "(re.search), else 0; e.g. '\\byes\\b'.",
    )
    ignore_case: bool = Field(True, description="The regex ignores case.")
    min_words: int | None = Field(
        None, ge=0, description="A length rule: 1 when the completion has at least this many words."
    )
    max_words: int | None = Field(
        None, ge=1, description="A length rule: 1 when the completion has at most this many words."
    )
    weight: float = Field(1.0, description="Weight of this reward in the sum the policy gets.")
    name: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Name in metrics and the review (reward_<name>); None = from the kind.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RewardSource:
        kinds = [k for k in ("model", "classifier", "regex") if getattr(self, k) is not None]
        if self.min_words is not None or self.max_words is not None:
            kinds.append("length")
        if len(kinds) != 1:
            raise ValueError(
                "each reward names exactly one of model, classifier, regex or a length rule "
                f"(min_words/max_words); this one has {', '.join(kinds) or 'none'}"
            )
        if self.classifier is not None and not self.label:
            raise ValueError(f"classifier {self.classifier} needs the label whose probability pays")
        if self.label is not None and self.classifier is None:
            raise ValueError("label is for a classifier reward")
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        low, high = self.min_words, self.max_words
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_words={low} is above max_words={high}")
        return self

    @property
    def kind(self) -> str:
        if self.model is not None:
            return "model"
        if self.classifier is not None:
            return "classifier"
        return "regex" if self.regex is not None else "length"


class GrpoSection(Section):
    """train.method=grpo: a decoder policy tuned against rewards with trl's GRPOTrainer
    (or RLOOTrainer), on prompts data; LoRA by default."""

    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo", description="trl's GRPOTrainer, or its RLOOTrainer (leave-one-out baseline)."
    )
    rewards: list[RewardSource] = Field(
        default_factory=list, description="The rewards, summed with their weights."
    )
    num_generations: int = Field(
        4, ge=2, description="Completions sampled per prompt (the group compared)."
    )
    max_completion_length: int = Field(32, ge=1, description="Longest completion in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(
        0.04,
        ge=0,
        description="Weight of the KL penalty to the reference policy (0 = none, the "
        "reference is then not kept).",
    )
    kl_budget: float = Field(
        10.0,
        gt=0,
        description="Largest mean KL to the reference (nats per completion, on held-out "
        "prompts) a policy may reach: above it the run warns and the gate refuses it.",
    )
    eval_samples: int = Field(
        2, ge=1, description="Completions sampled per held-out prompt for the reward and KL."
    )
    use_adapter: bool = Field(
        True, description="Train a LoRA adapter (saved with a verified merged model)."
    )
    init_from: str | None = Field(
        None,
        description="Start the policy from an earlier run's output folder (e.g. an SFT or "
        "LoRA run); None = model.name.",
    )


class DistributedSection(Section):
    """train.distributed: the training step in several processes (tunelab.train.distributed)."""

    processes: int = Field(
        1,
        ge=1,
        description="Training processes (ranks): 1 = train in tunelab's own process; more = "
        "launch them with torch.distributed.run (ddp) or accelerate launch (fsdp, deepspeed, "
        "or a config file). train.batch_size stays per process: halve it to keep the batch "
        "of one process. On the CPU each rank needs a core; on CUDA a GPU.",
    )
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp copies the model to every rank (CPU with gloo, or GPUs); fsdp and "
        "deepspeed (ZeRO) shard it across GPUs and need CUDA (deepspeed also its package).",
    )
    config: str | None = Field(
        None,
        description="An accelerate config file (e.g. configs/accelerate/fsdp.yaml) passed to "
        "accelerate launch; its num_processes is overridden by processes. None = the "
        "strategy's defaults.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto",
        description="torch.distributed backend: auto = nccl on CUDA, gloo on the CPU.",
    )


# transformers' SchedulerType values that suit one training run (no plateau, no greedy).
LrScheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]


class TrainConfig(Section):
    method: Method = Field("baseline", description="Training method.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = epochs.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    grad_accum_steps: int = Field(1, ge=1, description="Batches accumulated per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lr_scheduler: LrScheduler = Field(
        "linear",
        description="Learning-rate schedule after warm-up (transformers lr_scheduler_type): "
        "linear decay to 0, cosine, cosine_with_restarts, polynomial, constant, "
        "constant_with_warmup, inverse_sqrt, cosine_with_min_lr, warmup_stable_decay.",
    )
    lr_scheduler_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the schedule (transformers lr_scheduler_kwargs), e.g. "
        "{num_cycles: 2} for cosine_with_restarts, {min_lr_rate: 0.1} for "
        "cosine_with_min_lr (which needs min_lr or min_lr_rate), {num_decay_steps: 20} for "
        "warmup_stable_decay (which needs it).",
    )
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on CUDA where supported, else fp16; fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Trade compute for memory by recomputing activations."
    )
    packing: bool = Field(
        False,
        description="SFT of decoders: pack several short examples into each row of "
        "model.max_length tokens (trl's best-fit packing; attention stays within each "
        "example). Fewer padding tokens, so faster on short data; validation is not packed.",
    )
    logging_steps: int = Field(5, ge=1, description="Log the training loss every N steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Validation loss every N steps; None = once per epoch."
    )
    save_steps: int = Field(
        50,
        ge=1,
        description="Checkpoint every N steps; an interrupted run, re-run unchanged, resumes "
        "from the last one (a finished run re-run trains again from the start).",
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    resume_from: str | None = Field(
        None,
        description="Start from this checkpoint folder (checkpoint-N of an earlier run: "
        "weights, optimizer, schedule, step) instead of from scratch; None = from scratch.",
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More fields of the Trainer's arguments (TrainingArguments; trl's "
        "SFTConfig for generation/chat data, DPOConfig for dpo), e.g. {optim: adamw_torch_fused, "
        "adam_beta2: 0.95}. Checked against that class before any model loads: unknown "
        "fields, wrong types and fields tunelab sets from its own keys (learning_rate: use "
        "train.learning_rate) are errors; credentials (hub_token) are refused, as the config "
        "is logged: use environment variables. Unused by baseline.",
    )
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig, description="Settings for method=baseline."
    )
    adapter: AdapterConfig = Field(
        default_factory=AdapterConfig, description="Settings for lora/prefix/prompt/ia3."
    )
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="Settings for method=dpo.")
    reward: RewardSection = Field(
        default_factory=RewardSection, description="Settings for method=reward."
    )
    grpo: GrpoSection = Field(default_factory=GrpoSection, description="Settings for method=grpo.")
    distributed: DistributedSection = Field(
        default_factory=DistributedSection,
        description="Several training processes (DDP, FSDP, DeepSpeed); processes=1 = one.",
    )

    @property
    def policy_init_from(self) -> str | None:
        """The run folder a policy method (dpo, grpo) starts from, if its section names one."""
        section = {"dpo": self.dpo, "grpo": self.grpo}.get(self.method)
        return section.init_from if section is not None else None

    @field_validator("trainer_args")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        secret = sorted(k for k in value if is_secret_key(k))
        if secret:
            raise ValueError(
                f"train.trainer_args {secret} would hold a credential, and the run config is "
                "logged to MLflow: set it through environment variables instead (HF_TOKEN for "
                "the hub)"
            )
        return value


class EvalConfig(Section):
    primary_metric: str = Field(
        "macro_f1", description="Metric that decides promotion, e.g. macro_f1, rougeL."
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="Resamples for confidence intervals."
    )
    ci_level: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the intervals.")


class RegistryConfig(Section):
    model_name: str | None = Field(
        None, description="Registered model name; None = '<dataset>-<task role>'."
    )
    min_improvement: float | None = Field(
        None,
        ge=0,
        description="Smallest gain in the primary metric that can promote; None = the task's "
        "default: 0.1 for preference (a policy equal to its reference already has reward "
        "accuracy 0.5, so a winner must order 10 more pairs in 100 right), else 0.",
    )
    significance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Largest p-value of the two-sided paired test that can promote; the gate's "
        "delta interval is at level 1 - significance, so it excludes 0 exactly then.",
    )
    max_latency_p95_ms: float | None = Field(
        None, gt=0, description="Refuse promotion above this p95 per-example latency (ms)."
    )
    max_model_size_mb: float | None = Field(
        None, gt=0, description="Refuse promotion above this model size on disk (MB)."
    )
    package: Literal["adapter", "merged"] | None = Field(
        None,
        description="What an adapter run (lora, ia3, prefix, prompt, DPO with an adapter) "
        "registers: 'adapter' (the adapter, its tokenizer and a reference to the base model, "
        "whose weights are checked when loaded) or 'merged' (a full copy with the adapter "
        "merged in; not for prefix/prompt tuning). None = adapter when the base model has "
        "more than 1B parameters or nothing was merged, else merged. Other runs register "
        "their one model.",
    )
    auto_register: bool = Field(
        True, description="Register servable runs and run the promotion gate after training."
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (an `mlflow server`); None = $MLFLOW_TRACKING_URI, "
        "else the sqlite store in the workspace's mlruns/.",
    )


def _unset(value: Any) -> bool:
    return value is None


class Distribution(Section):
    """One key of sweep.space: a range ({low, high}, ints or floats) or a list of choices."""

    # Unset keys are left out when dumped: a range shows as {low, high, log}, choices alone.
    low: int | float | None = Field(
        None, exclude_if=_unset, description="Smallest value of a range."
    )
    high: int | float | None = Field(
        None, exclude_if=_unset, description="Largest value of a range (included)."
    )
    log: bool = Field(False, description="Sample the range on a log scale (low > 0).")
    step: int | float | None = Field(
        None, gt=0, exclude_if=_unset, description="Grid step of a range; None = any."
    )
    choices: list[bool | int | float | str | None] | None = Field(
        None, exclude_if=_unset, description="The values to choose from, instead of a range."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> Distribution:
        has_range = self.low is not None or self.high is not None
        if (self.choices is None) == (not has_range):
            raise ValueError("give either low and high (a range) or choices, not both or neither")
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        """A range of whole numbers: low, high (and step) all written as ints."""
        ends = (self.low, self.high, self.step if self.step is not None else 1)
        return self.choices is None and all(isinstance(v, int) for v in ends)

    def values(self) -> list:
        """The values a config must accept: the ends of a range, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class SweepConfig(Section):
    """`tunelab sweep`: an Optuna study over the keys of sweep.space (tunelab.sweep).
    Ignored by `tunelab train`; never part of a trial's run folder or cache keys."""

    space: dict[str, Distribution] = Field(
        ...,
        min_length=1,
        description="Dotted model.*/train.* keys -> what to try, e.g. {train.learning_rate: "
        "{low: 1.0e-5, high: 1.0e-2, log: true}, train.adapter.r: {choices: [4, 8, 16]}}.",
    )
    metric: str | None = Field(
        None,
        description="What a trial is judged by: a validation_* metric of the run "
        "(validation_loss, validation_macro_f1, ...); never the test split. None = "
        "validation_loss for trained methods, else validation_<eval primary metric>.",
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="None = minimize a *loss metric, maximize any other."
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler.")
    seed: int = Field(0, description="Seed of the sampler.")
    pruner: Literal["median", "none"] = Field(
        "median",
        description="median = stop a trial whose metric at an evaluation is worse than the "
        "median of earlier trials at that step (needs the metric at each evaluation: "
        "validation_loss; set train.eval_steps for several).",
    )
    n_startup_trials: int = Field(
        3, ge=0, description="Trials that are never pruned (and that TPE samples at random)."
    )
    n_warmup_steps: int = Field(0, ge=0, description="Steps of a trial before it may be pruned.")
    study: str | None = Field(
        None,
        description="Study name; None = <dataset>-<method>-<model>-<hash of the objective>, "
        "so running the same config again continues its study.",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL (sqlite:///..., postgresql://...); None = "
        "sweeps/<study>/study.db in the workspace.",
    )

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("validation_"):
            raise ValueError(
                f"sweep.metric must be a validation_* metric (validation_loss, "
                f"validation_macro_f1, ...), got {value!r}: choosing a trial by the test "
                "split would leave no unbiased test score for the winner"
            )
        return value


SWEEP_SECTIONS = ("model", "train")  # what a sweep may vary: the data is prepared once


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig, description="The dataset.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Registry.")
    sweep: SweepConfig | None = Field(
        None,
        exclude_if=lambda value: value is None,  # configs without one hash as before
        description="Hyperparameter sweep (`tunelab sweep`); None = no sweep.",
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def section_hash(self, section: str) -> str:
        """Stable hash of one section, for caching and lineage."""
        return digest(getattr(self, section).model_dump(mode="json"))

    def config_hash(self) -> str:
        """Stable hash of the whole resolved config (a lineage tag of every run)."""
        return digest(self.to_dict())


def digest(payload: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able payload (keys sorted; other values as str)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults), apply ``key.sub=value`` overrides, validate.

    Recipe names (``num_train_epochs``, ``lora_r``, ``bf16``; tunelab/config_aliases.py)
    become tunelab's keys, in the file and in the overrides alike.
    """
    raw: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    apply_overrides(raw, overrides)
    return from_dict(raw, where=str(path) if path else "defaults")


def from_dict(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """Validate a raw config mapping; recipe names in it become tunelab's keys first."""
    raw = resolve_aliases(raw, where)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where)) from None
    if cfg.sweep is not None:
        check_space(cfg, where)
    return cfg


def check_space(cfg: RunConfig, where: str = "config") -> None:
    """Every key of sweep.space names a model/train field that takes each value tried
    (a range's ends, every choice); ConfigError naming the key otherwise."""
    base = cfg.model_copy(update={"sweep": None}).to_dict()
    for key, dist in cfg.sweep.space.items():
        parts = key.split(".")
        if parts[0] not in SWEEP_SECTIONS or len(parts) < 2:
            raise ConfigError(
                f"Invalid config ({where}): sweep.space key '{key}' is not a model.* or "
                "train.* key (the data is prepared once for the whole sweep). Use dotted "
                "keys such as train.learning_rate or train.adapter.r."
            )
        node = tuple(parts[:-1])
        allowed = _allowed_keys(node)
        if allowed and parts[-1] not in allowed:
            near = difflib.get_close_matches(parts[-1], allowed, n=3)
            hint = (
                f" Did you mean {' or '.join('.'.join([*node, n]) for n in near)}?" if near else ""
            )
            raise ConfigError(
                f"Invalid config ({where}): sweep.space key '{key}' is unknown.{hint} "
                f"Allowed keys here: {', '.join(allowed)}."
            )
        for value in dist.values():
            raw = merge(base, nested(parts, value))
            try:
                RunConfig.model_validate(raw)
            except ValidationError as exc:
                errors = "; ".join(e["msg"] for e in exc.errors())
                raise ConfigError(
                    f"Invalid config ({where}): sweep.space['{key}'] would try {value!r}, "
                    f"which {key} does not take: {errors}. Change the range or choices."
                ) from None


def nested(parts: list[str], value: Any) -> dict[str, Any]:
    """``value`` under a dotted key's parts: (["train", "lr"], 1) -> {train: {lr: 1}}."""
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def read_mapping(path: Path, what: str = "Config file", example: str = "configs/sentiment.yaml"):
    """A YAML file holding a mapping, or a ConfigError saying what is wrong with it."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist. Pass a YAML file such as {example}.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, got {type(raw).__name__}.")
    return raw


def resolve_aliases(raw: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``raw`` with recipe names (tunelab/config_aliases.py) replaced by tunelab's keys."""
    return config_aliases.resolve(raw, _fields_at, where)


def _fields_at(node: tuple[str, ...]) -> list[str]:
    return _allowed_keys(node)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    # Each file's recipe names are resolved alone, so a file's keys win over its base's.
    raw = resolve_aliases(read_mapping(path), str(path))
    if "datasets" in raw and not ({"data", "model", "train"} & set(raw)):
        raise ConfigError(
            f"{path} is a milestone plan (datasets and their methods), not a run config: "
            f"run it with `tunelab run {path}`, or pass one of the run configs it lists."
        )
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"Config file {path} has a 'base' cycle through {base_path}.")
    return merge(_read_yaml(base_path, (*seen, path.resolve())), raw)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merge key by key (a config's `base:`, a plan's shared `data:`);
    other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Set ``section.key=value`` items (values parsed as YAML) in a raw config dict."""
    for item in overrides or []:
        _apply_override(raw, item)
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"Override '{item}' must look like section.key=value, e.g. data.max_rows=200."
        )
    value = yaml.safe_load(text) if text.strip() else None
    parts = key.strip().split(".")
    alias = config_aliases.alias_at(tuple(parts[:-1]), parts[-1], _fields_at)
    if alias is not None:
        given = config_aliases.translate(alias, key.strip(), value, f"override '{item}'")
        parts, value = list(alias.path), given.value
        if given.off:  # e.g. bf16=false: back to the default unless precision is another
            node = config_aliases.node_at(raw, alias.path[:-1])
            if parts[-1] in node and node[parts[-1]] == value:
                del node[parts[-1]]
            return
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override '{item}': '{part}' is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _explain(exc: ValidationError, where: str) -> str:
    lines = [f"Invalid config ({where}):"]
    unknown = False
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            unknown = True
            node = tuple(str(p) for p in err["loc"][:-1])
            allowed = _allowed_keys(node)
            near = difflib.get_close_matches(
                str(err["loc"][-1]), allowed + config_aliases.names_at(node, _fields_at), n=3
            )
            hint = f" Did you mean {' or '.join(near)}?" if near else ""
            lines.append(f"  - unknown key '{key}'.{hint} Allowed keys here: {', '.join(allowed)}.")
        else:
            # A credential in a mistyped value must not reach the terminal or a log.
            got = redact(err.get("input"), str(err["loc"][-1]) if err["loc"] else "")
            lines.append(f"  - {key}: {err['msg']} (got {got!r}).")
    if unknown:
        lines.append(
            "Recipe names from Hugging Face TrainingArguments, TRL and Axolotl listed in "
            "tunelab/config_aliases.py are accepted too (num_train_epochs, lora_r, bf16, ...); "
            "other TrainingArguments fields go under train.trainer_args."
        )
    lines.append("Fix the file or the --set override; `tunelab config show` prints a valid one.")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
