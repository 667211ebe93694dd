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


def test_from_analysis_import_train_is_the_trainer_function():
    """A plain function, the one ``analysis.training`` defines (not a module made callable)."""
    import inspect

    from analysis import train
    from analysis.training.loop import train as loop_train

    assert inspect.isfunction(train) and train is loop_train


def test_the_old_package_name_warns_and_gives_the_same_modules():
    """``analysis.train`` is the old name of ``analysis.training``: importing it warns once, in a
    fresh interpreter, and names the same module objects (a class imported by either name is
    one class)."""
    code = (
        "import warnings; warnings.simplefilter('error', FutureWarning)\n"
        "try:\n    import analysis.train.config\nexcept FutureWarning as w:\n    print('warned:', w)\n"
        "warnings.simplefilter('ignore')\n"
        "import analysis.train.config as old, analysis.training.config as new\n"
        "from analysis.train import TrainConfig\n"
        "print(old is new, TrainConfig is new.TrainConfig)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "warned: analysis.train is now analysis.training" in out
    assert out.splitlines()[-1] == "True True"
