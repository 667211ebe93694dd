"""Train a LLaMA with any recipe: ``train(config) -> TrainResult``, and its CLI.

The loop, top to bottom, per optimizer step ``s`` (0-based; the recorded step is ``s + 1``):

1. global batch ``s`` (``toy_models.data``) is cut into ``world_size x accum`` micro-batches;
   this process takes its ``accum`` of them;
2. each micro-batch's mean token loss is weighted by ``its tokens / the step's tokens`` (times
   the world size, which DDP's gradient averaging divides out), so the accumulated gradient
   is the gradient of the step's token-mean loss whatever the split;
3. ``optimizer.step()``, then the scheduler: linear warmup ``(s+1)/warmup``, then cosine from
   1 to ``min_lr_ratio`` at the last step, multiplying every group's own peak lr (so the
   vectors' ``adam_lr`` follows the same shape);
4. every ``eval_every`` steps, at step 0 and at the end: token-weighted validation loss
   ``sum(token losses) / tokens`` over a fixed token budget, and its perplexity.

The same code runs single-process and under ``torchrun``: DDP (``no_sync`` on non-final
micro-steps) or FSDP2 (``--parallel fsdp``: ``fully_shard`` per block, the optimizer on row
shards; see ``analysis.parallel``). On CPU a fixed seed gives bitwise-identical runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis import checkpoint, parallel
from analysis.config import ConfigError, TrainConfig
from analysis.evaluation import evaluate, hardware_stats, recorded_first_eval, token_loss
from analysis.recipes import OptimizerConfig, build_optimizer, get_recipe
from analysis.recording import METRICS, RESULT, SPECTRA, Recorder, provenance

RUN_FILES = ("config.json", METRICS, SPECTRA, RESULT)


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainResult:
    run_dir: Path | None
    steps: int
    first_eval_loss: float
    final_eval_loss: float
    final_perplexity: float
    final_train_loss: float
    tokens_per_s: float
    optimizer_state_bytes: int
    vocab_size: int
    losses: list[float]


def lr_lambda(config: TrainConfig):
    warmup, total, floor = config.warmup(), config.steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def resolve_device(config: TrainConfig) -> torch.device:
    """``auto``: CUDA when present. Under torchrun each process takes GPU ``LOCAL_RANK``."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no GPU; use --device cpu")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16-mixed" if device.type == "cuda" else "fp32"


def prepare_run_dir(out: str | Path, overwrite: bool, resume: bool) -> Path:
    """Create (or reuse, with resume) a run directory, refusing to clobber a finished one."""
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()) and not (overwrite or resume):
        raise ConfigError(f"run directory {run_dir} already exists; pass --overwrite to replace "
                          "it or --resume to continue it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to output directory {run_dir} ({err.strerror}); "
                          "choose another --out") from None
    if overwrite and not resume:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for ckpt in checkpoint.checkpoints(run_dir):
            ckpt.unlink()
    return run_dir


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank, world


def build(config: TrainConfig, device: torch.device, precision: str, world: int = 1,
          rank: int = 0):
    """Tokenizer, data, model and optimizer for a config (shared by train and the benchmarks).

    With ``parallel="fsdp"`` and several processes the model is sharded before the optimizer
    is built (it must see the ``DTensor`` parameters), and a recipe that needs whole matrices
    is refused."""
    from toy_models.data import HUB_DATASETS, load_blocks
    from toy_models.llama import CPU_MODELS, build_model, load_config
    from toy_models.stream import StreamData
    from toy_models.tokenizer import load_tokenizer

    tokenizer_name = config.tokenizer or ("t5-base" if config.data in HUB_DATASETS else None)
    tokenizer = load_tokenizer(tokenizer_name) if tokenizer_name else load_tokenizer()
    if config.streaming():  # each rank reads its own share of the stream
        data = StreamData(config.data, tokenizer, config.seq_len, seed=config.seed,
                          rank=rank, world_size=world)
    else:
        data = load_blocks(tokenizer, config.seq_len, source=config.data, seed=config.seed)
    base = load_config(config.model)
    vocab = len(tokenizer) if config.model in CPU_MODELS else max(base.vocab_size, len(tokenizer))
    model = build_model(load_config(config.model, vocab_size=vocab), seed=config.seed)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    model = model.to(device)
    if sharded(config, world):
        parallel.shard_model(model)
    recipe = get_recipe(config.optimizer)
    opt_cfg = OptimizerConfig(lr=config.lr or recipe.default_lr,
                              adam_lr=config.adam_lr or recipe.default_adam_lr,
                              beta=config.beta, weight_decay=config.weight_decay,
                              momentum=config.momentum)
    optimizer = build_optimizer(config.optimizer, model, opt_cfg)
    if sharded(config, world):
        parallel.check_shardable(optimizer, config.optimizer)
    return tokenizer, data, model, optimizer


def sharded(config: TrainConfig, world: int) -> bool:
    return config.parallel == "fsdp" and world > 1


def train(config: TrainConfig, out: str | Path | None = None, overwrite: bool = False,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``config``; with ``out``, record into that run directory (see ``analysis.recording``)."""
    config.validate(int(os.environ.get("WORLD_SIZE", "1")))  # refuse bad input before any setup
    rank, world = _distributed()
    accum = config.accumulation(world)
    micro = config.micro(world)
    device = resolve_device(config)
    precision = resolve_precision(config, device)
    run_dir = prepare_run_dir(out, overwrite, resume) if out is not None and rank == 0 else (
        Path(out) if out is not None else None)

    torch.manual_seed(config.seed)
    tokenizer, data, model, optimizer = build(config, device, precision, world, rank)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    ident = checkpoint.identity(config.to_dict(), model,
                                layout="fsdp" if sharded(config, world) else "plain")
    start = 0
    if resume and run_dir is not None:
        start = checkpoint.resume(run_dir, model, optimizer, scheduler, data, ident,
                                  sharded(config, world), rank)
    train_model = parallel.wrap(model, config.parallel, world)
    if config.compile:
        train_model = torch.compile(train_model)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16))
                if precision == "bf16-mixed" else contextlib.nullcontext)

    recorder = Recorder(run_dir) if run_dir is not None and rank == 0 else None
    if recorder is not None:
        recorder.write_config({"config": config.to_dict(), "device": str(device),
                               "precision": precision, "world_size": world,
                               "accumulation": accum, "micro_batch_size": micro,
                               "vocab_size": model.config.vocab_size,
                               "parameters": sum(p.numel() for p in model.parameters()),
                               "train_blocks": len(getattr(data, "train", ())) or None,
                               "eval_tokens": config.eval_budget(), **provenance()})
    monitor = contextlib.nullcontext()
    if config.instrument is not None:
        from analysis.instrument import Instrumentation
        monitor = Instrumentation(model, optimizer, recorder, config.instrument,
                                  last_step=config.steps, autocast=autocast,
                                  # the probe and token counts sample finite data; not a stream
                                  data=data if hasattr(data, "train") else None,
                                  rank=rank, world_size=world, start_step=start)

    from toy_models.llama import flops_per_token
    flops = flops_per_token(model.config, config.seq_len)
    first_eval = (evaluate(model, data, config, device, autocast, rank, world) if start == 0
                  else recorded_first_eval(run_dir))
    if recorder is not None and start == 0:
        recorder.log(0, {"eval_loss": first_eval, "eval_perplexity": math.exp(first_eval)})
    losses, tokens_per_s, eval_loss = [], 0.0, first_eval
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.steps, initial=start, desc=f"{config.optimizer} {config.model}",
                   unit="step", dynamic_ncols=True)
    with monitor:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            mine = data.local_batch(step, config.batch_size, rank, world).view(accum, micro, -1)
            data_time = time.perf_counter() - t0
            step_tokens = config.batch_size * (config.seq_len - 1)
            step_loss = torch.zeros((), dtype=torch.float64, device=device)
            for k in range(accum):
                mb = mine[k].to(device)
                with parallel.gradient_sync(train_model, config.parallel, world, k == accum - 1):
                    loss, n = token_loss(train_model, mb, autocast)
                    weight = n * world / step_tokens
                    if config.instrument is not None:
                        monitor.micro_batch(weight, mb.size(0))
                    (loss * weight).backward()
                step_loss += loss.detach().double() * n
            if world > 1:
                torch.distributed.all_reduce(step_loss)
            mean_loss = (step_loss / step_tokens).item()
            grad_norm = parallel.global_grad_norm(model) if math.isfinite(mean_loss) else math.nan
            if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
                what = (f"loss {mean_loss}" if not math.isfinite(mean_loss)
                        else f"gradient norm {grad_norm} (loss {mean_loss:.4g})")
                if recorder is not None:  # a diverged run is a finished result, not a crash
                    recorder.log(step + 1, {"loss": mean_loss, "grad_norm": grad_norm})
                    recorder.finish({"diverged_at": step + 1, "steps": config.steps,
                                     "first_eval_loss": first_eval, "final_eval_loss": math.nan,
                                     "final_perplexity": math.nan})
                    recorder.close()
                raise TrainingDiverged(f"non-finite {what} at step {step + 1}; lower the learning "
                                       "rate (the last good checkpoint is kept)")
            lrs = {f"lr/{g.get('label', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_time = time.perf_counter() - t0
            tokens_per_s = config.batch_size * config.seq_len / step_time
            losses.append(mean_loss)
            done = step + 1
            if recorder is not None and (done % config.log_every == 0 or done == config.steps):
                recorder.log(done, {"loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                                    **lrs, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                                    "step_time": step_time, "data_time": data_time,
                                    "tokens": done * config.batch_size * config.seq_len,
                                    **hardware_stats(device, tokens_per_s * flops, world)})
            if (config.eval_every and done % config.eval_every == 0) or done == config.steps:
                eval_loss = evaluate(model, data, config, device, autocast, rank, world)
                if recorder is not None:
                    recorder.log(done, {"eval_loss": eval_loss,
                                        "eval_perplexity": math.exp(eval_loss)})
            if run_dir is not None and (
                    (config.save_every and done % config.save_every == 0) or done == config.steps):
                states = checkpoint.gather(model, optimizer, data, sharded(config, world), world)
                if rank == 0:
                    checkpoint.save(run_dir, done, *states, scheduler, ident,
                                    {"tokens_seen": done * config.batch_size * config.seq_len},
                                    keep=config.keep_checkpoints)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
    if bar is not None:
        bar.close()
    if start >= config.steps:  # resumed from the final checkpoint: evaluate what it holds
        eval_loss = evaluate(model, data, config, device, autocast, rank, world)

    from analysis.optimizer import state_bytes
    result = TrainResult(run_dir=run_dir, steps=config.steps, first_eval_loss=first_eval,
                         final_eval_loss=eval_loss, final_perplexity=math.exp(eval_loss),
                         final_train_loss=losses[-1] if losses else math.nan,
                         tokens_per_s=tokens_per_s, optimizer_state_bytes=state_bytes(optimizer),
                         vocab_size=model.config.vocab_size,
                         losses=losses)
    if recorder is not None:
        recorder.finish({k: v for k, v in result.__dict__.items() if k != "losses"})
        recorder.close()
    return result


def parser():
    import argparse

    p = argparse.ArgumentParser(prog="scale-lab train", description="Train a LLaMA with a recipe.")
    d = TrainConfig()
    p.add_argument("--model", default=d.model, help="nano | micro | mini | 60m | 130m | 350m | 1b | 7b")
    p.add_argument("--optimizer", default=d.optimizer, help="a recipe name, or 'list'")
    p.add_argument("--momentum", default=None, help="momentum placement: none | output | embedding | all")
    for name in ("lr", "adam_lr"):
        p.add_argument(f"--{name}", type=float, default=None)
    for name in ("beta", "weight_decay", "min_lr_ratio"):
        p.add_argument(f"--{name}", type=float, default=getattr(d, name))
    # the seed release's flag names are accepted as aliases where they mean the same thing
    aliases = {"steps": ["--num_training_steps"], "batch_size": ["--total_batch_size"],
               "seq_len": ["--max_length"]}
    for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_tokens", "seed",
                 "log_every", "save_every", "keep_checkpoints"):
        p.add_argument(f"--{name}", *aliases.get(name, []), dest=name, type=int,
                       default=getattr(d, name))
    for name in ("warmup_steps", "micro_batch_size"):
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--device", default=d.device)
    p.add_argument("--precision", "--dtype", dest="precision", default=d.precision,
                   help="auto | fp32 | bf16 (pure, as the paper) | bf16-mixed; the paper's "
                        "--dtype bfloat16/float32 are accepted")
    p.add_argument("--model_config", default=None,
                   help="the paper's configs/llama_<size>.json path (same as --model <size>)")
    p.add_argument("--scheduler", default="cosine", help="cosine (the only schedule, as the paper)")
    p.add_argument("--data", default=d.data, help="bundled | path/glob of json/parquet shards | c4")
    p.add_argument("--stream", action="store_true", default=None,
                   help="read --data as a stream, each rank its own share (always on for c4)")
    p.add_argument("--tokenizer", default=None, help="default: the bundled BPE; t5-base for c4")
    p.add_argument("--label", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--parallel", default=d.parallel,
                   help="ddp | fsdp (FSDP2 fully_shard per block) when run under torchrun")
    p.add_argument("--instrument", action="store_true", help="record the default statistics")
    p.add_argument("--out", default=None, help="run directory (default runs/<optimizer>-<model>-s<seed>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def translate_paper_flags(args):
    """Map the seed release's flag values onto ours (``--dtype bfloat16``, ``--model_config``)."""
    import re

    args.precision = {"bfloat16": "bf16", "float32": "fp32"}.get(args.precision, args.precision)
    if args.model_config:
        match = re.search(r"llama_(\w+)\.json$", args.model_config)
        if not match:
            raise ConfigError(f"--model_config {args.model_config!r} is not a configs/llama_<size>.json "
                              "path; use --model 60m | 130m | 350m | 1b | 7b")
        args.model = match.group(1)
    if args.scheduler != "cosine":
        raise ConfigError(f"--scheduler {args.scheduler!r} is not implemented; the paper and this "
                          "trainer use cosine (warmup, then cosine to min_lr_ratio)")
    return args


def main(argv: list[str] | None = None) -> int:
    import sys

    from analysis.checkpoint import CheckpointError
    from toy_models.corpus import CorpusError

    args = parser().parse_args(argv)
    if args.optimizer == "list":
        from analysis.recipes import recipe_table
        print(recipe_table())
        return 0
    from analysis.schedule import InstrumentConfig

    try:
        args = translate_paper_flags(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fields = {k: v for k, v in vars(args).items()
              if k not in ("instrument", "out", "overwrite", "resume", "no_progress",
                           "model_config", "scheduler")}
    config = TrainConfig(**fields, instrument=InstrumentConfig() if args.instrument else None)
    out = args.out or f"runs/{config.optimizer}-{config.model}-s{config.seed}"
    try:
        result = train(config, out=out, overwrite=args.overwrite, resume=args.resume,
                       progress=not args.no_progress)
    except (ConfigError, CorpusError, CheckpointError, TrainingDiverged, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"validation loss {result.first_eval_loss:.3f} -> {result.final_eval_loss:.3f} "
          f"(perplexity {result.final_perplexity:.1f}; ln(vocab) = {math.log(result.vocab_size):.3f}); "
          f"optimizer state {result.optimizer_state_bytes / 1e6:.2f} MB; run in {result.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
