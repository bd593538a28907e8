"""From runs to conclusions: tables over seeds, intervals, selection, comparisons.

Every function takes and returns plain DataFrames. Diverged runs are counted, never
averaged in. Selection uses validation metrics only; test metrics are reported for what
validation chose, so the comparison is free of test leakage. Which metrics there are, and
which way each is better, the task's metric table (`Metrics`) says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from reprogrid.tasks.spec import Metrics


def interval_name(confidence: float) -> str:
    """Column stem of an interval: 0.95 -> 'ci95'."""
    return f"ci{round(confidence * 100):d}"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean; NaNs where fewer than two values."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return math.nan, math.nan
    mean, sem = values.mean(), values.std(ddof=1) / math.sqrt(n)
    if sem == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return float(low), float(high)


def compared_metric(criterion: Mapping[str, Any] | None, metrics: Metrics) -> str:
    """The test column the grid is compared on: the criterion's metric, else the headline's."""
    return criterion["metric"] if criterion else metrics.column("test")


def summarise(
    runs: pd.DataFrame, axes: Sequence[str], metrics: Metrics, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per setting (every axis but the seed): counts, then mean, sd and interval of
    every metric a run reports (`metrics.run_keys()`)."""
    ci = interval_name(confidence)
    rows = []
    for key, group in runs.groupby(list(axes), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = group[group["status"] == "ok"]
        row: dict[str, Any] = dict(zip(axes, key, strict=True))
        row.update(
            n=len(ok), n_runs=len(group), n_diverged=int((group["status"] == "diverged").sum())
        )
        for metric in metrics.run_keys():
            values = ok[metric].astype(float).to_numpy()
            row[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{metric}_{ci}_low"], row[f"{metric}_{ci}_high"] = t_interval(values, confidence)
        row["train_seconds_mean"] = float(ok["train_seconds"].mean()) if len(ok) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def select_best(
    summary: pd.DataFrame, axes: Sequence[str], metrics: Metrics, select: str, report: str
) -> pd.DataFrame:
    """For each architecture, the setting with the best mean of `select` (a validation
    column), in the direction the task declares for it; `report` (a test column) is the
    metric whose means and intervals the table carries for the chosen settings.

    A setting that lost seeds (diverged or failed) is chosen only when no setting of its
    architecture kept all of them: its mean covers the seeds that survived, so it flatters
    an unstable setting. `complete` says whether every seed of the chosen setting finished;
    `passed_over` names the settings with a better mean that were skipped for lost seeds.
    """
    mean = f"{select}_mean"
    sign = metrics.sign(select)
    candidates = summary[summary["n"] > 0].assign(complete=lambda s: s["n"] == s["n_runs"])
    rows = []
    for _, group in candidates.groupby("arch", sort=True):
        pool = group[group["complete"]] if group["complete"].any() else group
        # Signed so that the best is the largest, the first of equals, whatever the direction.
        chosen = pool.loc[(sign * pool[mean]).idxmax()]
        better = group[(sign * (group[mean] - chosen[mean]) > 0) & ~group["complete"]]
        passed = [
            f"{_describe_setting(row, axes)} (mean {select} {row[mean]:.4f}, "
            f"{row['n_runs'] - row['n']} of {row['n_runs']} seeds lost)"
            for _, row in better.iterrows()
        ]
        rows.append({**chosen.to_dict(), "passed_over": "; ".join(passed)})
    columns = [*axes, "n", "n_runs", "n_diverged", "complete", mean, f"{select}_sd"]
    columns += [c for c in summary.columns if c.startswith(f"{report}_") and c not in columns]
    return pd.DataFrame(rows, columns=[*columns, "passed_over"])


def selection_warnings(best: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """One sentence per architecture whose choice was shaped by seeds lost to divergence."""
    warnings = []
    for _, row in best.iterrows():
        setting = _describe_setting(row, axes)
        if not row["complete"]:
            warnings.append(
                f"{row['arch']}: every setting lost seeds; chose {setting} with "
                f"{row['n']} of {row['n_runs']} seeds finished ({row['n_diverged']} diverged), "
                "so its mean covers only the seeds that survived."
            )
        if isinstance(row["passed_over"], str) and row["passed_over"]:
            warnings.append(
                f"{row['arch']}: chose {setting}, whose seeds all finished, over "
                f"{row['passed_over']}."
            )
    return warnings


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _setting_runs(
    runs: pd.DataFrame, setting: Mapping[str, Any], axes: Sequence[str]
) -> pd.DataFrame:
    mask = np.ones(len(runs), dtype=bool)
    for axis in axes:
        mask &= (runs[axis] == setting[axis]).to_numpy()
    chosen = runs[mask]
    return chosen[chosen["status"] == "ok"]


def compare_pair(a: pd.Series, b: pd.Series, confidence: float) -> dict[str, Any]:
    """Compare two samples of one metric indexed by seed: paired where seeds are shared.

    `a - b` is the reported difference. Paired: t-test on the per-seed differences, effect
    size d_z (mean difference over its sd). Unpaired: Welch's t-test, Cohen's d with the
    pooled sd, and the Welch-Satterthwaite degrees of freedom for the interval.
    """
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        diffs = (a[shared] - b[shared]).to_numpy(dtype=float)
        n = diffs.size
        mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
        test = stats.ttest_rel(a[shared], b[shared])
        low, high = t_interval(diffs, confidence)
        return {
            "test": "paired t",
            "n_pairs": n,
            "diff": mean,
            "diff_low": low,
            "diff_high": high,
            "effect_size": mean / sd if sd > 0 else math.nan,
            "t": float(test.statistic),
            "df": n - 1,
            "p_value": float(test.pvalue),
        }
    x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    result: dict[str, Any] = {"test": "Welch t", "n_pairs": 0, "diff": float(x.mean() - y.mean())}
    if x.size < 2 or y.size < 2:
        return {
            **result,
            "diff_low": math.nan,
            "diff_high": math.nan,
            "effect_size": math.nan,
            "t": math.nan,
            "df": math.nan,
            "p_value": math.nan,
        }
    test = stats.ttest_ind(x, y, equal_var=False)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)) if se > 0 else math.nan
    half = stats.t.ppf((1 + confidence) / 2, df) * se if se > 0 else 0.0
    pooled = math.sqrt(
        ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)
    )
    return {
        **result,
        "diff_low": result["diff"] - half,
        "diff_high": result["diff"] + half,
        "effect_size": result["diff"] / pooled if pooled > 0 else math.nan,
        "t": float(test.statistic),
        "df": float(df),
        "p_value": float(test.pvalue),
    }


def compare(
    runs: pd.DataFrame,
    best: pd.DataFrame,
    axes: Sequence[str],
    metric: str,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every pair of architectures at their selected settings compared on `metric` (a test
    column, named in the table's `metric` column), with Holm-adjusted p-values; `diff` is
    `mean_a - mean_b` whichever way the metric is better."""
    rows = []
    settings = {row["arch"]: row for _, row in best.iterrows()}
    for arch_a, arch_b in itertools.combinations(sorted(settings), 2):
        samples = {}
        for arch in (arch_a, arch_b):
            chosen = _setting_runs(runs, settings[arch], axes)
            samples[arch] = chosen.set_index("seed")[metric].astype(float)
        row = {
            "metric": metric,
            "arch_a": arch_a,
            "arch_b": arch_b,
            "setting_a": _describe_setting(settings[arch_a], axes),
            "setting_b": _describe_setting(settings[arch_b], axes),
            "n_a": len(samples[arch_a]),
            "n_b": len(samples[arch_b]),
            "mean_a": float(samples[arch_a].mean()),
            "mean_b": float(samples[arch_b].mean()),
        }
        row.update(compare_pair(samples[arch_a], samples[arch_b], confidence))
        rows.append(row)
    columns = [
        "metric",
        "arch_a",
        "arch_b",
        "setting_a",
        "setting_b",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "test",
        "n_pairs",
        "diff",
        "diff_low",
        "diff_high",
        "effect_size",
        "t",
        "df",
        "p_value",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["p_holm"] = holm(table["p_value"].tolist()) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    return table


def _describe_setting(row: Mapping[str, Any], axes: Sequence[str]) -> str:
    return " ".join(f"{axis}={row[axis]}" for axis in axes if axis != "arch")


def evaluate_criterion(
    comparisons: pd.DataFrame,
    criterion: Mapping[str, Any] | None,
    alpha: float,
    metrics: Metrics,
) -> dict[str, Any]:
    """Whether the experiment's success criterion holds, with the numbers that decide it.

    `better` must beat `worse` on the criterion's `metric` by at least `min_diff` in the
    metric's own units and direction: for a lower-is-better metric, `better`'s mean must be
    lower by `min_diff`. `diff` stays `better - worse`, as the comparisons report it.
    """
    if not criterion:
        return {"criterion": None, "met": None, "statement": "No success criterion was set."}
    better, worse, metric = criterion["better"], criterion["worse"], criterion["metric"]
    min_diff = criterion.get("min_diff", 0.0)
    text = (
        f"{better} beats {worse} by at least {min_diff:g} in {metrics.label(metric)} "
        f"at Holm-adjusted p < {alpha}"
    )
    match = comparisons[
        ((comparisons["arch_a"] == better) & (comparisons["arch_b"] == worse))
        | ((comparisons["arch_a"] == worse) & (comparisons["arch_b"] == better))
    ]
    if match.empty:
        return {
            "criterion": text,
            "met": None,
            "statement": f"Not decided: no comparison of {better} with {worse} (no ok runs).",
        }
    row = match.iloc[0]
    diff = row["diff"] if row["arch_a"] == better else -row["diff"]
    p = row["p_holm"]
    counts = {row["arch_a"]: int(row["n_a"]), row["arch_b"]: int(row["n_b"])}
    if min(counts.values()) < 2 or math.isnan(p):
        reason = (
            f"{better} has {counts[better]} and {worse} {counts[worse]} finished run(s) at the "
            "chosen settings, and a test needs at least two on each side; add seeds"
            if min(counts.values()) < 2
            else "the test gives no p-value (the differences do not vary)"
        )
        return {
            "criterion": text,
            "met": None,
            "diff": float(diff),
            "p_holm": None,
            "statement": f"Not decided: {text}; {reason}.",
        }
    met = bool(metrics.sign(metric) * diff >= min_diff and p < alpha)
    verdict = "MET" if met else "NOT MET"
    return {
        "criterion": text,
        "met": met,
        "diff": float(diff),
        "p_holm": float(p),
        "statement": f"Success criterion {verdict}: {text}; observed difference "
        f"({better} - {worse}) {diff:.4f}, Holm-adjusted p = {p:.3g}.",
    }


def code_versions(
    runs: pd.DataFrame, checkout: Mapping[str, Any] | None = None, named: int = 5
) -> dict[str, Any]:
    """Which commits produced the runs, and a warning when they may not be the code in use.

    Warns when the runs come from several commits, when any was made on a dirty tree or
    records no commit, and, given the `checkout` now in use (`commit`, `dirty`, as
    `capture.git_state` returns them), when a run was made at another commit or the
    checkout has uncommitted changes. The warning names up to `named` runs and says what
    to do.
    """
    commits = sorted({str(c) for c in runs["commit"].dropna()})
    dirty = runs.loc[runs["dirty"].fillna(False).astype(bool), "run"].tolist()
    unknown = int(runs["commit"].isna().sum())
    current = (checkout or {}).get("commit")
    stale = (
        runs.loc[runs["commit"].notna() & (runs["commit"] != current), "run"].tolist()
        if current
        else []
    )
    dirty_now = bool((checkout or {}).get("dirty"))
    problems = []
    if len(commits) > 1:
        problems.append(f"runs come from {len(commits)} different commits")
    if dirty:
        problems.append(f"{len(dirty)} run(s) were made on a dirty tree")
    if unknown:
        problems.append(f"{unknown} run(s) record no git commit")
    if stale:
        problems.append(
            f"{len(stale)} run(s) were made at another commit than the one checked out now "
            f"({current[:12]}): {_first(stale, named)}"
        )
    if dirty_now:
        problems.append("the checkout has uncommitted changes now")
    warning = None
    if problems:
        warning = "Mixed code versions: " + "; ".join(problems) + "."
        if stale or dirty_now:
            warning += (
                " These results may not come from the code checked out now: commit any "
                "change, then rerun the runs made elsewhere (`snakemake --forcerun train` "
                "reruns them all; deleting a run's folder reruns that run)."
            )
    return {
        "commits": commits,
        "dirty_runs": dirty,
        "runs_without_commit": unknown,
        "checkout": {"commit": current, "dirty": (checkout or {}).get("dirty")},
        "runs_not_at_checkout": stale,
        "mixed": len(commits) > 1 or bool(dirty),
        "warning": warning,
    }


def _first(names: Sequence[str], count: int) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")
