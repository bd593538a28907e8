"""Figures of a grid, drawn with seaborn from the summary tables.

Each function takes tables and returns a matplotlib Figure; `save` writes it as PNG (for
the HTML report) and PDF (for a thesis), atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reprogrid.record import atomic
from reprogrid.tasks.spec import Metrics


def _setting_label(frame: pd.DataFrame, axes: Sequence[str]) -> pd.Series:
    """'lr=0.001' or 'lr=0.001 batch_size=256': every axis but arch, for legends and rows."""
    others = [axis for axis in axes if axis != "arch"]
    if not others:
        return pd.Series([""] * len(frame), index=frame.index)
    return (
        frame[others]
        .astype(str)
        .apply(lambda row: " ".join(f"{axis}={row[axis]}" for axis in others), axis=1)
    )


def learning_curves(histories: pd.DataFrame, axes: Sequence[str], metrics: Metrics) -> plt.Figure:
    """Every metric per epoch, a panel each on validation (first row) and test (second), and
    the training loss: mean over seeds with a ±1 sd band, titled by name and direction."""
    frame = histories.copy()
    frame["setting"] = _setting_label(frame, axes)
    columns = [*metrics.columns("val", "test"), "train_loss"]
    long = frame.melt(
        id_vars=["arch", "setting", "seed", "epoch"],
        value_vars=columns,
        var_name="metric",
        value_name="value",
    )
    long["metric"] = long["metric"].map({column: metrics.label(column) for column in columns})
    grid = sns.relplot(
        data=long,
        x="epoch",
        y="value",
        hue="arch",
        style="setting",
        col="metric",
        col_order=[metrics.label(column) for column in columns],
        col_wrap=len(metrics.names),
        kind="line",
        errorbar="sd",
        markers=True,
        facet_kws={"sharey": False},
        height=3.6,
        aspect=1.2,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("epoch", "")
    for ax in grid.axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
    grid.figure.suptitle("Learning curves (mean over seeds, band: ±1 sd)", y=1.03)
    return grid.figure


def metric_heatmap(
    summary: pd.DataFrame, axes: Sequence[str], metrics: Metrics, metric: str
) -> plt.Figure:
    """Mean `metric` (a test column) of every setting: architectures by rows, learning
    rates by columns; where no two rows share a learning rate (sampled ones), settings by
    rows and architectures by columns. The brighter a cell, the better, either direction."""
    frame = summary.copy()
    mean = f"{metric}_mean"
    others = [axis for axis in axes if axis not in ("arch", "lr")]
    frame["row"] = frame["arch"].astype(str)
    if others:
        frame["row"] += " " + _setting_label(frame[[*others, "arch"]], others)
    table = frame.pivot_table(index="row", columns="lr", values=mean)
    labels = ("learning rate", "architecture")
    if table.shape[1] > 1 and (table.notna().sum(axis=1) == 1).all():
        # A column per learning rate would leave all but one cell of each row empty.
        frame["row"] = _setting_label(frame, axes)
        table = frame.pivot_table(index="row", columns="arch", values=mean)
        labels = ("architecture", "setting")
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * table.shape[1], 1.2 + 0.6 * table.shape[0]))
    sns.heatmap(
        table,
        annot=True,
        fmt=".4g",
        cmap="viridis" if metrics.direction(metric) == "max" else "viridis_r",
        ax=ax,
        cbar_kws={"label": metrics.label(metric)},
    )
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(f"Mean {metric} over seeds")
    fig.tight_layout()
    return fig


def seed_spread(
    runs: pd.DataFrame, axes: Sequence[str], metrics: Metrics, metric: str
) -> plt.Figure:
    """`metric` (a test column) of every run, one point per seed, with a box per setting."""
    frame = runs[runs["status"] == "ok"].copy()
    frame["setting"] = _setting_label(frame, axes)
    label = metrics.label(metric)
    frame[label] = frame[metric].astype(float)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * max(frame["setting"].nunique(), 1) * 1.5, 3.8))
    sns.boxplot(
        data=frame,
        x="setting",
        y=label,
        hue="arch",
        ax=ax,
        fill=False,
        showfliers=False,
        legend=False,
    )
    sns.stripplot(
        data=frame,
        x="setting",
        y=label,
        hue="arch",
        ax=ax,
        dodge=True,
        size=6,
        jitter=0.1,
    )
    ax.set_xlabel("")
    ax.set_title("Spread over seeds (one point per run)")
    fig.tight_layout()
    return fig


def search_rungs(
    rungs: pd.DataFrame, finished: pd.DataFrame, metrics: Metrics, metric: str, max_epochs: int
) -> plt.Figure:
    """Successive halving, one panel per architecture: each setting's mean `metric` over
    seeds at every rung it reached; settings stopped at a rung in grey, those trained to
    `max_epochs` in colour, their last point read from the finished runs (`finished`:
    runs.csv)."""
    archs = sorted(rungs["arch"].unique())
    fig, panels = plt.subplots(
        1, len(archs), figsize=(4.2 * len(archs), 3.6), squeeze=False, sharey=True
    )
    ok = finished[finished["status"] == "ok"]
    final = ok.groupby(ok["run"].str.rsplit("/seed=", n=1).str[0])[metric].mean()
    for ax, arch in zip(panels[0], archs, strict=True):
        for point, trail in rungs[rungs["arch"] == arch].groupby("point", sort=True):
            x, y = list(trail["epochs"]), list(trail["metric"])
            if point in final.index:
                x.append(max_epochs)
                y.append(final[point])
                ax.plot(x, y, marker="o", linewidth=1.2, alpha=0.9)
            else:
                ax.plot(x, y, marker="o", color="0.7", linewidth=0.8, alpha=0.6)
        ax.set_xscale("log")
        ticks = sorted({*rungs["epochs"], max_epochs})
        ax.set_xticks(ticks, [str(tick) for tick in ticks])
        ax.minorticks_off()
        ax.set_xlabel("epochs")
        ax.set_title(arch)
    panels[0][0].set_ylabel(f"{metrics.label(metric)}, mean over seeds")
    fig.suptitle("Successive halving: grey settings stopped at their rung", y=1.02)
    fig.tight_layout()
    return fig


def run_curve(history: pd.DataFrame, title: str, metrics: Metrics) -> plt.Figure:
    """One run's metrics per epoch, a panel each, on every split its history holds; the
    training loss gets a panel of its own unless a metric is named `loss` and takes it in."""
    names = metrics.names if "loss" in metrics.names else [*metrics.names, "loss"]
    fig, panels = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(panels[0], names, strict=True):
        for split in ("train", "val", "test"):
            column = f"{split}_{name}"
            if column in history:
                ax.plot(history["epoch"], history[column], marker="o", label=split)
        ax.set_ylabel(name if name in metrics.names else "training loss")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: str | Path) -> None:
    """Write `fig` to `path` (format from the suffix), atomically, and free it."""
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            format=path.suffix.lstrip("."),
            dpi=150,
            bbox_inches="tight",
            metadata=_fixed_metadata(path.suffix),
        )
    plt.close(fig)


def _fixed_metadata(suffix: str) -> dict:
    # Without a fixed date, every rebuild of a PDF differs in bytes though not in content.
    return {"CreationDate": None} if suffix == ".pdf" else {}
