import os

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite passes with whatever thread count it is given (OMP_NUM_THREADS=1 or 2); without
# one: one thread per pytest-xdist worker (`make test` runs one worker per core; more threads
# than cores would make the workers wait on each other), its subprocesses (torchrun, notebook
# kernels) included; two threads in a plain single-process run, as on the project's machines
if "OMP_NUM_THREADS" not in os.environ:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def cpu_kernels_built():
    """The fused step's CPU kernels, built (or loaded) once before any test: a default run
    takes the fused step, and the first build on a machine says so on stderr, which the tests
    that read a run's stderr must not see."""
    from analysis.optim import cpu_kernels

    try:
        cpu_kernels.kernels()
    except cpu_kernels.KernelBuildError:
        pass  # a machine without a compiler: the runs fall back, and say so (tested)


@pytest.fixture(scope="session")
def tokenizer():
    from toy_models.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def tiny_model():
    """A 2-layer LLaMA small enough for exact per-example checks (vocab 64, hidden 16)."""
    from toy_models.llama import build_model, load_config

    config = load_config(
        "nano",
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return build_model(config, seed=0)


def tiny_config(**overrides):
    """A few-second run's config; ``overrides`` by the run record's names (``lr``, ``adam_betas``)."""
    from analysis.training.config import TrainConfig

    values = dict(
        model="nano",
        optimizer="scale",
        steps=6,
        batch_size=4,
        seq_len=32,
        eval_every=3,
        eval_tokens=512,
        seed=0,
        warmup_steps=2,
        precision="fp32",
    )  # pinned: "auto" measures the machine (test_throughput)
    values.update(overrides)
    return TrainConfig.from_dict(values)
