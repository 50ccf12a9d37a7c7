"""A comparison's report: ``results.json``, ``report.md`` and the plots, for finished runs grouped by variant and
grid point, with each run's batch-1 action latency timed here (the aggregation and plots are
:mod:`xinet_rl.report`'s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xinet_rl.report.aggregate import curves, front_rows, group_runs, improvement, iqm_and_mean, score_matrices
from xinet_rl.report.plots import plot_curves, plot_front, plot_return_vs_params
from xinet_rl.report.runs import RunRecord, series_name
from xinet_rl.run.errors import UsageError


def write_comparison(runs: list[RunRecord], out: Path) -> dict:
    """``results.json``, ``report.md``, ``curves.png``, ``return_vs_params.png`` and the fronts
    (``front_params.png``, ``front_flops.png``) for these runs, grouped by variant and grid point.

    :param runs: finished runs of one environment (each run's ``latency_ms`` is set here)
    :param out: the output directory
    :return: the results (``results.json``)
    """
    from xinet_rl.agents.xisac import XiSAC
    from xinet_rl.run.baseline import VARIANT as SB3_VARIANT, sb3_latency_ms
    from xinet_rl.run.latency import action_latency_ms

    env_ids = {r.summary["env"] for r in runs}
    if len(env_ids) != 1:
        raise UsageError(f"runs of different environments cannot be compared: {', '.join(sorted(env_ids))}")
    env_id = env_ids.pop()
    for run in runs:
        if run.variant == SB3_VARIANT:
            run.latency_ms = sb3_latency_ms(run.path)
        elif (run.path / "model.safetensors").is_file():  # without it (a deleted model) the latency is n/a
            model = XiSAC.load(run.path / "model.safetensors", device="cpu")
            obs = np.zeros(model.observation_space.shape, dtype=np.float32)
            run.latency_ms = action_latency_ms(lambda o, model=model: model.predict(o, deterministic=True), obs)
    groups = group_runs(runs)
    scores = score_matrices(runs)
    aggregates = iqm_and_mean(scores)
    grids = {json.dumps(r.grid): r.grid for r in runs if r.variant == "xinet"}.values()
    probabilities = improvement(scores, [(series_name("xinet", g), series_name(other, g))
                                         for g in grids for other in ("small", "unpruned")])
    rows: dict[str, dict] = {}
    for name, group in groups.items():

        def mean_of(get: Callable[[RunRecord], Any]) -> float | None:
            values = [get(r) for r in group]
            return None if any(v is None for v in values) else float(np.mean(values))

        rows[name] = {**aggregates[name], "variant": group[0].variant, "grid": group[0].grid,
                      "seeds": [r.seed for r in group], "final_returns": [r.final_return for r in group],
                      "params_train": mean_of(lambda r: r.summary["params_final"]["train"]),
                      "params_deploy": mean_of(lambda r: r.summary["params_final"]["deploy"]),
                      "flops_update": mean_of(lambda r: (r.summary.get("flops_final") or {}).get("update")),
                      "steps_per_second": mean_of(lambda r: r.summary["steps_per_second"]),
                      "latency_ms": mean_of(lambda r: r.latency_ms),
                      "total_steps": mean_of(lambda r: r.summary["total_steps"])}
    front = front_rows(runs, aggregates)
    curve_data = curves(runs)
    results = {"env": env_id, "variants": rows, "front": front, "probability_of_improvement": probabilities,
               "curves": curve_data, "runs": [str(r.path) for r in runs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_curves(curve_data, out / "curves.png", env_id)
    plot_return_vs_params(rows, out / "return_vs_params.png", env_id)
    plot_front(front, "params_deploy", out / "front_params.png", env_id, "deployable parameters")
    plot_front(front, "train_flops_total", out / "front_flops.png", env_id, "training FLOPs (train_flops_total)")
    (out / "report.md").write_text(render_markdown(env_id, rows, probabilities, front))
    return results


def format_number(value: float | None, digits: int = 0) -> str:
    """``value`` with thousands separators and ``digits`` decimals; ``n/a`` for ``None``.

    :param value: the number
    :param digits: decimals
    :return: the text
    """
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _with_percent(text: str, percent: float | None) -> str:
    return text if percent is None else f"{text} ({percent:.1f}%)"


def render_markdown(env_id: str, rows: dict[str, dict], probabilities: dict[str, dict],
                    front: list[dict] | None = None) -> str:
    """``report.md``: the table of variants, the probabilities of improvement and the size and compute table.

    :param env_id: the environment id
    :param rows: the results' ``variants``
    :param probabilities: the results' ``probability_of_improvement``
    :param front: the results' ``front``
    :return: the Markdown text
    """
    lines = [f"# Comparison on {env_id}", "",
             "Final evaluation return per run (mean of the last deterministic evaluation); IQM and mean with 95% "
             "stratified-bootstrap intervals (rliable). Parameters, FLOPs, steps/s and latency are means over seeds.",
             "", "| variant | seeds | steps | IQM [95% CI] | mean [95% CI] | params train | params deploy | "
             "GFLOP/update | steps/s | latency ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        flops = None if r["flops_update"] is None else r["flops_update"] / 1e9
        lines.append(f"| {v} | {len(r['seeds'])} | {format_number(r['total_steps'])} | {r['iqm']:.1f} "
                     f"[{r['iqm_ci'][0]:.1f}, {r['iqm_ci'][1]:.1f}] | {r['mean']:.1f} [{r['mean_ci'][0]:.1f}, "
                     f"{r['mean_ci'][1]:.1f}] | {format_number(r['params_train'])} | "
                     f"{format_number(r['params_deploy'])} | {format_number(flops, 3)} | "
                     f"{format_number(r['steps_per_second'], 1)} | {format_number(r['latency_ms'], 3)} |")
    if probabilities:
        lines += ["", "| comparison | probability of improvement [95% CI] |", "|---|---|"]
        lines += [f"| P({k}) | {p['probability']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}] |"
                  for k, p in probabilities.items()]
    if front:
        lines += ["", "## Size and compute", "",
                  "One row per variant and grid point. Percentages are of the unpruned agent at width_scale 1 with the "
                  "same other grid keys, where the comparison has it; train_flops_total is the matmul FLOPs of all "
                  "gradient updates (n/a for runs that do not record it).", "",
                  "| variant | grid point | seeds | return mean [95% CI] | params deploy | params train | "
                  "train_flops_total |", "|---|---|---|---|---|---|---|"]
        for r in front:
            flops = None if r["train_flops_total"] is None else f"{r['train_flops_total']:.3e}"
            lines.append(f"| {r['variant']} | {r['grid_label'] or '-'} | {len(r['seeds'])} | {r['mean']:.1f} "
                         f"[{r['mean_ci'][0]:.1f}, {r['mean_ci'][1]:.1f}] | "
                         f"{_with_percent(format_number(r['params_deploy']), r['params_deploy_pct'])} | "
                         f"{format_number(r['params_train'])} | "
                         f"{_with_percent(flops or 'n/a', r['train_flops_total_pct'])} |")
    lines += ["", "![curves](curves.png)", "", "![return against parameters](return_vs_params.png)", ""]
    if front:
        lines += ["![return against deployable parameters](front_params.png)", "",
                  "![return against training FLOPs](front_flops.png)", ""]
    return "\n".join(lines)
