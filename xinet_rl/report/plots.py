"""Comparison plots: evaluation return against steps with 95% bands, and return against deployable parameters."""

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
    ax.set_xticks(range(len(names)), [f"{v}\n{p / 1000:.1f}k params" for v, p in zip(names, params)])
    ax.set(ylabel="final evaluation return (mean, 95% CI)", title=f"{env_id}: return against deployable parameters")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
