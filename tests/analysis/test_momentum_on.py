"""Momentum placed per matrix (``OptimizerConfig.momentum_on``): by parameter name or glob, on
any ladder recipe, recorded and trained like a role placement."""

import copy

import pytest
import torch

from analysis.optim.recipes import RecipeError, build_optimizer
from tests.conftest import tiny_config


def _steps(model, optimizer, steps=4):
    for s in range(steps):
        x = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(s))
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_momentum_on_the_output_matrix_by_name_is_scale(tiny_model):
    """col_norm with momentum on ``lm_head.weight`` named per matrix trains bit for bit as SCALE
    (the role placement): the two are one rule reached two ways."""
    other = copy.deepcopy(tiny_model)
    a = _steps(tiny_model, build_optimizer("scale", tiny_model, lr=1e-2))
    b = _steps(other, build_optimizer("col_norm", other, lr=1e-2, momentum_on=("lm_head.weight",)))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_glob_puts_momentum_on_exactly_the_matrices_it_names(tiny_model):
    optimizer = build_optimizer("col_norm", tiny_model, lr=1e-2, momentum_on=("model.layers.1.*",))
    _steps(tiny_model, optimizer, steps=1)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    with_buffer = {
        names[id(p)] for p, state in optimizer.state.items() if any("momentum" in k for k in state)
    }
    block = {n for n, p in tiny_model.named_parameters() if n.startswith("model.layers.1.") and p.ndim == 2}
    assert with_buffer == block and len(block) == 7  # q, k, v, o, gate, up, down
    labels = {g["label"] for g in optimizer.param_groups}
    assert "hidden+momentum" in labels and "output+momentum" not in labels


def test_a_pattern_that_names_no_matrix_is_one_line_with_the_nearest_names(tiny_model):
    with pytest.raises(RecipeError, match=r"'lm_haed.weight' names no matrix.*nearest: lm_head.weight"):
        build_optimizer("col_norm", tiny_model, momentum_on=("lm_haed.weight",))
    with pytest.raises(RecipeError, match="momentum_on applies to the ladder recipes"):
        build_optimizer("adamw", tiny_model, momentum_on=("lm_head.weight",))


def test_the_trainer_records_the_placement_and_takes_it_from_the_command_line(tmp_path, capsys):
    from analysis.recording import run_config
    from analysis.training.cli import main

    out = tmp_path / "run"
    code = main(
        [
            *("--model", "nano", "--optimizer", "col_norm", "--steps", "2", "--batch_size", "2"),
            *("--seq_len", "16", "--eval_every", "0", "--precision", "fp32", "--out", str(out)),
            *("--momentum_on", "lm_head.weight", "model.layers.0.mlp.*", "--no-progress"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = run_config(out)
    assert config["config"]["momentum_on"] == ["lm_head.weight", "model.layers.0.mlp.*"]
    restored = tiny_config(**{k: v for k, v in config["config"].items() if k in ("optimizer", "momentum_on")})
    assert restored.hyper.momentum_on == ("lm_head.weight", "model.layers.0.mlp.*")


def test_a_missing_or_wrong_placement_file_is_one_line_and_exit_2(tmp_path, capsys):
    from analysis.training.cli import main

    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"lr": 1}')
    for path, says in ((tmp_path / "none.json", "no placement file"), (wrong, "is not a placement file")):
        assert main(["--model", "nano", "--optimizer", f"advised:{path}", "--steps", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and "scale-lab advise" in err[0]
