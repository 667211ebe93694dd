"""The one place figure style is set: seaborn theme, a fixed colour per arm and per role, saving.

Colours are fixed per label (not per plot), so ``scale`` is the same colour in every figure.
"""

from __future__ import annotations

from pathlib import Path

LABEL_ORDER = (
    "sgd",
    "sign",
    "row_norm",
    "col_norm",
    "spectral_norm",
    "scale",
    "col_norm+embedding",
    "col_norm+all",
    "adamw",
    "muon",
)
ROLE_ORDER = ("output", "embedding", "hidden", "vector")
_ROLE_COLOURS = {"output": "#d62728", "embedding": "#1f77b4", "hidden": "#7f7f7f", "vector": "#bcbd22"}


def ensure_bundled_fonts() -> None:
    """matplotlib's font list comes from a cache file that another matplotlib of the same
    version may have written on this machine without matplotlib's own fonts (DejaVu, STIX);
    then every figure with math prints ``findfont`` warnings. When they are missing, the list
    is rebuilt in memory from the fonts on disk (the user's cache file is left as it is)."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    if {"DejaVu Sans", "STIXGeneral"} <= {font.name for font in manager.ttflist}:
        return
    # in place, so the module's aliases of the manager's methods (findfont, ...) see it too
    manager.__dict__.update(font_manager.FontManager().__dict__)
    font_manager.FontManager._findfont_cached.cache_clear()


def apply() -> None:
    """Seaborn's paper context, white grid, non-interactive backend when no display is set,
    matplotlib's own fonts present (``ensure_bundled_fonts``)."""
    import matplotlib
    import seaborn as sns

    ensure_bundled_fonts()

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
        matplotlib.use("Agg", force=False)
    sns.set_theme(
        context="paper",
        style="whitegrid",
        font_scale=1.1,
        rc={"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"},
    )


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A styled figure with ``ncols`` panels side by side: ``(fig, [axes])``."""
    import matplotlib.pyplot as plt

    apply()
    # constrained layout keeps every label, title and legend inside the canvas, apart
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


REFERENCE_LINE_STYLES = {"unigram": ":", "bigram": "--"}


def reference_lines(ax, lines: dict | None, vertical: bool = False, label: bool = True) -> None:
    """The corpus's unigram (dotted) and bigram (dashed) losses as lines across ``ax``
    (``lines``: the recordings' ``reference_losses.json``; None draws nothing), labelled for
    the legend with their values unless ``label`` is False."""
    for name, linestyle in REFERENCE_LINE_STYLES.items() if lines else ():
        draw = ax.axvline if vertical else ax.axhline
        draw(
            lines[name],
            color="0.4",
            linestyle=linestyle,
            linewidth=1,
            label=f"{name} {lines[name]:.2f}" if label else None,
        )


def palette(labels) -> dict[str, tuple]:
    """A stable colour per label: ladder labels keep their colour whatever else is plotted."""
    import seaborn as sns

    known = sns.color_palette("tab10", len(LABEL_ORDER))
    colours = dict(zip(LABEL_ORDER, known))
    extra = [label for label in labels if label not in colours]
    colours.update(zip(extra, sns.color_palette("husl", max(1, len(extra)))))
    return {label: colours[label] for label in labels}


def role_palette(roles) -> dict[str, str]:
    """A fixed colour per layer role."""
    return {role: _ROLE_COLOURS.get(role, "#333333") for role in roles}


def ordered(labels) -> list[str]:
    """Labels in the ladder's order (unknown labels last, alphabetically), duplicates dropped."""
    labels = list(dict.fromkeys(labels))
    rank = {label: i for i, label in enumerate(LABEL_ORDER)}
    return sorted(labels, key=lambda label: (rank.get(label, len(rank)), label))


def save(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``out_dir``; close the figure."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths
