"""Per-head statistics: each head's gradient variance sums to its matrix's, a one-head model's
equals the matrix statistic, GQA's key-value heads are split by their own count, and the
per-head figure draws from a recording."""

import pytest

from analysis.instrument.heads import head_layouts
from analysis.instrument.schedule import InstrumentConfig
from analysis.recording import load_run
from analysis.training.loop import train
from tests.conftest import tiny_config

PER_HEAD = InstrumentConfig(cheap_every=1, rows_every=2, per_head=True)


def _run(tmp_path, **overrides):
    config = tiny_config(
        steps=2, eval_every=0, batch_size=8, micro_batch_size=2, instrument=PER_HEAD, **overrides
    )
    train(config, out=tmp_path / "r", progress=False)
    return load_run(tmp_path / "r")


def _by_matrix(frame, stat):
    rows = frame[frame["stat"] == stat].copy()
    rows["matrix"] = rows["param"].str.replace(r"/head\d+$", "", regex=True)
    return rows.groupby(["step", "matrix"])["value"].sum()


def test_per_head_variance_sums_to_the_matrix(tmp_path):
    frame = _run(tmp_path)
    heads = _by_matrix(frame, "grad_var_head")
    matrix = frame[frame["stat"] == "grad_var"].set_index(["step", "param"])["value"]
    assert len(heads) == 2 * 2 * 4  # 2 steps x 2 layers x q, k, v, o
    for (step, name), total in heads.items():
        assert total == pytest.approx(matrix.loc[(step, name)], rel=1e-4), name
    per_head = frame[frame["stat"] == "grad_var_head"]
    assert per_head["param"].str.endswith("/head1").any()  # nano: 2 heads
    assert set(frame[frame["stat"] == "update_sigma_max_head"]["step"]) == {2}


def test_one_head_equals_the_matrix_statistic(tmp_path):
    from toy_models import llama

    real = llama.load_config

    def one_head(name, **kw):
        return real(name, **kw | {"num_attention_heads": 1, "num_key_value_heads": 1})

    import analysis.training.setup as setup

    setup.load_config, saved = one_head, setup.load_config
    try:
        frame = _run(tmp_path)
    finally:
        setup.load_config = saved
    heads = frame[frame["stat"] == "grad_var_head"]
    assert heads["param"].str.endswith("/head0").all()
    matrix = frame[frame["stat"] == "grad_var"].set_index(["step", "param"])["value"]
    for row in heads.itertuples():
        assert row.value == pytest.approx(matrix.loc[(row.step, row.param[: -len("/head0")])], rel=1e-4)


def test_gqa_key_value_heads_have_their_own_count():
    from toy_models.llama import build_model, load_config

    model = build_model(load_config("nano", vocab_size=64, num_attention_heads=4, num_key_value_heads=2))
    layouts = head_layouts(model, [n for n, _ in model.named_parameters()])
    q = layouts["model.layers.0.self_attn.q_proj.weight"]
    k = layouts["model.layers.0.self_attn.k_proj.weight"]
    o = layouts["model.layers.0.self_attn.o_proj.weight"]
    assert (q.heads, q.axis, k.heads, o.heads, o.axis) == (4, "rows", 2, 4, "columns")
    assert "model.layers.0.mlp.up_proj.weight" not in layouts


def test_the_per_head_figure_draws_from_a_recording(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from analysis.results.head_figures import per_head_variance
    from analysis.results.run_set import REFERENCE, MissingData, RunSet

    _run(tmp_path)
    fig = per_head_variance(RunSet(tmp_path))
    assert fig.axes and fig.axes[0].images and fig.axes[0].images[0].get_array().shape == (8, 2)
    with pytest.raises(MissingData, match="per_head=True"):
        per_head_variance(RunSet(REFERENCE))
