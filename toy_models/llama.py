"""LLaMA models for optimizer studies: the paper's 60M..7B configs and CPU-sized ones.

Every model is a ``transformers.LlamaForCausalLM`` with SDPA attention, an untied output
head and every Linear/Embedding weight drawn from N(0, 0.02) (RMSNorm gains start at 1), as
in the SCALE/GaLore code. Configs are JSON files in ``toy_models/configs``.

Parameter counts are computed from the config alone (so the 7B numbers need no 7B model):
per block ``4 h^2`` (q, k, v, o with as many KV heads as heads) ``+ 3 h f`` (gate, up, down)
``+ 2 h`` (two RMSNorm gains); plus ``V h`` embedding, ``V h`` head and ``h`` final norm.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PAPER_MODELS = ("60m", "130m", "350m", "1b", "7b")
CPU_MODELS = ("nano", "nano2k", "micro", "micro2k", "mini", "cpu60m", "cpu60m-half")


class UnknownModelError(ValueError):
    """A model name with no config file; the message lists the choices."""
    pass


def model_names() -> list[str]:
    """The names of the shipped configs (``nano`` .. ``7b``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def read_config(name: str, vocab_size: int | None = None, **overrides) -> SimpleNamespace:
    """A named model's config file as attributes (``hidden_size``, ``vocab_size``, ...),
    optionally resized to a vocab: enough for ``matrix_shapes`` and the counts, without
    ``transformers`` (whose ``LlamaConfig`` takes seconds to import; ``load_config`` builds it
    from these fields)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    fields = json.loads(path.read_text())
    fields.pop("description", None)
    fields.pop("tokenizer", None)
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    fields.update(overrides)
    return SimpleNamespace(**fields)


def load_config(name: str, vocab_size: int | None = None, **overrides):
    """The ``LlamaConfig`` of a named model (``nano`` .. ``7b``), optionally resized to a vocab."""
    from transformers import LlamaConfig

    return LlamaConfig(**vars(read_config(name, vocab_size, **overrides)), attn_implementation="sdpa")


def model_tokenizer(name: str) -> str | None:
    """The bundled tokenizer a CPU model is shaped for (its config's ``tokenizer`` field, a
    directory under ``data/tokenizer``), or None for the default 8192-token BPE."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    return json.loads(path.read_text()).get("tokenizer")


def build_model(config, seed: int = 0, dtype=None):
    """Instantiate ``LlamaForCausalLM`` with the paper's N(0, 0.02) init, deterministically."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        std = config.initializer_range
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                    module.weight.normal_(0.0, std)
    if dtype is not None:
        model = model.to(dtype)
    return model


def matrix_shapes(config) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every parameter as ``(name, role, shape)`` from the config; roles as in ``analysis.optim.roles``."""
    h, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    rows = [("model.embed_tokens.weight", "embedding", (v, h))]
    for i in range(config.num_hidden_layers):
        block = f"model.layers.{i}"
        rows += [(f"{block}.self_attn.q_proj.weight", "hidden", (h, h)),
                 (f"{block}.self_attn.k_proj.weight", "hidden", (kv, h)),
                 (f"{block}.self_attn.v_proj.weight", "hidden", (kv, h)),
                 (f"{block}.self_attn.o_proj.weight", "hidden", (h, h)),
                 (f"{block}.mlp.gate_proj.weight", "hidden", (f, h)),
                 (f"{block}.mlp.up_proj.weight", "hidden", (f, h)),
                 (f"{block}.mlp.down_proj.weight", "hidden", (h, f)),
                 (f"{block}.input_layernorm.weight", "vector", (h,)),
                 (f"{block}.post_attention_layernorm.weight", "vector", (h,))]
    rows += [("model.norm.weight", "vector", (h,)), ("lm_head.weight", "output", (v, h))]
    return rows


def parameter_counts(config) -> dict[str, int]:
    """Parameters per role (embedding, hidden, output, vector) and their total."""
    counts = {"embedding": 0, "hidden": 0, "output": 0, "vector": 0}
    for _, role, shape in matrix_shapes(config):
        n = 1
        for size in shape:
            n *= size
        counts[role] += n
    counts["total"] = sum(counts.values())
    return counts


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token, PaLM convention: ``6 N + 12 L h T``.

    N counts every matrix parameter that takes part in a matmul (embedding lookup excluded,
    output head included); the second term is attention's QK^T and AV over a context of T.
    """
    counts = parameter_counts(config)
    n_matmul = counts["hidden"] + counts["output"]
    return 6.0 * n_matmul + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len
