"""The short path: ``from analysis import ...`` gives the optimizer, the instrumentation, the
trainer and the recordings, and ``import analysis`` alone imports none of them (nor torch)."""

import subprocess
import sys

from tests.conftest import tiny_config


def test_import_analysis_is_light():
    code = "import sys, analysis; print('torch' in sys.modules, 'analysis.optim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_public_names_are_the_library_s_own(tmp_path):
    import analysis
    from analysis import Instrumentation, InstrumentConfig, TrainConfig, build_optimizer, load_run, train
    from analysis.instrument.hooks import Instrumentation as hooks_instrumentation
    from analysis.optim.recipes import build_optimizer as recipes_build

    assert build_optimizer is recipes_build and Instrumentation is hooks_instrumentation
    assert sorted(analysis.__all__) == sorted(analysis.PUBLIC) and InstrumentConfig
    result = train(tiny_config(steps=2, eval_every=0), out=tmp_path / "r", progress=False)
    assert result.steps == 2 and isinstance(tiny_config(), TrainConfig)
    assert set(load_run(tmp_path / "r")["stat"]) >= {"loss", "lr"}


def test_analysis_optim_gives_the_transforms_to_compose_with():
    import analysis.optim as optim
    from analysis.optim import transforms

    for name in ("chain", "momentum", "normalize", "scale_by_adam", "sign", "orthogonalize", "PerLayout"):
        assert getattr(optim, name) is getattr(transforms, name) and name in optim.__all__
    assert callable(optim.scale_transforms) and optim.ChainedOptimizer
