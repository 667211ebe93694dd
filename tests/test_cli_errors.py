"""No traceback from any command line: malformed arguments give one error line and a
non-zero exit (unknown flags, wrong types, negative numbers, empty strings, a file where a
directory is expected and the reverse)."""

import pytest

from analysis import bench, cli, gpu_check, reproduce
from analysis.results import curate, figures, memory
from analysis.training import cli as train_cli


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


CASES = [
    (train_cli.main, ["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (train_cli.main, ["--steps", "abc"], "invalid int value: 'abc'"),
    (train_cli.main, ["--lr", "-1e-3"], "lr must be > 0, got -0.001"),
    (train_cli.main, ["--steps", "-5"], "steps must be > 0, got -5"),
    (train_cli.main, ["--model", ""], "unknown model ''"),
    (train_cli.main, ["--optimizer", ""], "unknown optimizer ''"),
    (train_cli.main, ["--out", "{a_file}", "--steps", "1"], "is a file, not a directory"),
    (reproduce.main, ["--jobs", "x"], "argument --jobs: invalid int value: 'x'"),
    (reproduce.main, ["--jobs", "-2"], "--jobs must be >= 1"),
    (reproduce.main, ["--preset", ""], "unknown preset ''"),
    (reproduce.main, ["--bogus"], "unrecognized arguments: --bogus"),
    (figures.main, ["--runs", "{a_file}"], "no usable run directories under"),
    (figures.main, ["--runs", "{tmp_path}/missing"], "does not exist"),
    (figures.main, ["--only", "nope"], "unknown figure(s) ['nope']"),
    (memory.main, ["--no_such_flag"], "unrecognized arguments"),
    (memory.main, ["--no-measure", "--out", "{tmp_path}"], "is a directory, not a file"),
    (memory.main, ["--no-measure", "--out", "{tmp_path}/no/such/file.txt"], "does not exist"),
    (bench.main, ["optimizer", "--out", "{tmp_path}"], "is a directory, not a file"),
    (bench.main, ["optimizer", "--models", "nope"], "unknown model 'nope'"),
    (bench.main, ["optimizer", "--repeats", "many"], "invalid int value: 'many'"),
    (bench.main, ["everything"], "invalid choice: 'everything'"),
    (
        gpu_check.main,
        ["--device", "cpu", "--smoke", "--out", "{tmp_path}/no/such/check.json"],
        "does not exist",
    ),  # refused before the check runs, not after
    (curate.main, ["{a_file}", "{tmp_path}/out"], "no finished runs under"),
    (curate.main, [], "the following arguments are required: src, dst"),
    (cli.main, ["nope"], "unknown command 'nope'"),
]


@pytest.mark.parametrize(
    "main, args, message", CASES, ids=[f"{m.__module__.split('.')[-1]}:{' '.join(a)}" for m, a, _ in CASES]
)
def test_malformed_arguments_give_one_line_and_a_nonzero_exit(
    main, args, message, a_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = [a.format(a_file=a_file, tmp_path=tmp_path) for a in args]
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None)
    assert len(err.splitlines()) == 1, err
    assert message in err and "Traceback" not in err
