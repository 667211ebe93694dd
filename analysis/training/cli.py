"""``scale-lab train`` (``python -m analysis.training``): the trainer's command line.

Flags mirror ``TrainConfig``'s record (``to_dict``) key by key; the SCALE seed release's flag
names are accepted as aliases where they mean the same thing (``--num_training_steps``,
``--total_batch_size``, ``--max_length``, ``--dtype``, ``--model_config``), translated by
``translate_paper_flags``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

import torch

from analysis.arguments import Parser
from analysis.instrument.schedule import InstrumentConfig
from analysis.optim.hyper import RecipeError
from analysis.optim.placement import ADVISED, read_placement
from analysis.optim.recipes import recipe_table
from analysis.optim.roles import RoleError
from analysis.recording import RecordingError, run_config
from analysis.training.checkpoint import CheckpointError
from analysis.training.config import ConfigError, TrainConfig
from analysis.training.dryrun import plan
from analysis.training.loop import train
from analysis.training.stopping import TrainingDiverged, TrainingInterrupted
from toy_models.corpus import CorpusError
from toy_models.files import NotWritable


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``scale-lab train`` (defaults from ``TrainConfig``)."""
    p = Parser(prog="scale-lab train", description="Train a LLaMA with a recipe.")
    d = TrainConfig()
    record = d.to_dict()  # the optimizer's settings by their flag names
    p.add_argument(
        "--model",
        default=d.model,
        help="nano | micro | mini | 60m | 130m | 350m | 1b | 7b, or a path to a LLaMA "
        "config JSON of your own",
    )
    p.add_argument(
        "--optimizer",
        default=d.optimizer,
        help="a recipe name, 'list', or advised:PATH (a `scale-lab advise` placement)",
    )
    p.add_argument("--momentum", default=None, help="momentum placement: none | output | embedding | all")
    p.add_argument(
        "--momentum_on",
        nargs="+",
        default=(),
        metavar="NAME",
        help="also momentum on these matrices (parameter names or globs, e.g. lm_head.weight 'model.layers.0.*')",
    )
    for name in ("lr", "adam_lr"):
        p.add_argument(f"--{name}", type=float, default=None)
    for name in ("beta", "weight_decay", "min_lr_ratio", "embedding_lr_mult", "output_lr_mult"):
        p.add_argument(f"--{name}", type=float, default=record[name])
    p.add_argument(
        "--adam_betas",
        type=float,
        nargs=2,
        default=record["adam_betas"],
        metavar=("B1", "B2"),
        help="Adam's betas (vectors, and AdamW partitions)",
    )
    p.add_argument(
        "--vector_rule",
        default=None,
        help="published (the SCALE release's Adam on vectors; ladder default) | torch",
    )
    # the seed release's flag names are accepted as aliases where they mean the same thing
    aliases = {
        "steps": ["--num_training_steps"],
        "batch_size": ["--total_batch_size"],
        "seq_len": ["--max_length"],
    }
    for name in (
        "steps",
        "batch_size",
        "seq_len",
        "eval_every",
        "eval_tokens",
        "seed",
        "log_every",
        "save_every",
        "keep_checkpoints",
    ):
        p.add_argument(f"--{name}", *aliases.get(name, []), dest=name, type=int, default=getattr(d, name))
    for name in ("warmup_steps", "micro_batch_size"):
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--device", default=d.device)
    p.add_argument(
        "--precision",
        "--dtype",
        dest="precision",
        default=d.precision,
        help="auto (CUDA: bf16-mixed; CPU: fp32 or bf16-mixed, whichever measures "
        "faster for the model, cached) | fp32 | bf16 (pure, as the paper) | "
        "bf16-mixed; the paper's --dtype bfloat16/float32 are accepted",
    )
    p.add_argument(
        "--model_config",
        default=None,
        help="the paper's configs/llama_<size>.json path (same as --model <size>)",
    )
    p.add_argument("--scheduler", default="cosine", help="cosine (the only schedule, as the paper)")
    p.add_argument("--data", default=d.data, help="bundled | path/glob of json/parquet shards | c4")
    p.add_argument(
        "--stream",
        action="store_true",
        default=None,
        help="read --data as a stream, each rank its own share (always on for c4)",
    )
    p.add_argument("--tokenizer", default=None, help="default: the model's bundled BPE; t5-base for c4")
    p.add_argument("--label", default=None)
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model, and the optimizer's fused step where its rule has "
        "one (analysis.optim.fused: SCALE's matrices, Adam's vectors)",
    )
    p.add_argument(
        "--grad_clip",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the gradient to this global L2 norm (torch.nn.utils.clip_grad_norm_'s "
        "rule, after accumulation); default: no clipping, as the paper",
    )
    p.add_argument(
        "--fused",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the optimizer's fused step (--no-fused: the readable one); default: with --compile",
    )
    p.add_argument(
        "--parallel",
        default=d.parallel,
        help="ddp | fsdp (FSDP2 fully_shard per block) when run under torchrun",
    )
    p.add_argument("--instrument", action="store_true", help="record the default statistics")
    p.add_argument("--out", default=None, help="run directory (default runs/<optimizer>-<model>-s<seed>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--allow-change",
        action="store_true",
        help="with --resume: accept a changed experiment setting (recorded in segments.jsonl)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build on the meta device and print memory per GPU (DDP, FSDP2) and FLOPs; train nothing",
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs the dry run plans for (default 1)")
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also write every recorded statistic to TensorBoard event files in DIR",
    )
    p.add_argument(
        "--wandb",
        default=None,
        metavar="PROJECT",
        help="also send every recorded statistic to a W&B run (WANDB_MODE=offline: local)",
    )
    p.add_argument(
        "--trackio",
        default=None,
        metavar="PROJECT",
        help="also send every recorded statistic to a trackio run (local-first)",
    )
    return p


def translate_paper_flags(args):
    """Map the seed release's flag values onto ours (``--dtype bfloat16``, ``--model_config``);
    ``ConfigError`` for a value with no counterpart. Returns the edited namespace."""
    args.precision = {"bfloat16": "bf16", "float32": "fp32"}.get(args.precision, args.precision)
    if args.model_config:
        match = re.search(r"llama_(\w+)\.json$", args.model_config)
        if not match:
            raise ConfigError(
                f"--model_config {args.model_config!r} is not a configs/llama_<size>.json "
                "path; use --model 60m | 130m | 350m | 1b | 7b"
            )
        args.model = match.group(1)
    if args.scheduler != "cosine":
        raise ConfigError(
            f"--scheduler {args.scheduler!r} is not implemented; the paper and this "
            "trainer use cosine (warmup, then cosine to min_lr_ratio)"
        )
    return args


def config_from(args) -> TrainConfig:
    """The run's config from parsed flags (the flags are the run record's keys; ``from_dict``)."""
    record = {
        k: v
        for k, v in vars(args).items()
        if k
        not in (
            "instrument",
            "out",
            "overwrite",
            "resume",
            "no_progress",
            "allow_change",
            "tensorboard",
            "wandb",
            "trackio",
            "dry_run",
            "gpus",
            "model_config",
            "scheduler",
        )
    }
    if str(record.get("optimizer", "")).startswith(ADVISED):  # a placement file from `scale-lab advise`
        advised = read_placement(record["optimizer"])
        record["optimizer"] = advised["optimizer"]
        record["momentum_on"] = tuple(record.get("momentum_on") or ()) + advised["momentum_on"]
        if advised["beta"] is not None and record.get("beta") == TrainConfig().hyper.beta:
            record["beta"] = advised["beta"]  # the file's, unless --beta said otherwise
    return TrainConfig.from_dict(record | {"instrument": InstrumentConfig() if args.instrument else None})


def precision_said(run_dir) -> str:
    """What ``--precision auto`` picked and why, from the run's config.json ("" otherwise)."""
    measured = run_config(run_dir).get("precision_measured") if run_dir else None
    if not measured:
        return ""
    rates = ", ".join(f"{p} {r / 1e3:.1f}k" for p, r in measured["tokens_per_s"].items())
    return f"precision auto: {measured['precision']} (tokens/s {rates}); "


def trackers_for(args, out: str) -> dict:
    """The trackers the flags ask for, as ``train``'s ``trackers`` (name -> argument)."""
    wanted = {"tensorboard": args.tensorboard, "wandb": args.wandb, "trackio": args.trackio}
    return {name: value for name, value in wanted.items() if value}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print one summary line; 0 on success, 2 with one error line.

    Under torchrun (a process group joined for the run) the process ends here, with
    ``os._exit`` once its output is flushed and the run's files are closed: Python's
    finalization would otherwise meet gloo's worker threads, which can still be releasing the
    last collectives' tensors and need the GIL; finalization ends such a thread, which aborts
    the process ('terminate called without an active exception'), and destroying the group
    from Python instead can deadlock on the same GIL. Seen in gdb on torch 2.13."""
    code = _main(argv)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.optimizer == "list":
        print(recipe_table())
        return 0
    try:
        config = config_from(translate_paper_flags(args))
    except (ConfigError, RecipeError) as err:  # a paper flag with no counterpart, a bad placement file
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            print(plan(config, args.gpus).table())
        except (ConfigError, RecipeError, RoleError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    out = args.out or f"runs/{config.optimizer}-{config.model}-s{config.seed}"
    try:
        result = train(
            config,
            out=out,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.no_progress,
            allow_change=args.allow_change,
            trackers=trackers_for(args, out),
        )
    except (
        ConfigError,
        CorpusError,
        CheckpointError,
        RecordingError,
        TrainingDiverged,
        FileNotFoundError,
        NotWritable,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(
        f"validation loss {result.first_eval_loss:.3f} -> {result.final_eval_loss:.3f} "
        f"(perplexity {result.final_perplexity:.1f}; ln(vocab) = {math.log(result.vocab_size):.3f}); "
        f"optimizer state {result.optimizer_state_bytes / 1e6:.2f} MB, "
        f"{run_config(result.run_dir).get('optimizer_step', 'readable') if result.run_dir else ''} step; "
        f"{precision_said(result.run_dir)}run in {result.run_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
