import json
import math

import numpy as np
import pytest
from scipy import stats

from analysis.recording import REFERENCE_LINES, TUNING, Recorder
from analysis.results.claims import all_claims, suspect_arms
from analysis.results.report import markdown
from analysis.results.stats import final_results, interval, paired, summary

VARIANCE_STATS = ("grad_var", "grad_var_rel", "grad_var_coord", "probe_var", "probe_var_rel")
SCALE_STATE_NANO = 2_099_712  # 4 bytes x (output layer + 2 x vectors) on nano


def _fake_run(root, label, seed, loss, optimizer=None, momentum=None, state=0, variance=None, steps=10):
    """A finished run directory with the fields the report reads (training loss falling from
    loss + 3 at step 1 to loss + 1 at step 3)."""
    with Recorder(root / label / f"seed{seed}") as rec:
        rec.write_config(
            {
                "config": {
                    "optimizer": optimizer or label,
                    "momentum": momentum,
                    "label": label,
                    "model": "nano",
                    "seed": seed,
                    "lr": 1e-3,
                    "steps": steps,
                    "batch_size": 4,
                    "seq_len": 8,
                    "adam_lr": 0.02,
                    "embedding_lr_mult": 1.0,
                    "output_lr_mult": 1.0,
                }
            }
        )
        for step in (1, 2, 3):
            rec.log(step, {"loss": loss + 4 - step})
        for step, by_role in (variance or {}).items():
            for role, value in by_role.items():
                rec.log(step, {s: value for s in VARIANCE_STATS}, param=f"{role}.w", role=role)
        diverged = {} if loss == loss else {"diverged_at": 2}  # a NaN loss: recorded as diverged
        rec.finish(
            {"first_eval_loss": 9.0, "final_eval_loss": loss, "optimizer_state_bytes": state, **diverged}
        )


def _tuning(path, model, steps, losses):
    path.mkdir(parents=True, exist_ok=True)
    arms = {
        label: {"grid": {"0.001": [loss, loss]}, "best": 0.001, "interior": True, "runs": 2, "tokens": 100}
        for label, loss in losses.items()
    }
    (path / TUNING).write_text(json.dumps({"model": model, "steps": steps, "arms": arms}))


def _ladder(root, losses, variance, scale_embedding=1.0, order=None, short=None):
    """Three seeds of every arm in ``losses``; ``variance`` on col_norm (and on scale with the
    embedding's scaled by ``scale_embedding``); the unigram line at 6.5; tunings for the
    ladder order at two settings; ``short``: a shorter tuned setting's reported runs."""
    for seed in range(3):
        for label, loss in losses.items():
            optimizer = "col_norm" if label.startswith("col_norm") else label
            var = None
            if label == "col_norm":
                var = variance
            elif label == "scale":
                var = {s: r | {"embedding": r["embedding"] * scale_embedding} for s, r in variance.items()}
            _fake_run(
                root,
                label,
                seed,
                loss + 0.01 * seed,
                optimizer=optimizer,
                state=SCALE_STATE_NANO if label == "scale" else 1,
                variance=var,
            )
            if short and label in short:
                _fake_run(
                    root / "order" / "short",
                    label,
                    seed,
                    short[label] + 0.01 * seed,
                    optimizer=optimizer,
                    steps=5,
                )
    (root / REFERENCE_LINES).write_text(json.dumps({"unigram": 6.5, "bigram": 4.5}))
    order = order or {"spectral_norm": 5.0, "col_norm": 5.1, "row_norm": 5.5, "sign": 5.6}
    _tuning(root, "nano", 10, order)
    _tuning(root / "order" / "short", "nano", 5, order)
    if short:  # a tuned root lists its reported runs, and so does each further setting
        (root / "selection.json").write_text(
            json.dumps({"runs": [f"{label}/seed{seed}" for label in losses for seed in range(3)]})
        )
        (root / "order" / "short" / "selection.json").write_text(
            json.dumps({"runs": [f"{label}/seed{seed}" for label in short for seed in range(3)]})
        )


GOOD_VARIANCE = {s: {"output": 3.0, "embedding": 2.0, "hidden": 0.1} for s in (1, 2, 3)}


def test_interval_is_student_t():
    values = [1.0, 2.0, 4.0]
    mean, half = interval(values)
    sd = stats.tstd(values)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert math.isnan(interval([1.0])[1]) and math.isnan(interval([])[0])


def test_paired_difference_pairs_by_seed(tmp_path):
    for seed, (a, b) in enumerate([(5.0, 5.5), (6.0, 6.4), (4.0, 4.6)]):
        _fake_run(tmp_path, "scale", seed, a)
        _fake_run(tmp_path, "col_norm", seed, b)
    diff, half, n = paired(final_results(tmp_path), "scale", "col_norm")
    assert n == 3 and diff == pytest.approx(-0.5)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * stats.tstd([-0.5, -0.4, -0.6]) / math.sqrt(3))


GOOD = {
    "sgd": 6.45,
    "sign": 5.6,
    "row_norm": 5.7,
    "col_norm": 5.5,
    "spectral_norm": 5.0,
    "scale": 5.2,
    "col_norm+embedding": 5.4,
    "col_norm+all": 5.1,
    "adamw": 5.21,
}


def test_claims_hold_when_the_numbers_say_so(tmp_path):
    _ladder(tmp_path, GOOD, GOOD_VARIANCE, scale_embedding=0.5, short={"sgd": 6.4, "col_norm": 5.9})
    checked = all_claims(tmp_path, final_results(tmp_path), {"unigram": 6.5})
    assert [c.held for c in checked] == [True] * 10, [(c.title, c.evidence) for c in checked if not c.held]
    assert "main (10 steps): sgd makes 4% of col_norm's progress" in checked[2].evidence
    assert "short (5 steps): sgd makes 15%" in checked[2].evidence
    assert "share 103%" in checked[6].evidence
    assert (
        "pairs: output vs embedding: agree; output vs all: agree; embedding vs all: agree"
        in checked[8].evidence
    )
    assert all(c.paper for c in checked)  # the paper's number beside every claim


def test_the_ladder_table_labels_each_setting_with_the_protocol_that_tuned_it(tmp_path):
    from analysis.results.ladder_claims import ladder_order

    _ladder(tmp_path, GOOD, GOOD_VARIANCE, short={"sgd": 6.4, "col_norm": 5.9})
    table = json.loads((tmp_path / TUNING).read_text())
    (tmp_path / TUNING).write_text(json.dumps({**table, "protocol": 3}))
    assert list(ladder_order(tmp_path)) == [
        "main (nano, 10 steps, protocol v3)",
        "short (nano, 5 steps, protocol v2)",  # its tuning.json predates the version field
    ]


def test_claims_fail_honestly_with_their_numbers(tmp_path):
    bad = GOOD | {
        "sgd": 5.9,
        "col_norm": 6.0,
        "scale": 6.2,
        "col_norm+all": 5.6,
        "adamw": 5.8,
        "spectral_norm": 6.3,
        "col_norm+embedding": 6.1,
    }
    _ladder(
        tmp_path,
        bad,
        {s: {"output": 1.0, "embedding": 2.0, "hidden": 0.1} for s in (1, 2, 3)},
        scale_embedding=2.0,
        short={"sgd": 6.45, "col_norm": 6.1},
    )
    checked = all_claims(tmp_path, final_results(tmp_path), {"unigram": 6.5})
    held = {c.title.split(":")[0]: c.held for c in checked}
    assert [c.held for c in checked[:6]] == [False] * 6, [(c.title, c.evidence) for c in checked[:6]]
    assert "total (probe): embedding > output" in checked[0].evidence
    assert "120% of col_norm's progress" in checked[2].evidence  # sgd trains here
    assert "gap +49.2%" in checked[5].evidence  # scale 0.4 nats worse than adamw: inferior
    assert "inferior: SCALE trails tuned AdamW by more than the +5% margin" in checked[5].evidence
    assert checked[6].held is False and "share -100%" in checked[6].evidence  # momentum hurts here
    assert checked[7].held is False and "against the paper's order" in checked[7].evidence
    assert held


def test_output_momentum_is_judged_at_every_tuned_setting(tmp_path):
    agree = {"col_norm": 5.9, "scale": 5.7, "col_norm+all": 5.6}
    _ladder(tmp_path / "agree", GOOD, GOOD_VARIANCE, short=agree)
    claim = all_claims(tmp_path / "agree", final_results(tmp_path / "agree"), {"unigram": 6.5})[4]
    assert claim.held and claim.evidence.startswith("main: loss(scale) - loss(col_norm) = -0.300")
    assert "short (nano, 5 steps): scale - col_norm = -0.200" in claim.evidence
    assert "col_norm+all - col_norm = -0.300" in claim.evidence  # every placement beside it
    _ladder(tmp_path / "against", GOOD, GOOD_VARIANCE, short=agree | {"scale": 6.0})
    claim = all_claims(tmp_path / "against", final_results(tmp_path / "against"), {"unigram": 6.5})[4]
    assert claim.held is False and "separated against it at short" in claim.evidence


def test_non_inferiority_is_one_sided_and_superiority_a_fact(tmp_path):
    _ladder(tmp_path, GOOD | {"scale": 5.0}, GOOD_VARIANCE)
    claim = all_claims(tmp_path, final_results(tmp_path), {"unigram": 6.5})[5]
    assert claim.held and "superior" in claim.evidence  # 19% below AdamW: still "matches"


def test_an_arm_far_below_adamw_raises_the_baseline_flag(tmp_path):
    _ladder(
        tmp_path,
        {"sgd": 6.45, "col_norm": 5.5, "scale": 5.2, "col_norm+all": 5.1, "adamw": 5.5},
        GOOD_VARIANCE,
    )
    results = final_results(tmp_path)
    assert suspect_arms(results) == ["scale", "col_norm+all"]
    report = markdown(tmp_path, results)
    assert "**Baseline suspect**: scale, col_norm+all" in report
    # the report opens with the regime and the gates
    assert report.splitlines()[2].startswith("**Regime:") and "EARLY TRAINING" in report.splitlines()[2]
    assert "- length: **FAILED**" in report


def test_missing_arms_are_not_checked_rather_than_guessed(tmp_path):
    _fake_run(tmp_path, "adamw", 0, 5.0)
    checked = all_claims(tmp_path, final_results(tmp_path), None)
    assert all(c.held is None for c in checked)
    assert all("needs" in c.evidence or "no " in c.evidence for c in checked)


def test_summary_counts_seeds_and_divergence(tmp_path):
    _fake_run(tmp_path, "sgd", 0, float("nan"))
    _fake_run(tmp_path, "sgd", 1, 6.0)
    table = summary(final_results(tmp_path))
    assert table.loc["sgd", "seeds"] == 2 and table.loc["sgd", "loss"] == 6.0


def test_every_run_directory_found_and_not_used_is_named_with_its_reason(tmp_path, capsys):
    from analysis.results.figures import main as figures_main

    _ladder(tmp_path, {"sgd": 6.45, "col_norm": 5.5}, GOOD_VARIANCE)
    broken = tmp_path / "broken" / "seed0"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{torn")
    (broken / "metrics.jsonl").write_text("")
    unfinished = tmp_path / "scale" / "seed9"
    with Recorder(unfinished) as rec:
        rec.write_config({"config": {"label": "scale", "model": "nano", "seed": 9}})
        rec.log(1, {"loss": 7.0})
    report = markdown(tmp_path, final_results(tmp_path))
    assert "6 runs used; 2 found and not used:" in report
    assert "- config.json unreadable (JSONDecodeError): broken/seed0" in report
    assert "- unfinished (no result.json): scale/seed9" in report
    figures_main(["--runs", str(tmp_path), "--out", str(tmp_path / "fig"), "--only", "loss_curves"])
    assert f"not used: {broken} (config.json unreadable" in capsys.readouterr().err


def test_a_folder_with_nothing_usable_exits_nonzero_naming_what_it_found(tmp_path, capsys):
    from analysis.results.figures import main as figures_main

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text("[]")
    assert (
        figures_main(["--runs", str(tmp_path), "--out", str(tmp_path / "fig"), "--only", "loss_curves"]) == 2
    )
    assert f"{tmp_path / 'a'}: config.json unreadable" in capsys.readouterr().err


def test_the_gates_judge_the_regime_before_any_claim(tmp_path):
    from analysis.results import gates, theory

    for seed in range(3):
        for label, late in (("scale", 0.01), ("adamw", 0.1)):
            run = tmp_path / label / f"seed{seed}"
            _fake_run(tmp_path, label, seed, 4.0 + 0.01 * seed * (10 if label == "adamw" else 1))
            with Recorder(run) as rec:  # eval at 0, 8 (80%) and 10: total gain 5, late gain 5 x late
                for step, value in ((0, 9.0), (8, 4.0 + 5 * late), (10, 4.0)):
                    rec.log(step, {"eval_loss": value})
    results = final_results(tmp_path)
    checked = {g.name: g for g in gates.all_gates(results, {"unigram": 6.5, "bigram": 4.2})}
    assert checked["length"].passed is False and "tokens per parameter" in checked["length"].evidence
    assert checked["converged"].passed is False
    assert "largest difference 0.450 (adamw - scale)" in checked["converged"].evidence
    assert checked["past bigrams"].passed is True
    assert checked["stable baseline"].passed is False and "(10.0x)" in checked["stable baseline"].evidence
    # the momentum theory's weight: an EMA keeps (1 - beta) / (1 + beta) of independent noise
    noise = np.random.default_rng(0).normal(size=200_000)
    ema = np.zeros_like(noise)
    for i in range(1, len(noise)):
        ema[i] = 0.9 * ema[i - 1] + 0.1 * noise[i]
    assert ema[1000:].var() == pytest.approx(theory.kept_fraction(0.9), rel=0.03)


def test_converged_compares_late_gains_with_the_claims_margin_not_an_arm_s_own_total(tmp_path):
    """A weak arm (small total gain) still gaining what the others gain late is no reason to
    doubt a ranking; an arm gaining more than the margin beyond the others is."""
    from analysis.results import gates

    def runs(root, arms):
        for label, (start, late) in arms.items():
            for seed in range(2):
                run = root / label / f"seed{seed}"
                _fake_run(root, label, seed, 4.0)
                with Recorder(run) as rec:
                    for step, value in ((0, start), (8, 4.0 + late), (10, 4.0)):
                        rec.log(step, {"eval_loss": value})
        return gates.convergence_gate(final_results(root))

    # sgd: total gain 0.3, late 0.06 (20% of its total); scale: total 5, late 0.05 (1%)
    assert runs(tmp_path / "alike", {"sgd": (4.3, 0.06), "scale": (9.0, 0.05)}).passed is True
    gate = runs(tmp_path / "apart", {"sgd": (4.3, 0.06), "scale": (9.0, 0.12)})
    assert gate.passed is False and "0.060 (scale - sgd)" in gate.evidence


def test_a_preview_says_so_on_its_report_s_first_line(tmp_path):
    from analysis.protocol.presets import PRESETS
    from analysis.results.report import preview_line, write_report

    _fake_run(tmp_path, "scale", 0, 4.0)
    _fake_run(tmp_path, "adamw", 0, 4.1)
    assert preview_line(PRESETS["reference"]) is None
    text = write_report(tmp_path, tmp_path / "report.md", preview=preview_line(PRESETS["quick"])).read_text()
    first = text.splitlines()[2]
    assert first.startswith("**PREVIEW** of the shipped reference recordings") and "seed 100" in first
    assert text.splitlines()[4].startswith("**Regime:")


def test_sync_readme_quotes_the_regime_gates_and_verdicts(tmp_path):
    from analysis.results.report import README_END, README_START, readme_excerpt, sync_readme, write_report

    for seed in range(2):
        _fake_run(tmp_path, "scale", seed, 4.0 + 0.01 * seed)
        _fake_run(tmp_path, "adamw", seed, 4.1 + 0.01 * seed)
    report = write_report(tmp_path, tmp_path / "report.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold\n{README_END}\n\nafter\n")
    assert sync_readme(readme, report) and not sync_readme(readme, report)  # idempotent
    text = readme.read_text()
    quoted = text.split(README_START)[1].split(README_END)[0]
    assert quoted.lstrip().startswith("**Regime:") and "Gates (fixed before the runs" in quoted
    assert not any(line.startswith("- ") for line in quoted.splitlines())
    assert quoted.strip() == readme_excerpt(report.read_text()).strip() and text.endswith("after\n")
    claims = [line for line in quoted.splitlines() if line[:1].isdigit()]
    assert claims[0].startswith("1. **") and claims[-1].startswith("10. **") and len(claims) == 10
    with pytest.raises(ValueError, match="no <!-- reference report"):
        sync_readme(tmp_path / "report.md", report)
