"""Everything a run needs before its first step: device, precision, processes, run directory,
data, model, optimizer, scheduler, checkpoint identity and recorder, held in one ``Run``.

``build`` (tokenizer, data, model, optimizer for a config) is shared with the benchmarks.
With ``parallel="fsdp"`` and several processes the model is sharded (``analysis.training.
parallel``) before the optimizer is built, and a recipe that needs whole matrices is refused.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import analysis.optim.cpu_kernels as cpu_kernels
import analysis.training.checkpoint as checkpoint
import analysis.training.parallel as parallel
import analysis.training.rundir as rundir
import analysis.training.throughput as throughput
from analysis.instrument.trackers import TensorBoard, Trackio, WandB
from analysis.optim.fused import step_path
from analysis.optim.optimizer import NotShardable, check_shardable
from analysis.optim.recipes import build_optimizer
from analysis.provenance import provenance
from analysis.recording import (
    CONFIG,
    METRICS,
    RESULT,
    SEGMENTS,
    SPECTRA,
    NullRecorder,
    Recorder,
    RecordingError,
    run_config,
)
from analysis.training.config import ConfigError, TrainConfig
from analysis.training.lr_schedule import lr_lambda
from toy_models.data import load_blocks
from toy_models.llama import UnknownModelError, build_model, flops_per_token, load_config
from toy_models.stream import StreamData
from toy_models.tokenizer import load_tokenizer

RUN_FILES = (CONFIG, METRICS, SPECTRA, RESULT, SEGMENTS)
# weights other than fp32: pure bf16 (as the paper); fp64 for numerics checks (the golden losses)
WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp64": torch.float64}


@dataclass
class Run:
    """One training run's pieces, as ``setup`` makes them (``recorder`` is a ``NullRecorder`` off
    rank 0 or without a run directory; ``start`` is the step a resume continues from)."""

    config: TrainConfig
    rank: int
    world: int
    accum: int
    micro: int
    device: torch.device
    precision: str
    autocast: object
    run_dir: Path | None
    data: object
    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    identity: dict
    recorder: Recorder | NullRecorder
    start: int
    flops_per_token: float
    start_tokens: int = 0
    limit: tuple[str, float] | None = None  # the FLOP/s a step is measured against (throughput)

    @property
    def sharded(self) -> bool:
        return sharded(self.config, self.world)

    def close(self) -> str:
        """Close the recorder and give the run directory's writer lock back (idempotent; the
        lock is given back even when closing the tables fails, and a table's failure names a
        lock it could not remove). Returns "" or the clause naming a lock left behind."""
        failure = None
        try:
            self.recorder.close()
        except RecordingError as err:
            failure = err
        note = rundir.release_lock(self.run_dir) if self.run_dir is not None and self.rank == 0 else ""
        if failure is not None:
            raise RecordingError(f"{failure}" + (f"; {note}" if note else "")) from None
        return note

    def step_tokens(self) -> int:
        """Predicted tokens in one optimizer step (every sequence predicts ``seq_len - 1``)."""
        return self.config.batch_size * (self.config.seq_len - 1)

    def tokens_seen(self, done: int) -> int:
        """Tokens read by the end of step ``done``: those before the resumed checkpoint (as it
        recorded them, under the batch of its time) plus this segment's steps."""
        return self.start_tokens + (done - self.start) * self.config.batch_size * self.config.seq_len


def make_trackers(wanted: dict, run_dir: Path, config: TrainConfig) -> list:
    """The trackers ``{"tensorboard": DIR, "wandb": PROJECT, "trackio": PROJECT}`` asks for,
    each run named after the run directory and given its config."""
    made = {
        "tensorboard": TensorBoard,
        "wandb": lambda p: WandB(p, dir=str(run_dir), name=run_dir.name, config=config.to_dict()),
        "trackio": lambda p: Trackio(p, name=run_dir.name, config=config.to_dict()),
    }
    try:
        return [made[name](value) for name, value in wanted.items() if value]
    except ImportError as err:  # an extra not installed: one line with the install command
        raise ConfigError(str(err)) from None


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


def resolve_precision(
    config: TrainConfig, device: torch.device, world: int, recorded: str | None = None
) -> str:
    """As configured, or for ``auto``: the precision a resumed run recorded (its steps must not
    change precision); bf16 autocast over fp32 weights on CUDA; on CPU "auto" is left for
    ``throughput.fastest_cpu_precision`` to measure in one process, fp32 under torchrun (each
    process would measure its own, and the processes must agree)."""
    if config.precision != "auto":
        return config.precision
    if recorded is not None:
        return recorded
    if device.type == "cuda":
        return "bf16-mixed"
    return "auto" if device.type == "cpu" and world == 1 else "fp32"


def check_run_dir(out: str | Path, overwrite: bool, resume: bool) -> Path:
    """Refuse, before anything is built or written, an ``out`` that is a file or an existing
    run directory without ``--overwrite`` or ``--resume``."""
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a directory; choose another --out")
    if run_dir.is_dir():
        rundir.check_unlocked(run_dir)  # another writer at work: name it, whatever the flags
    if run_dir.exists() and any(run_dir.iterdir()) and not (overwrite or resume):
        raise ConfigError(
            f"run directory {run_dir} already exists; pass --overwrite to replace "
            "it or --resume to continue it"
        )
    return run_dir


def prepare_run_dir(out: str | Path, overwrite: bool, resume: bool) -> Path:
    """Create (or reuse, with resume) a run directory, refusing to clobber a finished one."""
    run_dir = check_run_dir(out, overwrite, resume)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write to output directory {run_dir} ({err.strerror}); choose another --out"
        ) from None
    rundir.acquire_lock(run_dir)
    if overwrite and not resume:
        for path in [run_dir / name for name in RUN_FILES] + checkpoint.checkpoints(run_dir):
            path.unlink(missing_ok=True)
        for ckpt in checkpoint.checkpoints(run_dir):
            ckpt.unlink()
    return run_dir


def distributed() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; joins the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank, world


def sharded(config: TrainConfig, world: int) -> bool:
    """Are parameters FSDP2 row shards in this run?"""
    return config.parallel == "fsdp" and world > 1


def build(config: TrainConfig, device: torch.device, precision: str, world: int = 1, rank: int = 0):
    """``(tokenizer, data, model, optimizer)`` for ``config`` (shared by train and the
    benchmarks). Data is streamed per rank or loaded as finite blocks (``toy_models``)."""
    tokenizer = load_tokenizer(config.tokenizer_name())
    if config.streaming():  # each rank reads its own share of the stream
        data = StreamData(
            config.data, tokenizer, config.seq_len, seed=config.seed, rank=rank, world_size=world
        )
    else:
        data = load_blocks(tokenizer, config.seq_len, source=config.data, seed=config.seed)
    try:
        model = build_model(
            load_config(config.model, vocab_size=config.vocab_size(len(tokenizer))), seed=config.seed
        )
    except UnknownModelError as err:  # a user's config that transformers refuses
        raise ConfigError(f"{err} ({config.model})") from None
    if precision in WEIGHT_DTYPES:
        model = model.to(WEIGHT_DTYPES[precision])
    model = model.to(device)
    if sharded(config, world):
        parallel.shard_model(model)
    optimizer = build_optimizer(
        config.optimizer, model, config.optimizer_config(), fused=fused_step_for(config, model, device)
    )
    if sharded(config, world):
        try:
            check_shardable(optimizer, config.optimizer)
        except NotShardable as err:
            raise ConfigError(str(err)) from None
    return tokenizer, data, model, optimizer


def fused_step_for(config: TrainConfig, model: torch.nn.Module, device: torch.device) -> bool:
    """``--fused`` / ``--no-fused`` as given; by default the fused step wherever a rule has one
    (``analysis.optim.fused``: the compiled functions on CUDA, C++ kernels on the CPU), but an
    instrumented run takes the readable step throughout (the taps read its directions; so it
    equals a ``--no-fused`` run bit for bit). On the CPU the kernels are built before training (the first build on a machine says how long it
    took); a machine that cannot build them trains on the readable step, said in one line."""
    if config.fused is not None or config.compile:
        return config.fused_step()
    if config.instrument is not None:  # its taps need the readable step: take it throughout
        return False
    if device.type != "cpu" or not any(p.dtype == torch.float32 for p in model.parameters()):
        return device.type != "cpu"
    building = not cpu_kernels.is_built()
    started = time.perf_counter()
    try:
        cpu_kernels.kernels()
    except cpu_kernels.KernelBuildError as err:
        print(
            f"note: the fused step's CPU kernels cannot be built ({err}); training on the "
            "readable step (the same update; pass --no-fused to choose it quietly)",
            file=sys.stderr,
        )
        return False
    if building:
        print(
            f"note: built the fused step's CPU kernels in {time.perf_counter() - started:.0f} s "
            "(once per machine and torch version)",
            file=sys.stderr,
        )
    return True


def setup(
    config: TrainConfig,
    out,
    overwrite: bool,
    resume: bool,
    allow_change: bool = False,
    trackers: dict | None = None,
) -> Run:
    """Validate, join the processes, build everything, resume if asked, open the recorder.
    A resume is checked first (``analysis.training.rundir``): it never rewrites the records."""
    config.validate(int(os.environ.get("WORLD_SIZE", "1")))  # refuse bad input before any setup
    changed = {}
    # only rank 0 writes the directory, so only rank 0 checks it: another rank could find it
    # already made by rank 0 and refuse it
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        check_run_dir(out, overwrite, resume)
    if resume and out is not None:
        changed = rundir.check_resume(Path(out), config, allow_change)
    rank, world = distributed()
    device = resolve_device(config)
    recorded = run_config(out).get("precision") if resume and out is not None else None
    precision = resolve_precision(config, device, world, recorded)
    torch.manual_seed(config.seed)
    # data, tokenizer and model first: a bad file or an unreachable hub leaves no run directory;
    # both precisions "auto" measures keep fp32 weights
    _, data, model, optimizer = build(
        config, device, "fp32" if precision == "auto" else precision, world, rank
    )
    measured = None
    if precision == "auto":  # config.json records the measurement; the CLI's summary says it
        measured = throughput.fastest_cpu_precision(model, config.model, config.micro(world), config.seq_len)
        precision = measured["precision"]
    run_dir = None
    if out is not None:
        run_dir = prepare_run_dir(out, overwrite, resume) if rank == 0 else Path(out)
    try:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        identity = checkpoint.identity(
            config.to_dict(), model, layout="fsdp" if sharded(config, world) else "plain"
        )
        start, start_tokens = 0, 0
        if resume and run_dir is not None:
            start, start_tokens = checkpoint.resume(
                run_dir, model, optimizer, scheduler, data, identity, sharded(config, world), rank
            )
            if start_tokens is None:  # a checkpoint of before tokens were saved
                start_tokens = start * config.batch_size * config.seq_len
        train_model = parallel.wrap(model, config.parallel, world)
        if config.compile:
            train_model = torch.compile(train_model)
        autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if precision == "bf16-mixed"
            else contextlib.nullcontext
        )
        continuing = resume and run_dir is not None and (run_dir / CONFIG).exists()
        if continuing and rank == 0:  # before the recorder opens the tables for appending
            found = checkpoint.checkpoints(run_dir)
            rundir.append_segment(
                run_dir,
                config,
                start,
                found[-1].name if found else None,
                changed,
                rundir.supersede_after(run_dir, start),
            )
        recorder = (
            Recorder(run_dir, trackers=make_trackers(trackers or {}, run_dir, config))
            if run_dir is not None and rank == 0
            else NullRecorder()
        )
        run = Run(
            config=config,
            rank=rank,
            world=world,
            accum=config.accumulation(world),
            micro=config.micro(world),
            device=device,
            precision=precision,
            autocast=autocast,
            run_dir=run_dir,
            data=data,
            model=model,
            train_model=train_model,
            optimizer=optimizer,
            scheduler=scheduler,
            identity=identity,
            recorder=recorder,
            start=start,
            flops_per_token=flops_per_token(model.config, config.seq_len),
            start_tokens=start_tokens,
            limit=throughput.limit(device, precision),
        )
        if recorder and not continuing:  # config.json is written once
            rundir.append_segment(run_dir, config, 0, None)
            recorder.write_config(
                {
                    "config": config.to_dict(),
                    "device": str(device),
                    "precision": precision,
                    "optimizer_step": step_path(optimizer),
                    **({"precision_measured": measured} if measured else {}),
                    "world_size": world,
                    "accumulation": run.accum,
                    "micro_batch_size": run.micro,
                    "vocab_size": model.config.vocab_size,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "train_blocks": len(getattr(data, "train", ())) or None,
                    "eval_tokens": config.eval_budget(),
                    **provenance(),
                }
            )
        return run
    except BaseException:
        if run_dir is not None and rank == 0:
            rundir.release_lock(run_dir)
        raise
