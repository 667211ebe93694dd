"""Race a design (``analysis.optim.designs``) against SCALE and a fairly tuned AdamW.

Fair means the comparison protocol (``analysis.protocol.presets``): every entrant runs the
same model, data order, run length and lr structure; SCALE and AdamW run at the lrs their
tuning chose *at this length* (the shipped reference tuning, ``tuning.json``); the
leaderboard is the mean final validation loss over seeds with a Student-t 95% interval, and
each entrant's difference to SCALE is paired by seed (``analysis.results.stats``).

On the ``quick`` setting (the reference's model and length) the baselines are not trained
again: their runs are read from the shipped reference recordings, after checking that each
was made with exactly this configuration (its lr and beta2 included); only the designs train. On any other preset (``smoke`` for tests) everything trains, a plumbing
check rather than a finding. A design's lr is the reader's choice: an untuned entrant is
at a disadvantage, never the baselines. Its Adam part (the vectors) takes SCALE's tuned beta2,
so a design and SCALE differ only where the designer says; the leaderboard shows each
entrant's beta2, its per-seed losses and their spread. Each run says when it starts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.protocol.arms import Arm, tuned_mults, tuned_points
from analysis.protocol.presets import PRESETS
from analysis.recording import load_run, run_settings, scalars
from analysis.results import stats, style
from analysis.results.run_set import REFERENCE
from analysis.training.config import ConfigError, TrainConfig
from analysis.training.loop import train
from analysis.training.rundir import effective_settings

BASELINES = ("scale", "adamw")
# the settings a reference run must share with the race's to be reused
SAME = (
    "model",
    "optimizer",
    "momentum",
    "lr",
    "adam_lr",
    "adam_betas",
    "steps",
    "batch_size",
    "micro_batch_size",
    "seq_len",
    "seed",
    "data",
    "embedding_lr_mult",
    "output_lr_mult",
    "eval_tokens",
)


def _reference_run(label: str, seed: int, config: TrainConfig) -> tuple[float, Path] | None:
    """The final validation loss and directory of the shipped reference run of ``label`` and
    ``seed``, when its steps ran with ``config``'s settings (None otherwise). Both sides are
    compared as effective settings (a recipe's default momentum placement filled in), since a
    run's segments record those and older recordings the config as given."""
    finished = stats.final_results(REFERENCE)
    match = finished[(finished["label"] == label) & (finished["seed"] == seed)]
    if match.empty:
        return None
    try:
        recorded = effective_settings(TrainConfig.from_dict(run_settings(match["run"].iloc[0])))
    except ConfigError:  # a recording of another version's fields: not this configuration
        return None
    wanted = effective_settings(config)

    def plain(value):  # JSON gives a tuple back as a list
        return tuple(value) if isinstance(value, list) else value

    same = all(plain(recorded.get(k)) == plain(wanted.get(k)) for k in SAME)
    return (float(match["final_eval_loss"].iloc[0]), Path(match["run"].iloc[0])) if same else None


def race(
    designs: dict[str, float], seeds=(100, 101), preset: str = "quick", out: str | Path = "runs/race"
) -> pd.DataFrame:
    """Train every design ``{recipe name: lr}`` on ``seeds`` at ``preset``'s setting; one row per
    (entrant, seed): label, seed, lr, final validation loss, where the run came from. The
    default seeds are held out, as the reference reports: its tuning chose on seeds 0-1."""
    setting = PRESETS[preset]
    points = tuned_points()
    missing = [b for b in BASELINES if b not in points]
    if missing:
        raise FileNotFoundError(
            f"no tuned lr for {missing} in {REFERENCE}/tuning.json: the race "
            "needs the shipped reference tuning"
        )
    # the baselines at their tuned (lr, beta2, multiplier); a design at the reader's lr and
    # SCALE's beta2 and multiplier
    mults = tuned_mults()
    entrants = {b: (Arm(b, b), *points[b], mults.get(b, 1.0)) for b in BASELINES}
    entrants |= {
        name: (Arm(name, name), lr, points["scale"][1], mults.get("scale", 1.0))
        for name, lr in designs.items()
    }
    rows, total = [], len(entrants) * len(seeds)
    for label, (arm, lr, beta2, mult) in entrants.items():
        for seed in seeds:
            config = setting.config(arm, seed, lr, beta2=beta2, mult=mult)
            reused = _reference_run(label, seed, config) if label in BASELINES else None
            row = {"label": label, "seed": seed, "lr": lr, "beta2": config.hyper.betas[1]}
            if reused is not None:
                rows.append(row | {"loss": reused[0], "source": "reference recording", "run": reused[1]})
                continue
            print(
                f"race: training {label}, seed {seed} ({len(rows) + 1} of {total} runs; "
                f"{config.steps} steps)",
                flush=True,
            )
            run_dir = Path(out) / preset / label / f"seed{seed}"
            result = train(config, out=run_dir, overwrite=True, progress=False)
            rows.append(row | {"loss": result.final_eval_loss, "source": "trained now", "run": run_dir})
    return pd.DataFrame(rows)


def curves(runs: pd.DataFrame):
    """The race's validation-loss curves: per entrant the mean over seeds with its Student-t
    95% band (``stats.t_band``, the leaderboard's interval; none with one seed)."""
    import seaborn as sns

    frames = [
        scalars(load_run(row.run), "eval_loss").assign(label=row.label, seed=row.seed)
        for row in runs.itertuples()
    ]
    frame = pd.concat(frames, ignore_index=True)
    fig, (ax,) = style.figure(1)
    sns.lineplot(frame, x="step", y="value", hue="label", errorbar=stats.t_band, ax=ax)
    seeds = runs.groupby("label")["seed"].nunique().min()
    ax.set(
        xlabel="optimizer step",
        ylabel="validation loss (nats)",
        title=f"the race: mean over {seeds} seed{'s' if seeds > 1 else ''}"
        + (", 95% t band" if seeds > 1 else " (no interval with one seed)"),
    )
    ax.legend(title="entrant")
    return fig


def leaderboard(runs: pd.DataFrame) -> pd.DataFrame:
    """Per entrant, best first: seeds, lr and beta2, mean loss with its 95% t half-width, the
    per-seed losses and their std, and the difference to SCALE paired by seed with its
    half-width (negative: better than SCALE)."""
    paired = runs.rename(columns={"loss": "final_eval_loss"})
    rows = []
    for label, part in runs.groupby("label"):
        mean, half = stats.interval(part["loss"].tolist())
        diff, diff_half, _ = stats.paired(paired, label, "scale") if label != "scale" else (0.0, 0.0, 0)
        ordered = part.sort_values("seed")
        rows.append(
            {
                "entrant": label,
                "seeds": len(part),
                "lr": part["lr"].iloc[0],
                "beta2": part["beta2"].iloc[0],
                "loss": mean,
                "loss_ci": half,
                "per_seed": " / ".join(f"{x:.3f}" for x in ordered["loss"]),
                "seed_std": ordered["loss"].std(ddof=1) if len(part) > 1 else float("nan"),
                "minus_scale": diff,
                "minus_scale_ci": diff_half,
            }
        )
    return pd.DataFrame(rows).sort_values("loss").set_index("entrant")
