"""The notebooks' graders: the kept-apart solutions pass, a plausible wrong answer fails with
a hint, and a stub still in place is reported as not done (the notebook goes on)."""

import pytest
import torch

from analysis.optim.roles import by_name
from analysis.optim.transforms import chain, momentum, normalize
from analysis.optim.variants import unit_rows
from analysis.teaching import exercises, solutions


def _stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(exercises.CHECKS))
def test_the_solution_passes_and_a_stub_is_not_done(name, capsys):
    assert exercises.grade(name, getattr(solutions, name)) is True
    assert exercises.grade(name, _stub) is False
    assert "not done yet" in capsys.readouterr().out


def _l2_not_rms(grad):
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _wrong_axis(grad):
    return grad / grad.square().mean(dim=0, keepdim=True).sqrt().clamp_min(1e-8)


def _momentum_after_normalization(grads, beta):
    m, out = torch.zeros_like(grads[0]), []
    for g in grads:
        m = beta * m + (1 - beta) * solutions.col_normalize(g)
        out.append(m.clone())
    return out


def _biased_variance(micro):
    k = len(micro)
    return solutions.microbatch_variance(micro) * (k - 1) / k


def _embedding_by_rows():
    return solutions.scale_rules() | {"embedding": normalize(1)}


def _momentum_everywhere():
    return {
        role: chain(momentum(0.9), normalize(axis))
        for role, axis in (("hidden", 1), ("embedding", 0), ("output", 1))
    }


def _head_left_hidden():
    return [by_name("hidden", "mixer.weight", fan_in=1)]


def _no_floor(grad):
    return grad / grad.square().mean(dim=1, keepdim=True).sqrt()


def _no_return(grad):
    grad / grad.norm()


def _raises(grad):
    return grad.reshape(7, 7)


WRONG = [
    ("col_normalize", _l2_not_rms, "unit L2 norm; SCALE's rows have unit RMS"),
    ("col_normalize", _wrong_axis, "one scale per input feature"),
    ("col_normalize", _no_floor, "became NaN"),
    ("col_normalize", _no_return, "returned None"),
    ("col_normalize", _raises, "your function raised RuntimeError"),
    ("momentum_before_normalization", _momentum_after_normalization, "normalization has to come last"),
    ("microbatch_variance", _biased_variance, "Bessel"),
    ("stable_rank", lambda u: float(torch.linalg.matrix_rank(u)), "that is the matrix's rank"),
    ("sgd_floor", lambda lr, sigma: solutions.sgd_floor(lr, sigma) * 2, "twice the floor"),
    ("state_elements", lambda recipe, model: solutions.state_elements("adamw", model), "count the tensors"),
    ("scale_rules", _embedding_by_rows, "embedding"),
    ("scale_rules", _momentum_everywhere, "hidden"),
    ("custom_rules", _head_left_hidden, "classifier.weight"),
    ("rmnp_hidden", lambda fan_in: chain(momentum(0.95), normalize(fan_in)), "not the RMS"),
    ("rmnp_hidden", lambda fan_in: chain(unit_rows(fan_in), momentum(0.95)), "normalizes their average"),
    ("rmnp_hidden", lambda fan_in: chain(momentum(0.9), unit_rows(fan_in)), "coefficient is 0.95"),
]


@pytest.mark.parametrize("name, wrong, said", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_a_wrong_answer_gets_one_line_with_its_mistake_and_the_notebook_goes_on(name, wrong, said, capsys):
    assert exercises.grade(name, wrong) is False
    out = capsys.readouterr().out.strip()
    assert said in out and len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "1e-8), one scale" not in out and "sqrt(mean(" not in out  # no solution formula
