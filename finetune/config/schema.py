"""Recipes: one YAML file per experiment, validated by a strict schema.

This module is the one place where every recipe key, its type, its bounds, its choices and its default live. Every
key has a default a careful practitioner would pick and a one-line description that `finetune recipe keys` prints.
Reading a file (`base:`, overrides) is in `load.py`; turning a validation error into one line is in `explain.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Upper bounds that no real run reaches; past them a typo (an extra zero, a pasted token count) used to hang or
# exhaust memory at step 0 instead of failing here.
MAX_BATCH = 65_536  # sequences per device per step, and micro-batches per optimizer step
MAX_SEQUENCE_TOKENS = 1_048_576  # tokens per training sequence
MAX_RANK = 4_096  # a LoRA rank at the hidden size of a 7B model is already full rank
MAX_SEED = 2**32 - 1  # numpy and torch refuse larger or negative seeds

Family = Literal["auto", "aixcoder", "starcoder", "codellama", "deepseek", "qwen"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are checked on assignment too."""

    # NaN and infinity pass `gt`/`le` bounds unnoticed and then train on garbage: no recipe number may be either
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(Section):
    name_or_path: str = Field(description="Base model: a local directory or a hub name already in the local cache.")
    family: Family = Field("auto", description="Prompt-format family; 'auto' detects it from the tokenizer.")
    dtype: Precision = Field(
        "auto", description="Weights/compute precision; 'auto' = bf16 on a GPU with bf16, else fp32."
    )
    attn_implementation: Literal["auto", "sdpa", "sdpa_varlen", "eager", "flash_attention_2", "flash_attention_4"] = (
        Field(
            "auto",
            description="Attention kernel; 'auto' = flash_attention_2 on a GPU when installed, else sdpa_varlen (sdpa "
            "once per packed document) when packing and the model has no sliding window, else sdpa.",
        )
    )
    trust_remote_code: bool = Field(
        False, description="Run modelling code shipped with the model (only if you trust it)."
    )
    random_init: bool = Field(
        False,
        description="Initialise weights from the config with `seed` instead of loading them (smoke tests, benchmarks).",
    )
    add_fim_tokens: bool = Field(
        False, description="Add the family's FIM tokens when the tokenizer lacks them, and resize the embeddings."
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit) for hub names.")


class AdapterSection(Section):
    r: int = Field(16, gt=0, le=MAX_RANK, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' (every linear layer but the LM head) or a list of names.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved with the adapter (e.g. embed_tokens, lm_head).",
    )


class QuantizationSection(Section):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit storage type for QLoRA.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (saves ~0.4 bit/param).")
    compute_dtype: Precision = Field("auto", description="Matmul dtype for 4-bit layers; 'auto' follows model.dtype.")
    fp32_norms: bool = Field(
        False,
        description="Keep the norm layers in fp32, as TRL 0.7's SFTTrainer (which the reference aiXcoder script pins) "
        "did to bf16 QLoRA models: every hidden state after a norm becomes fp32; slower, more memory.",
    )


def _document_weight(value: float) -> float:
    if value > 1:
        raise ValueError(
            "a weight above 1 would repeat files, which only instructions sources do: lower the other sources' "
            "weights instead, or raise training.epochs"
        )
    return value


# Mixture keys of document sources (repo, jsonl, text, dataset): a hash-stable subset of the files, never repeats.
DocumentWeight = Annotated[float, Field(ge=0), AfterValidator(_document_weight)]
_DOC_WEIGHT = "Fraction of this source's files used (at most 1; a subset chosen by a hash of each path)."
_DOC_SAMPLES = "Use at most this many files of this source (None = all), instead of a weight."


class RepoSource(Section):
    type: Literal["repo"] = Field("repo", description="Source kind.")
    path: str = Field(description="Repository directory to learn from.")
    max_file_bytes: int = Field(1_000_000, gt=0, description="Files larger than this are skipped (counted).")
    exclude: list[str] = Field(default_factory=list, description="Extra gitignore-style patterns to skip.")
    languages: list[str] | None = Field(None, description="Keep only these language ids (None = all known languages).")
    invalid_utf8: Literal["skip", "replace"] = Field(
        "skip", description="Files that are not valid UTF-8: skip them, or decode with U+FFFD replacements (counted)."
    )
    skip_generated: bool = Field(True, description="Skip lock files, generated-code markers and minified files.")
    weight: DocumentWeight = Field(1.0, description=_DOC_WEIGHT)
    samples: int | None = Field(None, gt=0, description=_DOC_SAMPLES)


class JsonlSource(Section):
    type: Literal["jsonl"] = Field("jsonl", description="Source kind.")
    path: str = Field(description="JSON Lines file, one record per line.")
    text_field: str = Field("text", description="Field holding the text.")
    path_field: str | None = Field(None, description="Optional field holding a file path (for headers).")
    language_field: str | None = Field(None, description="Optional field holding a language id.")
    weight: DocumentWeight = Field(1.0, description=_DOC_WEIGHT)
    samples: int | None = Field(None, gt=0, description=_DOC_SAMPLES)


class TextSource(Section):
    type: Literal["text"] = Field("text", description="Source kind.")
    path: str = Field(description="A text file, or a directory whose *.txt files are read.")
    weight: DocumentWeight = Field(1.0, description=_DOC_WEIGHT)
    samples: int | None = Field(None, gt=0, description=_DOC_SAMPLES)


class DatasetSource(Section):
    type: Literal["dataset"] = Field("dataset", description="Source kind.")
    path: str = Field(description="A local `datasets` dataset: a save_to_disk directory or a data directory/file.")
    split: str = Field("train", description="Split to read.")
    text_field: str = Field("text", description="Column holding the text.")
    weight: DocumentWeight = Field(1.0, description=_DOC_WEIGHT)
    samples: int | None = Field(None, gt=0, description=_DOC_SAMPLES)


class InstructionSource(Section):
    """Instruction/chat records for supervised fine-tuning (finetune.data.sft.records reads them; README lists the shapes)."""

    type: Literal["instructions"] = Field("instructions", description="Source kind.")
    path: str = Field(description="JSONL, JSON or parquet file, or a local `datasets` folder, of instruction records.")
    format: Literal["auto", "evol", "alpaca", "prompt-completion", "sharegpt", "messages"] = Field(
        "auto", description="Record shape; 'auto' recognises each record's shape from its columns."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Your column for a shape's name, e.g. {instruction: question, output: answer} (also role/content).",
    )
    split: str = Field("train", description="Split to read from a `datasets` folder.")
    on_bad_line: Literal["skip", "fail"] = Field(
        "skip", description="A malformed or unusable record: skip it (counted, with its line) or stop the run."
    )
    weight: float = Field(
        1.0, ge=0, description="Times each training record is used: 0.5 = a random half, 3 = each three times."
    )
    samples: int | None = Field(
        None, gt=0, description="Exactly this many training records (a subset, or repeats), instead of a weight."
    )


Source = Annotated[  # noqa: UP007
    Union[RepoSource, JsonlSource, TextSource, DatasetSource, InstructionSource], Field(discriminator="type")  # noqa: UP007
]


class DecontaminateSection(Section):
    benchmarks: list[str] = Field(
        default_factory=list, description="Benchmark files (JSONL/JSON records, or text) whose items must not be trained on."
    )
    field: str = Field("prompt", description="Field of each benchmark record holding its text.")
    ngram: int = Field(10, gt=0, description="Word n-gram length compared.")
    threshold: float = Field(
        0.5, gt=0, le=1, description="Drop a record holding at least this fraction of some item's n-grams."
    )


class SftSection(Section):
    template: Literal["auto", "aixcoder", "chatml", "alpaca", "plain"] = Field(
        "auto",
        description="Chat template; 'auto' = the tokenizer's own, else aixcoder for aiXcoder and chatml for others.",
    )
    chat_template: str | None = Field(
        None, description="Your own Jinja chat template (text, or a .jinja file); wins over `template`."
    )
    system_prompt: str | None = Field(None, description="System prompt for conversations that have none.")
    add_chat_tokens: bool = Field(
        True, description="Add the template's special tokens the tokenizer lacks (their embeddings are trained)."
    )
    decontaminate: DecontaminateSection = Field(
        default_factory=DecontaminateSection, description="Drop records that overlap a benchmark."
    )


class FimCategories(Section):
    """Relative weights of the syntax-node kinds a structured-FIM middle is drawn from."""

    function: float = Field(0.15, ge=0, description="A whole function or method definition.")
    signature: float = Field(0.05, ge=0, description="A function's header, up to its body.")
    body: float = Field(0.15, ge=0, description="A function's body.")
    class_: float = Field(0.05, ge=0, alias="class", description="A class/struct/interface/enum/impl definition.")
    block: float = Field(0.15, ge=0, description="A control block: if/for/while/try/switch/match.")
    statement: float = Field(0.15, ge=0, description="One statement, or a run of up to 3 sibling statements.")
    line: float = Field(0.10, ge=0, description="One whole line inside a function body.")
    expression: float = Field(0.10, ge=0, description="An expression (call, binary, conditional, lambda ...).")
    arguments: float = Field(0.05, ge=0, description="The arguments of a call, between the parentheses.")
    empty: float = Field(0.05, ge=0, description="Nothing: a zero-length middle between two statements.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)

    def weights(self) -> dict[str, float]:
        return self.model_dump(by_alias=True)


class FimSection(Section):
    structured_rate: float = Field(
        0.7, ge=0, le=1, description="Fraction of files whose middle is one syntax node (tree-sitter)."
    )
    random_rate: float = Field(0.0, ge=0, le=1, description="Fraction of files cut at two random characters.")
    spm_rate: float = Field(0.5, ge=0, le=1, description="Fraction of FIM samples in suffix-prefix-middle order.")
    fallback: Literal["random", "plain", "skip"] = Field(
        "random", description="What a structured-FIM file without a grammar or with parse errors becomes."
    )
    categories: FimCategories = Field(default_factory=FimCategories, description="Structured-FIM node weights.")

    @model_validator(mode="after")
    def _rates_fit(self) -> FimSection:
        if self.structured_rate + self.random_rate > 1 + 1e-9:
            raise ValueError(
                "data.fim.structured_rate + data.fim.random_rate must be at most 1 (the rest is plain next-token)"
            )
        if self.structured_rate > 0 and sum(self.categories.weights().values()) <= 0:
            raise ValueError("data.fim.categories: at least one category needs a weight above 0")
        return self


class ContextSection(Section):
    retrieval: bool = Field(
        False, description="Prepend BM25-retrieved snippets of other files of the repository to each sample."
    )
    k: int = Field(3, gt=0, description="Snippets retrieved per sample (fewer when the budget is spent).")
    budget_chars: int = Field(2048, gt=0, description="Characters of retrieved context per sample at most.")
    repo_name: str | None = Field(None, description="Repository name for <repo_name> (None = the repo folder's name).")
    neighbors: int = Field(
        0,
        ge=0,
        description="Files just before each file in a related-files order (its imports first, same folder together) "
        "shown in front of its sample, within budget_chars; 0 = off.",
    )
    order_randomness: float = Field(
        0.1, ge=0, le=1, description="Chance of each random choice in that file order (0 = fully deterministic)."
    )


class DataSection(Section):
    sources: list[Source] = Field(min_length=1, description="Where training text comes from.")
    fim: FimSection = Field(default_factory=FimSection, description="Fill-in-the-middle transform.")
    context: ContextSection = Field(default_factory=ContextSection, description="Repository-level context.")
    loss_on: Literal["all", "middle"] = Field(
        "all", description="Tokens in the loss for FIM samples: the whole sample, or only middle + end token."
    )
    max_length: int = Field(2048, gt=8, le=MAX_SEQUENCE_TOKENS, description="Tokens per training sequence (longer documents are split).")
    packing: bool = Field(True, description="Pack samples into full sequences; documents never attend to each other.")
    packing_layout: Literal["auto", "flatten", "rows"] = Field(
        "auto",
        description="Packed batches: one flattened sequence, each document attended alone (flash-attention's varlen "
        "kernels, or sdpa per document), or rows of max_length; 'auto' = flatten with those kernels and on a GPU, "
        "else rows.",
    )
    eval_split: float = Field(0.05, ge=0, lt=1, description="Fraction of documents held out for eval loss.")
    dedup: Literal["none", "exact", "near"] = Field(
        "near", description="Drop duplicate files: identical ones (exact), or also near-duplicates (MinHash LSH)."
    )
    near_dup_threshold: float = Field(
        0.85, gt=0, le=1, description="Jaccard similarity above which files are near-duplicates."
    )
    scrub_secrets: bool = Field(True, description="Replace keys, tokens, passwords and private keys by a placeholder.")
    cache: bool = Field(True, description="Reuse (and store) the tokenized dataset for identical data settings.")
    sft: SftSection = Field(default_factory=SftSection, description="Instruction data: template and filters.")
    cache_dir: str | None = Field(
        None, description="Where prepared datasets are cached (None = $FINETUNE_CACHE or ~/.cache/finetune/prepared)."
    )


class TrainingSection(Section):
    batch_size: int = Field(4, gt=0, le=MAX_BATCH, description="Sequences per device per step.")
    gradient_accumulation_steps: int = Field(1, gt=0, le=MAX_BATCH, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup: float = Field(0.03, ge=0, description="Warmup: a fraction of all steps if < 1, else a number of steps.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1 = use epochs).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    optim: str = Field(
        "auto",
        description="Optimizer name for transformers; 'auto' = paged_adamw_8bit for QLoRA on GPU, else adamw_torch.",
    )
    gradient_checkpointing: bool | Literal["auto", "selective"] = Field(
        "auto",
        description="Recompute activations in the backward pass to save memory: true = the whole layer; 'selective' "
        "= keep each layer's attention output and recompute the rest (TRL's selective checkpointing: faster at long "
        "sequences, one hidden-size tensor more per layer); 'auto' = true on GPUs, off on CPU.",
    )
    checkpoint_every_n_layers: int = Field(
        1,
        ge=1,
        description="With checkpointing on, checkpoint only every N-th decoder layer; the others keep their "
        "activations (faster, more memory; transformers >= 5.24).",
    )
    offload_activations: bool = Field(
        False,
        description="With checkpointing on, hold the activations kept for recomputation in pinned CPU memory (frees "
        "layers x tokens x hidden of GPU memory at long sequences; slower; transformers >= 5.24).",
    )
    liger: bool | Literal["auto"] = Field(
        "auto",
        description="Liger Triton kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU); 'auto' = on a GPU "
        "when liger-kernel is installed.",
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile (slow first steps).")
    logging_steps: int = Field(10, gt=0, description="Log loss, learning rate and tokens/s every N steps.")
    save_steps: int = Field(500, gt=0, description="Save a checkpoint every N steps.")
    save_total_limit: int | None = Field(2, gt=0, description="Keep at most N checkpoints (None = all).")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps (None = at the end only).")
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = Field("none", description="Experiment tracker.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")


    @model_validator(mode="after")
    def _steps_make_sense(self) -> TrainingSection:
        if self.max_steps == 0:
            raise ValueError("max_steps=0 trains nothing: give a number of steps above 0, or -1 to use epochs")
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ValueError(
                f"warmup={self.warmup:g}: below 1 it is a fraction of all steps, from 1 on a whole number of "
                "steps; write e.g. 0.05 or 20"
            )
        return self


class EvalSection(Section):
    fim_items: int = Field(
        0, ge=0, description="Held-out FIM items completed during training (exact match/edit similarity in metrics.jsonl); 0 = off."
    )
    every_steps: int | None = Field(
        None, gt=0, description="Complete them every N steps (None = training.eval_steps; always before and after)."
    )
    max_new_tokens: int = Field(64, gt=0, description="Tokens generated per item at most.")
    batch_size: int = Field(8, gt=0, description="Items generated together.")


class Recipe(Section):
    output_dir: str = Field(description="Where the adapter/model, tokenizer, recipe and metrics are written.")
    method: Literal["lora", "qlora", "dora", "full"] = Field("lora", description="What is trained.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for data sampling, initialisation and training order.")
    overwrite: bool = Field(False, description="Replace an existing output_dir from another run (unless resume=true).")
    resume: bool = Field(
        False,
        description="Continue from the newest complete checkpoint of this output_dir; wins over overwrite=true.",
    )
    model: ModelSection
    adapter: AdapterSection = Field(default_factory=AdapterSection, description="LoRA/DoRA settings.")
    quantization: QuantizationSection = Field(default_factory=QuantizationSection, description="QLoRA settings.")
    data: DataSection
    training: TrainingSection = Field(default_factory=TrainingSection, description="Optimisation and logging.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Completion quality measured during training.")

    @model_validator(mode="after")
    def _check_combinations(self) -> Recipe:
        if self.quantization.fp32_norms and self.method != "qlora":
            raise ValueError("quantization.fp32_norms applies to method=qlora only: remove it or set method=qlora")
        return self
