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
    """A model that cannot be built: a name with no config file (the message lists the
    choices) or a config file with a bad shape (the message names the field and the fix)."""

    pass


# what a config must say, and the shape rules a LLaMA needs (checked one line per problem)
REQUIRED_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def model_names() -> list[str]:
    """The names of the shipped configs (``nano`` .. ``7b``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def is_config_path(name: str) -> bool:
    """Is ``--model`` a path to a config JSON of the user's (not a shipped name)?"""
    return name.endswith(".json") or "/" in name


def config_path(name: str) -> Path:
    """The config file of a shipped name or a user's path; ``UnknownModelError`` otherwise."""
    path = Path(name).expanduser() if is_config_path(name) else CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        if is_config_path(name):
            raise UnknownModelError(
                f"model config {name} does not exist; pass a LLaMA config JSON "
                f"(hidden_size, intermediate_size, num_hidden_layers, "
                f"num_attention_heads, ...) or one of {', '.join(model_names())}"
            )
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of {', '.join(model_names())}, "
            "or pass a path to a config JSON"
        )
    return path


def _config_fields(name: str) -> dict:
    path = config_path(name)
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UnknownModelError(f"model config {path} is not readable JSON ({err}); fix the file") from None
    if not isinstance(fields, dict):
        raise UnknownModelError(f"model config {path} is not a JSON object of config fields; fix the file")
    return fields


def check_shape(fields: dict, where: str) -> None:
    """One ``UnknownModelError`` line for the first shape a LLaMA cannot have: a missing or
    non-positive size, heads that do not divide the hidden size, KV heads that do not divide
    the heads, a vocabulary under 2."""
    missing = [k for k in REQUIRED_FIELDS if k not in fields]
    if missing:
        raise UnknownModelError(
            f"model config {where} lacks {', '.join(missing)}; add them (a LLaMA "
            "config as transformers writes it)"
        )
    sizes = {k: fields[k] for k in (*REQUIRED_FIELDS, "num_key_value_heads", "vocab_size") if k in fields}
    bad = [k for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise UnknownModelError(
            f"model config {where}: {bad[0]} must be a positive integer, got {sizes[bad[0]]!r}"
        )
    h, heads = fields["hidden_size"], fields["num_attention_heads"]
    kv = fields.get("num_key_value_heads", heads)
    if h % heads:
        near = sorted({heads * (h // heads), heads * (h // heads + 1)} - {0})
        raise UnknownModelError(
            f"model config {where}: hidden_size {h} is not divisible by "
            f"num_attention_heads {heads}; choose a multiple of {heads} (e.g. "
            f"{' or '.join(map(str, near))}) or another head count"
        )
    if heads % kv:
        raise UnknownModelError(
            f"model config {where}: num_attention_heads {heads} is not divisible by "
            f"num_key_value_heads {kv}; choose KV heads that divide the heads"
        )
    if "vocab_size" in fields and fields["vocab_size"] < 2:
        raise UnknownModelError(
            f"model config {where}: vocab_size {fields['vocab_size']} cannot hold a "
            "tokenizer; leave it out to take the tokenizer's size, or set one >= it"
        )


def read_config(name: str, vocab_size: int | None = None, **overrides) -> SimpleNamespace:
    """A model's config file (a shipped name or a path to a user's JSON) as attributes
    (``hidden_size``, ``vocab_size``, ...), its shape checked (``check_shape``), optionally
    resized to a vocab: enough for ``matrix_shapes`` and the counts, without ``transformers``
    (whose ``LlamaConfig`` takes seconds to import; ``load_config`` builds it from these
    fields). A user's config without ``vocab_size`` has ``vocab_size`` None until resized."""
    fields = _config_fields(name)
    fields.pop("description", None)
    fields.pop("tokenizer", None)
    check_shape(fields, str(config_path(name)) if is_config_path(name) else name)
    fields.setdefault("vocab_size", None)
    fields.setdefault("num_key_value_heads", fields["num_attention_heads"])
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    fields.update(overrides)
    return SimpleNamespace(**fields)


def load_config(name: str, vocab_size: int | None = None, **overrides):
    """The ``LlamaConfig`` of a model (a shipped name or a config path), optionally resized to
    a vocab; a field ``transformers`` refuses is one ``UnknownModelError`` line."""
    from transformers import LlamaConfig

    fields = {k: v for k, v in vars(read_config(name, vocab_size, **overrides)).items() if v is not None}
    defaults = {"initializer_range": 0.02, "tie_word_embeddings": False}
    try:
        return LlamaConfig(**(defaults | fields), attn_implementation="sdpa")
    except Exception as err:  # transformers' strict validation: its first line names the field
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnknownModelError(f"transformers refuses the model config {name} ({first})") from None


def model_tokenizer(name: str) -> str | None:
    """The bundled tokenizer a CPU model (or a user's config, by its ``tokenizer`` field) is
    shaped for, a directory under ``data/tokenizer``; None for the default 8192-token BPE."""
    return _config_fields(name).get("tokenizer")


def build_model(config, seed: int = 0, dtype=None):
    """Instantiate ``LlamaForCausalLM`` with the paper's N(0, 0.02) init, deterministically."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = LlamaForCausalLM(config)
        except (KeyError, ValueError, TypeError) as err:  # a field only the modules read
            raise UnknownModelError(
                f"transformers refuses the model config ({type(err).__name__}: {err})"
            ) from None
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
        rows += [
            (f"{block}.self_attn.q_proj.weight", "hidden", (h, h)),
            (f"{block}.self_attn.k_proj.weight", "hidden", (kv, h)),
            (f"{block}.self_attn.v_proj.weight", "hidden", (kv, h)),
            (f"{block}.self_attn.o_proj.weight", "hidden", (h, h)),
            (f"{block}.mlp.gate_proj.weight", "hidden", (f, h)),
            (f"{block}.mlp.up_proj.weight", "hidden", (f, h)),
            (f"{block}.mlp.down_proj.weight", "hidden", (h, f)),
            (f"{block}.input_layernorm.weight", "vector", (h,)),
            (f"{block}.post_attention_layernorm.weight", "vector", (h,)),
        ]
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
