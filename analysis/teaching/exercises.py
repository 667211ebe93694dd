"""Graders for the notebooks' "implement" exercises.

A notebook states an exercise, gives a stub that raises ``NotImplementedError``, and grades
the reader's function with ``grade(name, function)``: a stub still in place is reported as not
done; a wrong answer, or a function that raises or returns nothing, gets one line saying what
differs and a hint at the concept (never the formula), and the notebook goes on; a right one
prints so. The typical mistakes are recognised by what they compute (unit L2 instead of unit
RMS, the other axis, no floor, momentum after the normalization, dividing by K). Solutions are kept apart (``analysis.teaching.solutions``);
the tests run every notebook with them filled in (``SCALE_LAB_SOLUTIONS=1``) and check that
each grader rejects a plausible wrong answer.

Each grader compares the reader's function with the library's own implementation (the
source of the rule is in that function's docstring) on inputs chosen to tell the usual
mistakes apart: the axis of a normalization, L2 norm against RMS, the floor on a zero row,
momentum after normalization instead of before, the ``K - 1`` of an unbiased estimator.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.instrument import estimators, spectra
from analysis.optim import variants
from analysis.optim.hyper import OptimizerConfig
from analysis.optim.maths import as_tensor
from analysis.optim.recipes import build_optimizer
from analysis.optim.roles import assign
from analysis.optim.transforms import chain, momentum, normalize
from analysis.results import memory
from toy_models import quadratic
from toy_models.llama import build_model, load_config


def _gradients(shape=(6, 10), count: int = 1, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # rows of very different sizes: an axis or norm mistake cannot cancel out
    scales = torch.logspace(-3, 1, shape[0]).unsqueeze(1)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) * scales for _ in range(count)]


class Mistake(AssertionError):
    """A wrong answer, with the line the reader sees."""


def _value(got):
    if got is None:
        raise Mistake("your function returned None: end it with a `return` of the result")
    return torch.as_tensor(np.asarray(got) if not torch.is_tensor(got) else got, dtype=torch.float64)


def _matches(got, candidates: dict[str, torch.Tensor]) -> str | None:
    """The hint of the typical mistake ``got`` reproduces, if it is one of ``candidates``."""
    for hint, value in candidates.items():
        value = torch.as_tensor(value, dtype=torch.float64)
        if got.shape == value.shape and torch.allclose(got, value, rtol=1e-6, atol=1e-12, equal_nan=True):
            return hint
    return None


def _close(got, want, what: str, rtol: float = 1e-6, mistakes: dict | None = None) -> None:
    got = _value(got)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise Mistake(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.allclose(got, want, rtol=rtol, atol=1e-12):
        known = _matches(got, mistakes or {})
        raise Mistake(
            f"{what}: {known}" if known else f"{what}: off by up to {float((got - want).abs().max()):.3g}"
        )


def check_sgd_floor(fn) -> None:
    """``fn(lr, sigma)``: SGD's exact noise floor on ``quadratic`` (its module docstring)."""
    for lr in (0.1, 0.5, 1.0, 1.5):
        for sigma in (0.3, 1.0):
            want = quadratic.ema_floor(lr, 0.0, sigma)
            _close(
                float(fn(lr, sigma)),
                want,
                f"floor at lr {lr}, sigma {sigma}",
                mistakes={
                    "twice the floor: the noise enters one step with lr^2, and the "
                    "floor is where the loss it adds equals what the pull back removes": 2 * want
                },
            )


def check_momentum_before_normalization(fn) -> None:
    """``fn(grads, beta)``: SCALE's output rule over a stream of gradients, one direction per
    step: EMA momentum first, then one unit RMS per row (``chain(momentum, normalize(1))``)."""
    grads = _gradients(count=5)
    rule = chain(momentum(0.9), normalize(1))
    state = rule.init(grads[0])
    want = [as_tensor(rule.update(g, state, g)).clone() for g in grads]
    got = fn(grads, 0.9)
    if got is None:
        raise Mistake("your function returned None: end it with a `return` of the directions")
    got = list(got)
    if len(got) != len(want):
        raise Mistake(f"one direction per gradient: got {len(got)} for {len(want)}")
    for step, (u, w) in enumerate(zip(got, want)):
        rms = _value(u).square().mean(dim=1).sqrt()
        if not torch.allclose(rms, torch.ones_like(rms), atol=1e-6):
            raise Mistake(
                f"step {step}: row RMS {rms.min():.3g}..{rms.max():.3g}, expected 1: the "
                "step SCALE takes is normalized, so normalization has to come last"
            )
        _close(
            u,
            w,
            f"step {step}: the rows have unit RMS but not SCALE's direction; which "
            "quantity does the momentum average, the gradient or the normalized one?",
        )


def check_col_normalize(fn) -> None:
    """``fn(grad)``: one unit RMS per output unit (torch row) with the 1e-8 floor
    (``maths.rms_normalize``, the paper's column-wise normalization)."""
    g = _gradients()[0]
    g[2] = 0.0  # a unit without gradient stays at zero (the floor, no division by zero)
    got = fn(g.clone())
    want = as_tensor(normalize(1).update(g, {}, g))
    if got is not None and torch.isnan(_value(got)).any():
        raise Mistake(
            "a unit with zero gradient became NaN: a row of zeros has norm 0, so the "
            "division needs a floor (SCALE's is 1e-8)"
        )
    _close(
        got,
        want,
        "direction",
        mistakes={
            "each row has unit L2 norm; SCALE's rows have unit RMS (size per entry), so a step's "
            "size does not grow with the layer's fan-in": g / g.norm(dim=1, keepdim=True).clamp_min(1e-8),
            "that is one scale per input feature (per column): SCALE gives one per output unit, which "
            "is a row of an nn.Linear weight": g
            / g.square().mean(dim=0, keepdim=True).sqrt().clamp_min(1e-8),
        },
    )


def check_microbatch_variance(fn) -> None:
    """``fn(micro_grads)``: the unbiased ``E||g_k - g_bar||^2`` from K micro-batch gradients
    (``estimators.microbatch_variance``)."""
    for k in (2, 4, 8):
        micro = _gradients(count=k, seed=k)
        mean = torch.stack(micro).mean(0)
        want = estimators.microbatch_variance(
            sum(estimators.sqnorm(m) for m in micro), estimators.sqnorm(mean), k
        )
        got = fn(micro)
        _close(
            None if got is None else float(got),
            want,
            f"variance from K={k} micro-batches",
            mistakes={
                "(K-1)/K of the answer: the mean of the micro-batches is estimated from "
                "the same micro-batches, so the spread around it is smaller than the true "
                "spread (Bessel's correction)": want * (k - 1) / k
            },
        )


def check_stable_rank(fn) -> None:
    """``fn(update)``: ``||U||_F^2 / ||U||_2^2`` (``spectra.stable_rank``)."""
    for seed, shape in ((0, (8, 20)), (1, (30, 12))):
        u = _gradients(shape, seed=seed)[0]
        want = spectra.stable_rank(torch.linalg.svdvals(u))
        got = fn(u)
        _close(
            None if got is None else float(got),
            want,
            f"stable rank of a {shape} matrix: it "
            "counts directions weighted by their energy, so it is not an integer rank",
            mistakes={
                "that is the matrix's rank; the stable rank weighs each direction by its "
                "share of the largest one's energy": float(torch.linalg.matrix_rank(u))
            },
        )
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.ones(3)).double()
    got = fn(rank_one)
    _close(None if got is None else float(got), 1.0, "a rank-one matrix")


def check_state_elements(fn) -> None:
    """``fn(recipe, model)``: optimizer-state elements of ``sgd``, ``scale`` and ``adamw`` on a
    paper model, as the recipes declare them (``memory.state_elements``)."""
    for model in ("60m", "1b"):
        config = load_config(model)
        for recipe in ("sgd", "scale", "adamw"):
            want = memory.state_elements(recipe, config, memory.default_rank(model, config))
            got = fn(recipe, model)
            _close(
                None if got is None else float(got),
                float(want),
                f"{recipe} at {model}: "
                "count the tensors each rule keeps, per role (which layers have momentum, "
                "which have Adam's moments?)",
            )


def check_scale_rules(fn) -> None:
    """``fn()``: ``{role: Transform}`` for ``hidden``, ``embedding`` and ``output`` that give
    SCALE's matrix directions (``recipes``' ``scale``; arXiv 2506.16659, Algorithm 1), checked
    over three steps on gradients of each role's shape in a small LLaMA."""
    model = build_model(load_config("nano", vocab_size=512), seed=0)
    reference = build_optimizer("scale", model)
    given = fn()
    for role in ("hidden", "embedding", "output"):
        assert role in given, f"no transform for role {role!r}"
        group = next(g for g in reference.param_groups if g["label"] == role)
        want_rule, got_rule = reference.transform_of(group), given[role]
        p = group["params"][0]
        want_state, got_state = want_rule.init(p), got_rule.init(p)
        for step, g in enumerate(_gradients(tuple(p.shape), count=3, seed=1)):
            g = g.float()
            _close(
                as_tensor(got_rule.update(g, got_state, p)),
                as_tensor(want_rule.update(g, want_state, p)),
                f"{role}, step {step}: which axis holds one output unit's weights in this "
                "layer, and does this layer keep momentum?",
                rtol=1e-5,
            )


def custom_model() -> torch.nn.Module:
    """Notebook 07's model: an embedding, a layer of a custom type (weight ``(out, in)``,
    applied as ``x @ W.T``), and a classifier head named ``classifier``."""

    class Mixer(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(width, width) / width**0.5)

        def forward(self, x):
            return x @ self.weight.T

    class Tagger(torch.nn.Module):
        def __init__(self, vocab=50, width=16):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, width)
            self.mixer = Mixer(width)
            self.classifier = torch.nn.Linear(width, vocab)

        def forward(self, ids):
            return self.classifier(torch.tanh(self.mixer(self.embed(ids))))

    return Tagger()


def check_custom_rules(fn) -> None:
    """``fn()``: role rules (``analysis.optim.roles``) under which ``custom_model()`` gets the
    embedding's role and axis, the custom layer as a hidden matrix normalized per row, and the
    classifier as the output layer (the one SCALE gives momentum)."""
    layout = assign(custom_model(), fn()).params
    want = {
        "embed.weight": ("embedding", (0,)),
        "mixer.weight": ("hidden", (1,)),
        "classifier.weight": ("output", (1,)),
    }
    for name, (role, fan_in) in want.items():
        got = (layout[name].role, layout[name].fan_in)
        if got != (role, fan_in):
            raise Mistake(f"{name}: role and fan-in axes {got}, expected {(role, fan_in)}")


def check_rmnp_hidden(fn) -> None:
    """``fn(fan_in)``: RMNP's hidden-matrix transform (``analysis.optim.variants``; arXiv
    2603.20527): EMA momentum 0.95, then unit L2 norm per output unit, over three steps. Told
    apart: the RMS instead of the L2 norm, the normalization before the momentum, SCALE's
    coefficient 0.9 instead of RMNP's 0.95."""
    want_rule = variants.hidden_rule("rmnp", OptimizerConfig(), (1,))
    got_rule = fn((1,))
    g0 = _gradients((6, 10))[0]
    want_state, got_state = want_rule.init(g0), got_rule.init(g0)

    def unit(x, rms=False):
        norm = x.square().mean(dim=1, keepdim=True).sqrt() if rms else x.norm(dim=1, keepdim=True)
        return x / norm.clamp_min(1e-30)

    ema, ema_of_units, ema_09 = (torch.zeros_like(g0) for _ in range(3))
    for step, g in enumerate(_gradients((6, 10), count=3, seed=2)):
        ema, ema_09 = 0.95 * ema + 0.05 * g, 0.9 * ema_09 + 0.1 * g
        ema_of_units = 0.95 * ema_of_units + 0.05 * unit(g)
        got = as_tensor(got_rule.update(g, got_state, g))
        _close(
            got,
            as_tensor(want_rule.update(g, want_state, g)),
            f"step {step}",
            mistakes={
                "rows of unit RMS: RMNP normalizes by the L2 norm, not the RMS that SCALE uses": unit(
                    ema, rms=True
                ),
                "the momentum averages normalized gradients: RMNP averages the gradients and "
                "normalizes their average, last": ema_of_units,
                "unit rows, but the momentum forgets at SCALE's pace: RMNP's coefficient is 0.95": unit(
                    ema_09
                ),
            },
        )


CHECKS = {
    "sgd_floor": check_sgd_floor,
    "momentum_before_normalization": check_momentum_before_normalization,
    "col_normalize": check_col_normalize,
    "microbatch_variance": check_microbatch_variance,
    "stable_rank": check_stable_rank,
    "state_elements": check_state_elements,
    "scale_rules": check_scale_rules,
    "custom_rules": check_custom_rules,
    "rmnp_hidden": check_rmnp_hidden,
}


def grade(name: str, fn) -> bool:
    """Grade exercise ``name``: True when right; else False with one line (not done yet, what
    differs and a hint, or what the function raised), and the notebook goes on."""
    try:
        CHECKS[name](fn)
    except NotImplementedError:
        print(
            f"exercise {name!r}: not done yet (the stub raises NotImplementedError); "
            "write it, then run this cell again"
        )
        return False
    except AssertionError as err:
        print(f"exercise {name!r}: not yet. {err}")
        return False
    except Exception as err:  # the reader's code failed: say where, not a traceback
        first = (str(err).strip().splitlines() or [""])[0][:200]
        print(f"exercise {name!r}: your function raised {type(err).__name__}: {first}")
        return False
    print(f"exercise {name!r}: correct")
    return True
