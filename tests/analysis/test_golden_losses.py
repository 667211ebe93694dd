"""Every recipe's first 20 losses on ``nano`` equal the checked-in golden ones (rel 1e-5).

A failure means training behaviour changed; if the change is meant, regenerate with
``python -m tests.golden --write`` and say why in the commit.
"""

import pytest

from analysis.optim.recipes import recipe_names
from tests import golden

GOLDEN = golden.load()


def test_every_recipe_has_golden_losses():
    assert sorted(GOLDEN) == sorted(recipe_names())
    assert all(len(v) == golden.STEPS for v in GOLDEN.values())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(GOLDEN))
def test_losses_match_golden(recipe):
    assert golden.losses(recipe) == pytest.approx(GOLDEN[recipe], rel=golden.RTOL)
