"""The training configuration: one frozen dataclass, validated in one place.

Batch sizes are in sequences. ``batch_size`` is the global batch of one optimizer step;
``micro_batch_size`` is what one forward/backward sees on one process; gradient accumulation
is derived: ``accum = batch_size / (micro_batch_size * world_size)`` and must be a whole number.
The optimizer's hyperparameters are one ``OptimizerConfig`` (``hyper``), the same class the
protocol's presets hold; the recipe checks them and fills their defaults
(``analysis.optim.recipes.Recipe.resolve``). The run record (``to_dict``: config.json, the
segments' settings) and the command line name them flat, Adam's betas as ``adam_betas``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from analysis.instrument.schedule import InstrumentConfig
from analysis.optim.hyper import OptimizerConfig, RecipeError
from analysis.optim.recipes import get_recipe
from toy_models.data import HUB_DATASETS
from toy_models.llama import (
    CPU_MODELS,
    PAPER_MODELS,
    UnknownModelError,
    is_config_path,
    model_tokenizer,
    read_config,
)

PRECISIONS = ("auto", "fp32", "bf16", "bf16-mixed", "fp64")
# The optimizer's settings as the run record and the flags name them -> OptimizerConfig's
# field. A record always holds these; OptimizerConfig's other fields only where a run sets
# them away from their defaults (so a record states every setting its run used).
RECORDED_HYPER = {
    "momentum": "momentum",
    "lr": "lr",
    "adam_lr": "adam_lr",
    "beta": "beta",
    "adam_betas": "betas",
    "embedding_lr_mult": "embedding_lr_mult",
    "output_lr_mult": "output_lr_mult",
    "vector_rule": "vector_rule",
    "weight_decay": "weight_decay",
}
HYPER_KEYS = RECORDED_HYPER | {
    f.name: f.name for f in fields(OptimizerConfig) if f.name not in RECORDED_HYPER.values()
}


class ConfigError(ValueError):
    """A bad setting; the message names the problem and the fix."""


def hyper_record(hyper: OptimizerConfig, every: bool = False) -> dict:
    """``hyper`` by its record names: the ``RECORDED_HYPER`` ones, then the other fields set
    away from their defaults (``every``: all of them)."""
    values, default = asdict(hyper), asdict(OptimizerConfig())
    return {
        key: values[name]
        for key, name in HYPER_KEYS.items()
        if every or key in RECORDED_HYPER or values[name] != default[name]
    }


def _hyper_from_flat(hyper: OptimizerConfig, flat: dict) -> OptimizerConfig:
    """``hyper`` with the flat record's optimizer settings applied (``adam_betas`` -> ``betas``)."""
    # JSON and argparse give a tuple field (betas, spam_gammas) back as a list
    return replace(hyper, **{HYPER_KEYS[k]: tuple(v) if isinstance(v, list) else v for k, v in flat.items()})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the fields below); ``validate`` checks it."""

    model: str = "micro"
    optimizer: str = "scale"  # a recipe name
    hyper: OptimizerConfig = OptimizerConfig()  # its hyperparameters (None: the recipe's)
    steps: int = 300
    warmup_steps: int | None = None  # None -> 10% of steps
    min_lr_ratio: float = 0.1
    batch_size: int = 16
    micro_batch_size: int | None = None  # None -> batch_size / world_size
    seq_len: int = 256
    eval_every: int = 100
    eval_tokens: int | None = None  # None -> 32_768 on the CPU models, 10M (paper) otherwise
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 (pure, as the paper) | bf16-mixed | fp64
    data: str = "bundled"  # bundled | path/glob of shards | c4
    stream: bool | None = None  # read the data as a stream; None -> only for c4
    tokenizer: str | None = None  # None -> the model's bundled BPE (t5-base for c4)
    log_every: int = 1
    save_every: int = 0  # checkpoint interval in steps; 0 -> only at the end
    keep_checkpoints: int = 2
    label: str | None = None  # a display name for figures (default: optimizer)
    compile: bool = False  # torch.compile the model and the fused optimizer step
    fused: bool | None = None  # the optimizer's fused step; None -> wherever it applies
    grad_clip: float | None = None  # global L2 norm to clip gradients to; None -> no clipping
    parallel: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard), under torchrun
    instrument: InstrumentConfig | None = None

    def validate(self, world_size: int = 1) -> TrainConfig:
        """Raise ``ConfigError`` naming the first bad setting and its fix; else return self."""
        try:
            read_config(self.model)
            self.optimizer_config()
        except (UnknownModelError, RecipeError) as err:
            raise ConfigError(str(err)) from None
        checks = [
            (self.steps > 0, f"steps must be > 0, got {self.steps}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (
                self.micro_batch_size is None or self.micro_batch_size > 0,
                f"micro_batch_size must be > 0, got {self.micro_batch_size}",
            ),
            (self.log_every >= 1, f"log_every must be >= 1 (1: every step), got {self.log_every}"),
            (self.save_every >= 0, f"save_every must be >= 0 (0: only at the end), got {self.save_every}"),
            (
                self.keep_checkpoints >= 0,
                f"keep_checkpoints must be >= 0 (0: keep every one), got {self.keep_checkpoints}",
            ),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2^32), got {self.seed}"),
            (self.seq_len > 1, f"seq_len must be > 1, got {self.seq_len}"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0: only at the end)"),
            (self.eval_tokens is None or self.eval_tokens > 0, "eval_tokens must be > 0"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (
                self.precision in PRECISIONS,
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}",
            ),
            (
                self.parallel in ("ddp", "fsdp"),
                f"unknown parallel mode {self.parallel!r}; choose ddp or fsdp",
            ),
            (
                self.parallel == "ddp" or self.instrument is None,
                "--instrument reads whole gradients, which FSDP2 shards across processes; "
                "instrument with --parallel ddp",
            ),
            (
                self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
                f"grad_clip must be a norm > 0 (e.g. --grad_clip 1.0; leave it out for no "
                f"clipping), got {self.grad_clip}",
            ),
            (
                self.warmup_steps is None or 0 <= self.warmup_steps <= self.steps,
                f"warmup_steps must be in [0, steps], got {self.warmup_steps}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.accumulation(world_size)
        return self

    def optimizer_config(self) -> OptimizerConfig:
        """The recipe's hyperparameters with its defaults filled in (``RecipeError`` if bad)."""
        return get_recipe(self.optimizer).resolve(self.hyper)

    def fused_step(self) -> bool:
        """Whether the optimizer takes its fused step: ``fused`` when set, else yes (wherever a
        rule has one; ``analysis.training.setup.fused_step_for`` falls back when the CPU kernels
        cannot be built)."""
        return True if self.fused is None else self.fused

    def micro(self, world_size: int = 1) -> int:
        return self.micro_batch_size or max(1, self.batch_size // world_size)

    def accumulation(self, world_size: int = 1) -> int:
        micro = self.micro(world_size)
        per_step = micro * world_size
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by micro_batch_size "
                f"{micro} x world size {world_size}; choose a batch that is a "
                f"multiple of {per_step}"
            )
        return self.batch_size // per_step

    def eval_budget(self) -> int:
        """Validation tokens per evaluation: ``eval_tokens``, else 10M for the paper's models
        (as its protocol) and 32k for the CPU-sized ones."""
        if self.eval_tokens is not None:
            return self.eval_tokens
        return 10_000_000 if self.model in PAPER_MODELS else 32_768

    def streaming(self) -> bool:
        return self.stream if self.stream is not None else self.data in HUB_DATASETS

    def tokenizer_name(self) -> str | None:
        """``tokenizer``, else T5's for a hub dataset (the paper's C4 path), else the model's
        bundled BPE (None: the default one)."""
        return self.tokenizer or ("t5-base" if self.data in HUB_DATASETS else model_tokenizer(self.model))

    def vocab_size(self, tokenizer_size: int) -> int:
        """The model's vocabulary for a tokenizer of ``tokenizer_size`` tokens: a CPU model is
        shaped to its tokenizer; a paper model keeps its config's rows (32000) and grows to hold
        a larger tokenizer (T5's 32100: 32000 SentencePiece pieces and 100 sentinels); a user's
        config keeps its ``vocab_size`` (refused when smaller than the tokenizer) or, without
        one, takes the tokenizer's."""
        if self.model in CPU_MODELS:
            return tokenizer_size
        configured = read_config(self.model).vocab_size
        if is_config_path(self.model):  # a user's shape: stated or refused, never replaced
            if configured is None:
                return tokenizer_size
            if configured < tokenizer_size:
                raise ConfigError(
                    f"model config {self.model}: vocab_size {configured} is smaller than "
                    f"the tokenizer's {tokenizer_size} tokens; set vocab_size >= "
                    f"{tokenizer_size}, or leave it out to take the tokenizer's"
                )
            return configured
        return max(configured, tokenizer_size)

    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    def to_dict(self) -> dict:
        """The run record's form: flat, the optimizer's settings by their ``RECORDED_HYPER``
        names, then any other ``OptimizerConfig`` field the run set away from its default."""
        values = asdict(self)
        del values["hyper"]
        flat = hyper_record(self.hyper)
        at = list(values).index("optimizer") + 1  # the record's order: the optimizer, then its settings
        items = list(values.items())
        return dict(items[:at] + list(flat.items()) + items[at:])

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config of a record (``to_dict``'s form; also a command line's parsed flags)."""
        known = {f.name for f in fields(cls)} - {"hyper"}
        unknown = set(values) - known - set(HYPER_KEYS)
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}")
        values = dict(values)
        if isinstance(values.get("instrument"), dict):
            values["instrument"] = InstrumentConfig(**values["instrument"])
        flat = {k: values.pop(k) for k in list(values) if k in HYPER_KEYS}
        return cls(hyper=_hyper_from_flat(OptimizerConfig(), flat), **values)
