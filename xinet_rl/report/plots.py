"""Comparison plots: evaluation return against steps with 95% bands, return against deployable parameters, and the
fronts of ``xinet-compare --grid`` (return against deployable parameters and against training FLOPs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(curves: dict[str, dict], path: Path, env_id: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, c in curves.items():
        ax.plot(c["steps"], c["mean"], label=variant)
        ax.fill_between(c["steps"], c["low"], c["high"], alpha=0.2)
    ax.set(xlabel="environment steps", ylabel="evaluation return", title=f"{env_id}: mean and 95% CI over seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_return_vs_params(rows: dict[str, dict], path: Path, env_id: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(rows)
    params = [rows[v]["params_deploy"] for v in names]
    means = [rows[v]["mean"] for v in names]
    errors = [[rows[v]["mean"] - rows[v]["mean_ci"][0] for v in names],
              [rows[v]["mean_ci"][1] - rows[v]["mean"] for v in names]]
    ax.bar(range(len(names)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    crowded = len(names) > 4  # grid points: longer names, more bars
    ax.set_xticks(range(len(names)), [f"{v}\n{p / 1000:.1f}k params" for v, p in zip(names, params)],
                  fontsize=8 if crowded else None, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set(ylabel="final evaluation return (mean, 95% CI)", title=f"{env_id}: return against deployable parameters")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_front(front: list[dict], x_key: str, path: Path, env_id: str, xlabel: str) -> None:
    """Final return (mean, 95% CI) against ``x_key`` on a log axis: one line per variant through its grid points in
    order of size, each point labelled with its grid point. Points without ``x_key`` (older runs) are left out."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    variants = list(dict.fromkeys(row["variant"] for row in front))
    plotted = 0
    for variant in variants:
        points = sorted((r for r in front if r["variant"] == variant and r[x_key] is not None), key=lambda r: r[x_key])
        if not points:
            continue
        xs, means = [r[x_key] for r in points], [r["mean"] for r in points]
        errors = [[r["mean"] - r["mean_ci"][0] for r in points], [r["mean_ci"][1] - r["mean"] for r in points]]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=4, label=variant)
        for r in points:
            if r["grid_label"]:
                ax.annotate(r["grid_label"], (r[x_key], r["mean"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        plotted += len(points)
    if plotted:
        ax.set_xscale("log")
        ax.margins(x=0.12)  # room for the labels of the outer points
        ax.legend()
    else:
        ax.text(0.5, 0.5, f"no run records {x_key}", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel=xlabel, ylabel="final evaluation return (mean, 95% CI)", title=f"{env_id}: return against {xlabel}")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
