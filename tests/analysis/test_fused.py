"""The fused step (``analysis.optim.fused``) against the readable transform chains: the same
update, the same state, no recompile when the lr moves, and the readable path wherever the
fused one does not apply (taps wanted, bf16, rules it does not know)."""

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from analysis.optim import cpu_kernels, fused
from analysis.optim.recipes import build_optimizer
from analysis.optim.transforms import chain, momentum, normalize, orthogonalize, tap
from toy_models.llama import build_model, load_config


def _pair(recipe="scale", dtype=torch.float32, **overrides):
    model = build_model(load_config("nano", vocab_size=512), seed=0).to(dtype)
    twin = copy.deepcopy(model)
    return (
        model,
        build_optimizer(recipe, model, **overrides),
        twin,
        build_optimizer(recipe, twin, fused=True, **overrides),
    )


def _steps(models_and_optimizers, steps, seed=1):
    """The same random gradients into each model, with the lr scaled up every step (a
    scheduler's moves)."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        grads = [
            torch.randn(p.shape, generator=gen).to(p.dtype) for p in models_and_optimizers[0][0].parameters()
        ]
        for model, optimizer in models_and_optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * (1 + step)
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()


def _relative_gap(a, b):
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item() for x, y in zip(a, b))


def _state_tensors(optimizer):
    return [
        value
        for group in optimizer.param_groups
        for p in group["params"]
        for _, value in sorted(optimizer.state[p].items())
        if torch.is_tensor(value)
    ]


def test_scale_groups_get_their_fused_rule_and_the_rest_none():
    optimizer = build_optimizer("scale", build_model(load_config("nano", vocab_size=512)))
    kinds = {g["label"]: fused.fusable(optimizer.transform_of(g)) for g in optimizer.param_groups}
    assert kinds["hidden"].kind == "per_unit"
    assert kinds["output"] == fused.FusedRule("momentum_per_unit", beta=0.9, buffer="0.momentum.buf")
    assert kinds["vector"].kind == "adam"
    assert kinds["embedding"].kind == "per_unit_dim0"
    assert fused.fusable(chain(momentum(0.9, nesterov=True), normalize(1))) is None
    assert fused.fusable(chain(momentum(0.9, kind="sum"), normalize(1))) is None
    assert fused.fusable(chain(orthogonalize(), tap("update"))) is None
    assert fused.fusable(normalize((1, 2))) is None
    assert fused.fusable(chain(tap("g"), normalize(1), tap("update"))).kind == "per_unit"


@pytest.mark.parametrize("vector_rule", ["published", "torch"])
def test_fused_steps_equal_the_readable_ones_with_decay_and_a_moving_lr(vector_rule):
    readable_model, readable, fused_model, fast = _pair(weight_decay=0.1, vector_rule=vector_rule)
    _steps([(readable_model, readable), (fused_model, fast)], steps=4)
    params = list(readable_model.parameters())
    assert _relative_gap(list(fused_model.parameters()), params) < 1e-6
    # the same state under the same keys: a checkpoint cannot tell which path wrote it
    assert fast.state_dict()["state"].keys() == readable.state_dict()["state"].keys()
    assert _relative_gap(_state_tensors(fast), _state_tensors(readable)) < 1e-6
    steps = {k: v for s in fast.state.values() for k, v in s.items() if k.endswith("step")}
    assert set(steps.values()) == {4}
    moved = _relative_gap(params, list(build_model(load_config("nano", vocab_size=512), seed=0).parameters()))
    assert moved > 1e-3  # the steps did move the weights


def test_a_new_lr_every_step_compiles_nothing_new():
    readable_model, readable, fused_model, fast = _pair()
    _steps([(fused_model, fast)], steps=1)  # compiles (or finds) the graphs
    before = counters["stats"]["unique_graphs"]
    _steps([(fused_model, fast)], steps=3, seed=2)
    assert counters["stats"]["unique_graphs"] == before


def test_taps_are_delivered_on_the_steps_that_want_them_and_only_there():
    readable_model, readable, fused_model, fast = _pair()
    seen, want = [], {"now": False}
    fast.register_tap_hook(lambda label, u, p: seen.append(label), wanted=lambda: want["now"])
    _steps([(readable_model, readable), (fused_model, fast)], steps=2)
    assert seen == []  # fused: nothing to tap
    want["now"] = True
    _steps([(readable_model, readable), (fused_model, fast)], steps=1, seed=3)
    assert {"update", "momentum"} <= set(seen)  # readable path, taps shown
    assert _relative_gap(list(fused_model.parameters()), list(readable_model.parameters())) < 1e-6


def test_bf16_weights_take_the_readable_path_bit_for_bit():
    readable_model, readable, fused_model, fast = _pair(dtype=torch.bfloat16)
    _steps([(readable_model, readable), (fused_model, fast)], steps=2)
    for a, b in zip(fused_model.parameters(), readable_model.parameters()):
        assert torch.equal(a, b)


def test_a_group_with_missing_gradients_steps_only_those_that_have_one():
    readable_model, readable, fused_model, fast = _pair()
    for model in (readable_model, fused_model):
        for i, p in enumerate(model.parameters()):
            p.grad = None if i % 3 == 0 else torch.full_like(p, 0.01) * (i + 1)
    before = [p.detach().clone() for p in fused_model.parameters()]
    readable.step()
    fast.step()
    for i, (a, b, c) in enumerate(zip(fused_model.parameters(), readable_model.parameters(), before)):
        if i % 3 == 0:
            assert torch.equal(a, c)
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("path", ["cpu_kernels", "compiled"])
def test_a_backward_through_weights_the_fused_step_changed_stops_as_the_readable_one_does(path, monkeypatch):
    """torch's in-place ops bump a tensor's version, so a backward through a graph that saved
    a weight before the optimizer changed it stops; the fused step writes the same weights."""
    if path == "compiled":
        monkeypatch.setattr(fused, "_contiguous", lambda p: False)
        monkeypatch.setattr(fused, "_plain_matrix", lambda p, g: False)
    tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    for model, optimizer in zip(*[iter(_pair())] * 2):
        model(input_ids=tokens, labels=tokens).loss.backward()
        loss = model(input_ids=tokens, labels=tokens).loss  # saves this step's weights
        versions = [p._version for p in model.parameters()]
        optimizer.step()
        assert all(p._version > v for p, v in zip(model.parameters(), versions))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_a_step_that_cannot_compile_says_so_and_names_the_fix(monkeypatch):
    def no_compiler(*args):
        raise torch._dynamo.exc.BackendCompilerFailed(
            torch.compile, RuntimeError("Failed to find C++ compiler. Please specify via CXX"), None
        )

    monkeypatch.setitem(fused._COMPILED, "per_unit", no_compiler)
    monkeypatch.setattr(fused, "_plain_matrix", lambda p, g: False)  # the compiled path
    _, _, model, fast = _pair()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(
        RuntimeError,
        match=r"could not be compiled \(RuntimeError: Failed to find "
        r"C\+\+ compiler.*fused=False",
    ):
        fast.step()


def test_cpu_kernels_that_cannot_be_built_say_so_and_name_the_fix(monkeypatch):
    import torch.utils.cpp_extension as extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError(
            "Error building extension 'scale_lab_cpu':\n"
            "/bin/sh: 1: c++: not found\nninja: build stopped: subcommand failed."
        )

    monkeypatch.setattr(cpu_kernels, "_LOADED", {})
    monkeypatch.setattr(extension, "load", no_compiler)
    _, _, model, fast = _pair()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        RuntimeError,
        match=r"could not be compiled \(RuntimeError: Error building "
        r"extension 'scale_lab_cpu'.*fused=False",
    ):
        fast.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))  # nothing half-done


def test_the_compiled_rules_for_cuda_equal_the_readable_ones_on_the_cpu(monkeypatch):
    """The CUDA path compiles ``_per_unit``, ``_per_unit_dim0`` and ``_momentum_per_unit`` and runs ``_adam``;
    CI has no GPU, so the same functions run here (Inductor's CPU backend)."""
    monkeypatch.setattr(fused, "_contiguous", lambda p: False)
    monkeypatch.setattr(fused, "_plain_matrix", lambda p, g: False)
    readable_model, readable, fused_model, fast = _pair(weight_decay=0.1)
    _steps([(readable_model, readable), (fused_model, fast)], steps=3)
    assert _relative_gap(list(fused_model.parameters()), list(readable_model.parameters())) < 1e-6
    assert _relative_gap(_state_tensors(fast), _state_tensors(readable)) < 1e-6


@pytest.mark.parametrize("kernel", ["per_unit_step", "per_unit_dim0_step", "momentum_per_unit_step"])
def test_cpu_kernels_follow_the_rule_with_the_same_bits_on_any_thread_count(kernel):
    """Rows and blocks of rows are summed in one fixed order, whatever thread takes them, and
    the result is the rule's torch formula; the shape leaves a ragged last block and row tail
    (1000 = 31 x 32 + 8 rows, 300 = 18 x 16 + 12 columns)."""
    gen = torch.Generator().manual_seed(0)
    p, g, m = (torch.randn(1000, 300, generator=gen) for _ in range(3))
    ops = cpu_kernels.kernels()
    results, threads = [], torch.get_num_threads()
    try:
        for n in (1, 3, 4):
            torch.set_num_threads(n)
            q, buf = p.clone(), m.clone()
            args = {
                "per_unit_step": ([q], [g]),
                "per_unit_dim0_step": (q, g),
                "momentum_per_unit_step": (q, g, buf, 0.9),
            }[kernel]
            getattr(ops, kernel)(*args, 0.01, 0.999, 1e-8)
            results.append((q, buf))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, results[0][0]) and torch.equal(b, results[0][1]) for a, b in results)
    # and they are the rule: the plain torch formula, in float64, on the same ragged shape
    p64, g64, m64 = p.double(), g.double(), m.double()
    if kernel == "momentum_per_unit_step":
        m64 = 0.9 * m64 + 0.1 * g64
        g64 = m64
        assert _relative_gap([results[0][1].double()], [m64]) < 1e-6
    dim = 0 if kernel == "per_unit_dim0_step" else 1
    want = p64 * 0.999 - 0.01 * g64 / g64.square().mean(dim, keepdim=True).sqrt().clamp_min(1e-8)
    assert _relative_gap([results[0][0].double() - p64 * 0.999], [want - p64 * 0.999]) < 1e-5


def test_instrumented_training_records_the_same_and_fuses_the_unrecorded_steps(tmp_path, monkeypatch):
    from analysis.instrument import Instrumentation, InstrumentConfig
    from analysis.recording import Recorder, load_run

    schedule = InstrumentConfig(cheap_every=2, dense_until=0, full_at=())  # steps 2, 4 recorded
    fused_calls = []
    real_step = fused.step
    monkeypatch.setattr(fused, "step", lambda rule, *a: (fused_calls.append(rule.kind), real_step(rule, *a)))
    runs = {}
    readable_model, readable, fused_model, fast = _pair()
    batches = torch.randint(0, 512, (4, 2, 16), generator=torch.Generator().manual_seed(5))
    for name, model, optimizer in (("readable", readable_model, readable), ("fused", fused_model, fast)):
        with (
            Recorder(tmp_path / name) as recorder,
            Instrumentation(model, optimizer, recorder, schedule, last_step=4) as monitor,
        ):
            for batch in batches:
                monitor.micro_batch(1.0, batch.size(0))
                model(input_ids=batch, labels=batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        runs[name] = load_run(tmp_path / name).set_index(["step", "param", "stat"]).value.sort_index()
    ours, theirs = runs["fused"], runs["readable"]
    assert ours.index.equals(theirs.index) and set(ours.index.get_level_values("step")) == {2, 4}
    assert "update_rms" in set(ours.index.get_level_values("stat"))  # taps were seen
    # (rows of a normalized update have unit RMS: their spread is float noise, ~1e-8)
    assert ((ours - theirs).abs() <= 1e-5 * theirs.abs() + 1e-6).all()
    # steps 1 and 3 fused (hidden, embedding, output, vectors), 2 and 4 readable
    assert sorted(fused_calls) == sorted(["per_unit", "per_unit_dim0", "momentum_per_unit", "adam"] * 2)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_embedding_rows_the_batch_did_not_touch_are_skipped_bit_for_bit(weight_decay):
    """A real batch's embedding gradient is +0.0 in most rows: without decay the column rule
    leaves those rows' bits as they are (the dense formula's p - 0 * scale), steps the others
    as the readable path does, and a row of -0.0 is stepped (p = -0.0 becomes +0.0 there);
    with decay every row is stepped."""
    model = build_model(load_config("nano", vocab_size=512), seed=0)
    batch = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=batch, labels=batch).loss.backward()
    embedding = model.get_input_embeddings().weight
    touched = embedding.grad.abs().sum(1) > 0
    assert 0 < touched.sum() < 60 and not touched[100:].any()  # rows of tokens 0..39 only
    with torch.no_grad():
        embedding[200].fill_(-0.0)
    embedding.grad[200].fill_(-0.0)
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = p.grad.clone()
    readable = build_optimizer("scale", model, weight_decay=weight_decay)
    fast = build_optimizer("scale", twin, fused=True, weight_decay=weight_decay)
    before = embedding.detach().clone()
    readable.step()
    fast.step()
    after = twin.get_input_embeddings().weight.detach()
    untouched = ~touched
    untouched[200] = False
    assert torch.equal(after[untouched], before[untouched]) == (weight_decay == 0.0)
    assert _relative_gap([after], [embedding.detach()]) < 1e-6
    if weight_decay:
        return
    assert torch.equal(after[200], torch.zeros_like(after[200])) and not after[200].signbit().any()
    assert torch.equal(embedding.detach()[200], after[200])  # the readable path's bits
    assert _relative_gap([after[touched]], [embedding.detach()[touched]]) < 1e-6
    assert not torch.equal(after[touched], before[touched])


def test_a_sparse_gradient_is_refused_in_one_line_before_any_weight_moves():
    """``nn.Embedding(sparse=True)`` gives a sparse gradient; both paths refuse it by name
    (they failed inside torch with "Could not run 'aten::as_strided' ... SparseCPU")."""
    for model, optimizer in zip(*[iter(_pair())] * 2):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        embedding = model.get_input_embeddings().weight
        embedding.grad = embedding.grad.to_sparse()
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(
            RuntimeError,
            match=r"'embedding': a parameter of shape \(512, \d+\) has "
            r"a sparse_coo gradient.*sparse=False",
        ):
            optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_a_group_with_one_fsdp2_shard_among_plain_matrices_takes_the_readable_path(monkeypatch):
    """A user may shard some blocks and not others: one DTensor anywhere in a group keeps it
    off the kernels (which take plain tensors). A stand-in DTensor class, so no process group."""
    import sys
    import types

    class DTensor(torch.Tensor):
        pass

    monkeypatch.setitem(sys.modules, "torch.distributed.tensor", types.SimpleNamespace(DTensor=DTensor))
    plain = [torch.zeros(4, 4) for _ in range(3)]
    shard = torch.Tensor._make_subclass(DTensor, torch.zeros(4, 4))
    for p in (*plain, shard):
        p.grad = torch.ones(4, 4)
    assert fused.can_fuse(plain)
    assert not fused.can_fuse([*plain, shard]) and not fused.can_fuse([shard, *plain])


def test_a_default_run_takes_the_fused_step_and_says_so(tmp_path, capsys):
    from analysis.recording import run_config
    from analysis.training.cli import main

    args = [
        "--model",
        "nano",
        "--steps",
        "2",
        "--batch_size",
        "4",
        "--seq_len",
        "32",
        "--eval_tokens",
        "256",
        "--precision",
        "fp32",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert ", fused step;" in capsys.readouterr().out
    assert run_config(tmp_path / "a")["optimizer_step"] == "fused"
    assert main([*args, "--no-fused", "--out", str(tmp_path / "b")]) == 0
    assert ", readable step;" in capsys.readouterr().out
    assert main([*args, "--optimizer", "adamw", "--out", str(tmp_path / "c")]) == 0
    assert ", readable step;" in capsys.readouterr().out  # torch's AdamW: no fused rule of ours


def test_kernels_that_cannot_be_built_fall_back_in_one_line(tmp_path, monkeypatch, capsys):
    from analysis.optim import cpu_kernels
    from analysis.recording import run_config
    from analysis.training.cli import main

    def no_compiler():
        raise cpu_kernels.KernelBuildError("FileNotFoundError: c++")

    real = cpu_kernels.kernels
    monkeypatch.setattr(cpu_kernels, "kernels", no_compiler)
    args = [
        "--model",
        "nano",
        "--steps",
        "2",
        "--batch_size",
        "4",
        "--seq_len",
        "32",
        "--eval_tokens",
        "256",
        "--precision",
        "fp32",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "note: the fused step's CPU kernels cannot be built (FileNotFoundError: c++); training on "
        "the readable step (the same update; pass --no-fused to choose it quietly)"
    ]
    assert run_config(tmp_path / "a")["optimizer_step"] == "readable"
    monkeypatch.setattr(cpu_kernels, "kernels", real)
    monkeypatch.setattr(cpu_kernels, "is_built", lambda: False)  # a first build says its time
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: built the fused step's CPU kernels in ")
