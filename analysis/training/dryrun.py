"""``scale-lab train --dry-run``: what a run would need on GPUs, without a GPU.

The model is built on the ``meta`` device (shapes, no storage) and the recipe on it, so a
config that would fail to build fails here; nothing is trained. Printed per GPU, for DDP and
FSDP2 at the run's precision:

- **weights, gradients**: parameters x bytes (``bf16-mixed``: fp32 master weights and
  gradients; ``bf16``: 2 bytes, the paper's counting; ``fp32``: 4);
- **optimizer state**: the recipe's declared state (``analysis.optim.state``; a test checks the
  declarations against measured state on the CPU models) at the weights' bytes;
- **activations** of one micro-batch, an estimate: per token and decoder block the tensors a
  LLaMA block saves for backward, ``11 h + 4 f`` elements at the compute dtype (norm inputs and
  outputs, q, k, v before and after rotary, the attention output, the MLP's gate, up, activation
  and product; SDPA keeps no ``T x T`` scores), plus the fp32 logits and their gradient,
  ``2 V`` per token (itemized like Korthikanti et al. 2022, arXiv 2205.05198, for this block);
- DDP keeps everything whole plus one gradient-sized bucket copy; FSDP2 divides weights,
  gradients and state by the number of GPUs and holds two decoder blocks gathered at a time
  (the current one and the prefetched one) at the compute dtype, and for a whole-matrix rule
  (``analysis.optim.sharding.whole_matrix_update``) its largest matrix's gathered gradient,
  parameter, state and direction in fp32;
- **FLOPs per step**: ``flops_per_token`` (PaLM convention) x tokens per optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from analysis.optim.hyper import MOMENTUM_SUFFIX, PLACEMENTS
from analysis.optim.optimizer import NotShardable, check_shardable, whole_matrix_params
from analysis.optim.recipes import build_optimizer, declared_state_elements, get_recipe
from analysis.optim.state import total_elements
from analysis.training.config import TrainConfig
from toy_models.llama import build_model, flops_per_token, load_config, matrix_shapes
from toy_models.tokenizer import tokenizer_size

WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "bf16-mixed": 4}
COMPUTE_BYTES = {"fp32": 4, "bf16": 2, "bf16-mixed": 2}


@dataclass
class Plan:
    """A run's sizes (elements) and its memory per GPU (bytes) under DDP and FSDP2."""

    model: str
    optimizer: str
    precision: str
    gpus: int
    parameters: int
    state_elements: int
    activation_bytes: int
    block_parameters: int
    flops_per_step: float
    shardable: bool = True  # False: the recipe needs whole matrices, FSDP2 refuses it
    gathered_elements: int = 0  # the largest matrix a whole-matrix rule gathers under FSDP2
    placements: dict[str, int] = field(default_factory=dict)  # a ladder recipe: state per placement

    def per_gpu(self, parallel: str) -> dict[str, float]:
        """Bytes per GPU by part: weights, gradients, state, activations, extra, total."""
        wb, cb = WEIGHT_BYTES[self.precision], COMPUTE_BYTES[self.precision]
        parts = {
            "weights": self.parameters * wb,
            "gradients": self.parameters * wb,
            "state": self.state_elements * wb,
            "activations": self.activation_bytes,
        }
        if parallel == "fsdp":
            for part in ("weights", "gradients", "state"):
                parts[part] /= self.gpus
            # two gathered blocks, and a whole-matrix rule's gathered gradient, parameter, state
            # and direction (fp32) for its largest matrix
            parts["extra"] = 2 * self.block_parameters * cb + 4 * self.gathered_elements * 4
        else:
            parts["extra"] = self.parameters * wb  # DDP's gradient buckets
        parts["total"] = sum(parts.values())
        return parts

    def table(self) -> str:
        """The plan as lines of text (GB per GPU)."""
        lines = [
            f"dry run: {self.model}, {self.optimizer}, {self.precision}, {self.gpus} GPU(s); "
            f"{self.parameters / 1e6:,.1f}M parameters, optimizer state "
            f"{self.state_elements / 1e6:,.1f}M elements, "
            f"{self.flops_per_step / 1e12:,.2f} TFLOPs per optimizer step",
            f"{'GB per GPU':<10}"
            + "".join(f"{p:>13}" for p in ("weights", "gradients", "state", "activations", "extra", "total")),
        ]
        for parallel in ("ddp", "fsdp"):
            parts = self.per_gpu(parallel)
            lines.append(f"{parallel:<10}" + "".join(f"{v / 1e9:>13.2f}" for v in parts.values()))
        if not self.shardable:
            lines.append(f"(fsdp refuses {self.optimizer}: it needs whole matrices; run it with ddp)")
        if self.placements:  # the memory side of `scale-lab advise`, for this model and precision
            wb, adamw = WEIGHT_BYTES[self.precision], 2 * self.parameters
            lines.append("momentum placements, state GB per GPU (ddp / fsdp) and share of AdamW's state:")
            for name, elements in self.placements.items():
                lines.append(
                    f"  {name:<18} {elements * wb / 1e9:>9.2f} / {elements * wb / self.gpus / 1e9:.2f}"
                    f"  {elements / adamw:>6.1%}"
                )
        return "\n".join(lines)


def activation_bytes(config, tokens: int, compute_bytes: int) -> int:
    """The module docstring's estimate for ``tokens`` tokens of one micro-batch."""
    h, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    per_token = config.num_hidden_layers * (11 * h + 4 * f) * compute_bytes + 2 * v * 4
    return tokens * per_token


def plan(config: TrainConfig, gpus: int = 1) -> Plan:
    """Build ``config``'s model and optimizer on the meta device and size the run."""
    config.validate(gpus)
    # the trainer's vocabulary rule (T5's 32100 rows on C4, the paper's path)
    model_config = load_config(
        config.model, vocab_size=config.vocab_size(tokenizer_size(config.tokenizer_name()))
    )
    with torch.device("meta"):
        model = build_model(model_config)
    optimizer_config = config.optimizer_config()
    optimizer = build_optimizer(config.optimizer, model, optimizer_config)  # fails as a run would
    try:
        check_shardable(optimizer, config.optimizer)
        shardable = True
    except NotShardable:
        shardable = False
    rank = optimizer_config.rank or max(1, model_config.hidden_size // 4)
    shapes = [(role, shape) for _, role, shape in matrix_shapes(model_config)]
    recipe = get_recipe(config.optimizer)
    placed = PLACEMENTS[optimizer_config.momentum] if recipe.placeable else ()
    # matrices momentum_on names beyond the placement's roles: one momentum buffer each
    named = sum(
        p.numel()
        for g in optimizer.param_groups
        if g.get("label", "").endswith(MOMENTUM_SUFFIX)
        and g["label"].removesuffix(MOMENTUM_SUFFIX) not in placed
        for p in g["params"]
    )
    placements = (
        {
            name: total_elements(recipe.state_rules(name), shapes, rank)
            for name in ("none", "output", "embedding", "all")
        }
        if recipe.placeable
        else {}
    )
    precision = "bf16-mixed" if config.precision == "auto" else config.precision  # as on CUDA
    micro = config.micro(gpus)
    block = sum(p.numel() for p in model.model.layers[0].parameters())
    return Plan(
        config.model,
        config.optimizer,
        precision,
        gpus,
        sum(p.numel() for p in model.parameters()),
        declared_state_elements(config.optimizer, shapes, rank, optimizer_config.momentum) + named,
        activation_bytes(model_config, micro * config.seq_len, COMPUTE_BYTES[precision]),
        block,
        flops_per_token(model_config, config.seq_len) * config.batch_size * config.seq_len,
        shardable,
        max((p.numel() for p in whole_matrix_params(optimizer)), default=0),
        placements,
    )
