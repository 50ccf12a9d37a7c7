"""xinet-compare on local Ray: every file, aggregates equal to rliable on the runs' returns, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

TINY = ["--total-steps", "500", "--set", "learning_starts=250", "--set", "ofenet_pretrain_steps=10",
        "--set", "batch_size=32", "--set", "buffer_size=1000", "--set", "eval_freq=250", "--set", "eval_episodes=1",
        "--set", "ofenet_layers=2", "--set", "ofenet_units=8", "--set", "actor_widths=[32,32]",
        "--set", "critic_widths=[32,32]", "--set", "prune_start=50", "--set", "prune_interval=50",
        "--set", "prune_patience=1", "--set", "prune_strength=1.0", "--set", "gate_lr=0.05",
        "--set", "gate_update_every=1"]


def compare(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    # the timeout guards against a hang only: on a loaded machine the comparison takes many minutes, and must pass
    return subprocess.run([sys.executable, "-m", "xinet_rl.cli.compare", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    proc = compare("--env", "HalfCheetah-v4", "--variants", "xinet,small", "--seeds", 2, "--workers", 2,
                   "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_compare_writes_every_file(comparison):
    for name in ("report.md", "results.json", "curves.png", "return_vs_params.png"):
        assert (comparison / name).stat().st_size > 0, name
    runs = sorted(p.name for p in (comparison / "runs").iterdir())
    assert runs == ["small_s0", "small_s1", "xinet_s0", "xinet_s1"]
    for seed in (0, 1):  # small trains the final widths of the same seed's pruned run
        source = json.loads((comparison / "runs" / f"xinet_s{seed}" / "summary.json").read_text())
        small = json.loads((comparison / "runs" / f"small_s{seed}" / "summary.json").read_text())
        assert small["widths_initial"] == source["widths_final"]
    report = (comparison / "report.md").read_text()
    assert "| xinet | 2 |" in report and "| small | 2 |" in report and "P(xinet > small)" in report


@pytest.mark.slow
def test_aggregates_equal_rliable_on_the_runs(comparison):
    results = json.loads((comparison / "results.json").read_text())
    scores = {}
    for variant in ("xinet", "small"):
        finals = [json.loads((comparison / "runs" / f"{variant}_s{s}" / "summary.json").read_text())
                  ["final_eval_return_mean"] for s in (0, 1)]
        assert results["variants"][variant]["final_returns"] == finals
        scores[variant] = np.array([[f] for f in finals])
    points, intervals = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]), reps=2000,
        random_state=np.random.RandomState(0))
    for variant in scores:
        row = results["variants"][variant]
        assert row["iqm"] == pytest.approx(points[variant][0]) and row["mean"] == pytest.approx(points[variant][1])
        assert row["iqm_ci"] == pytest.approx(list(intervals[variant][:, 0]))
        assert row["mean_ci"] == pytest.approx(list(intervals[variant][:, 1]))
    p, ci = rly.get_interval_estimates({"x": (scores["xinet"], scores["small"])}, metrics.probability_of_improvement,
                                       reps=2000, random_state=np.random.RandomState(0))
    assert results["probability_of_improvement"]["xinet > small"]["probability"] == pytest.approx(p["x"])


@pytest.mark.slow
def test_finished_runs_are_reused_and_reported_without_training(comparison, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (comparison / "runs").rglob("summary.json")}
    proc = compare("--env", "HalfCheetah-v4", "--variants", "xinet,small", "--seeds", 2, "--workers", 2,
                   "--out", comparison, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (comparison / "runs").rglob("summary.json")} == before
    report_only = tmp_path / "report"
    proc = compare("--runs", *sorted((comparison / "runs").iterdir()), "--out", report_only)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((report_only / "results.json").read_text())["variants"].keys() == {"xinet", "small"}


@pytest.mark.parametrize("args,message", [
    (["--env", "HalfCheetah-v4", "--variants", "xinet,bigger"], "unknown variant(s) bigger"),
    (["--env", "HalfCheetah-v4", "--variants", "small"], "needs the xinet runs"),
    (["--env", "HalfCheetah-v4", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
    (["--runs", "/nonexistent/run"], "is not a finished run"),
])
def test_bad_input_exit_2(tmp_path, args, message):
    proc = compare(*args, "--out", tmp_path / "out", *(TINY if "--env" in args else []))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


# --grid: the cross product, bad input, and the report from synthetic run directories (no training)

def test_grid_cross_product_names_every_run(tmp_path):
    from xinet_rl.run.compare import plan_runs
    from xinet_rl.run.grid import grid_points, parse_grids

    grids = parse_grids(["prune_strength=0.1,0.3", "actor_widths=[64,64],[128,128]"], ["batch_size=32"], None,
                        "HalfCheetah-v4")
    specs = plan_runs("HalfCheetah-v4", ["small", "xinet"], grid_points(grids), 2, tmp_path)
    names = {os.path.basename(s["run_dir"]) for s in specs}
    assert names == {f"{v}_prune_strength-{p}_actor_widths-{w}_s{s}" for v in ("xinet", "small")
                     for p in ("0.1", "0.3") for w in ("64x64", "128x128") for s in (0, 1)}
    assert len(specs) == 16 and specs[0]["variant"] == "xinet"
    for spec in specs:
        if spec["variant"] == "small":  # the xinet run of the same grid point and seed
            assert spec["after"] == spec["run_dir"].replace("/small_", "/xinet_")
            assert f"arch_from={spec['after']}" in spec["overrides"]
        grid = spec["grid"]
        assert f"prune_strength={grid['prune_strength']}" in spec["overrides"]
    # small trains the widths of its xinet run as they are: a width_scale grid scales only the xinet run
    widths = plan_runs("HalfCheetah-v4", ["xinet", "small"], grid_points(parse_grids(
        ["width_scale=0.25,0.5"], [], None, "HalfCheetah-v4")), 1, tmp_path)
    assert [os.path.basename(s["run_dir"]) for s in widths] == [
        "xinet_width_scale-0.25_s0", "xinet_width_scale-0.5_s0",
        "small_width_scale-0.25_s0", "small_width_scale-0.5_s0"]
    assert [s["overrides"][-1] for s in widths] == ["variant=xinet", "variant=xinet", "width_scale=1", "width_scale=1"]
    assert sum(o.startswith("width_scale=") for o in widths[2]["overrides"]) == 1
    # without --grid the names are those of earlier versions, so their finished runs are reused
    plain = plan_runs("HalfCheetah-v4", ["xinet", "unpruned"], grid_points(parse_grids([], [], None, "x")), 2,
                      tmp_path)
    assert {os.path.basename(s["run_dir"]) for s in plain} == {"xinet_s0", "xinet_s1", "unpruned_s0", "unpruned_s1"}


def test_a_mapping_grid_value_names_its_runs():
    """``strength_scale`` takes a mapping: its values split at the top-level commas, are checked, and name the run."""
    from xinet_rl.run.grid import grid_points, parse_grids, run_name

    grids = parse_grids(["strength_scale={critic: 0, state_action: 30},{actor: 0.5}"], [], None, "HalfCheetah-v4")
    points = grid_points(grids)
    assert [p for p, _ in points] == [{"strength_scale": {"state_action": 30.0, "critic": 0.0}},
                                      {"strength_scale": {"actor": 0.5}}]
    assert [run_name("xinet", p, 1) for p, _ in points] == ["xinet_strength_scale-state_action_30.0+critic_0.0_s1",
                                                            "xinet_strength_scale-actor_0.5_s1"]


def test_a_budget_grid_is_the_gated_agents(tmp_path):
    """xinet runs at every budget; small runs train each budgeted xinet run's widths without the budget; the
    unpruned agent, which has no gates, once per seed."""
    from xinet_rl.run.compare import plan_runs
    from xinet_rl.run.grid import grid_points, parse_grids

    out = tmp_path
    grids = parse_grids(["target_deploy_params=0.05,10%"], ["gamma=0.98"], None, "HalfCheetah-v4")
    specs = plan_runs("HalfCheetah-v4", ["unpruned", "small", "xinet"], grid_points(grids), 2, out,
                      overrides=["gamma=0.98"])
    names = [os.path.basename(s["run_dir"]) for s in specs]
    assert names == [f"xinet_target_deploy_params-{b}_s{s}" for b in ("0.05", "0.1") for s in (0, 1)] + [
        "unpruned_s0", "unpruned_s1"] + [f"small_target_deploy_params-{b}_s{s}" for b in ("0.05", "0.1") for s in (0, 1)]
    for spec in specs:
        budgets = [o for o in spec["overrides"] if o.startswith("target_deploy")]
        assert budgets == ([f"target_deploy_params={spec['grid']['target_deploy_params']}".replace("0.1", "10%")]
                           if spec["variant"] == "xinet" else [])
        if spec["variant"] == "small":
            assert spec["after"] == spec["run_dir"].replace("/small_", "/xinet_")
    # a budget given with --set is the gated agent's too
    fixed = plan_runs("HalfCheetah-v4", ["xinet", "unpruned"], grid_points([]), 1, out,
                      overrides=["target_deploy_params=0.1"])
    assert [s["overrides"] for s in fixed] == [["target_deploy_params=0.1", "variant=xinet"], ["variant=unpruned"]]


def test_a_variant_composition_wins_over_the_comparisons_keys(tmp_path):
    """``--set``/``--grid`` keys apply to every variant except where its composition sets them (``sac``: no OFENet,
    no gates), so ``--set ofenet_layers=2`` shrinks OFENet for the OFENet variants and the plain SAC run stays one per
    seed. In a single run, too, the variant's keys win (``config.yaml`` records the values used)."""
    from xinet_rl.config import resolve_config
    from xinet_rl.run.compare import plan_runs
    from xinet_rl.run.grid import grid_points, parse_grids

    grids = parse_grids(["ofenet_layers=2,4"], ["gated=true"], None, "HalfCheetah-v4")
    specs = plan_runs("HalfCheetah-v4", ["xinet", "sac"], grid_points(grids), 1, tmp_path, overrides=["gated=true"])
    assert [os.path.basename(s["run_dir"]) for s in specs] == [
        "xinet_ofenet_layers-2_s0", "xinet_ofenet_layers-4_s0", "sac_s0"]
    for spec in specs:
        config = resolve_config("HalfCheetah-v4", None, spec["overrides"])
        assert (config.gated, config.ofenet_layers) == ((True, spec["grid"]["ofenet_layers"])
                                                        if spec["variant"] == "xinet" else (False, 0))
    config = resolve_config("HalfCheetah-v4", None, ["variant=sac", "gated=true", "ofenet_layers=4"])
    assert (config.gated, config.ofenet_layers) == (False, 0)


@pytest.mark.parametrize("args,message", [
    (["--grid", "gamma_typo=0.9,0.99"], "unknown config key 'gamma_typo' in --grid"),
    (["--grid", "gamma=0.9,abc"], "config key 'gamma' expects a number"),
    (["--grid", "gamma=0.9,1.5"], "config key 'gamma' must lie in [0, 1]"),
    (["--grid", "gamma"], "malformed --grid 'gamma'"),
    (["--grid", "gamma=0.9,,0.99"], "malformed --grid"),
    (["--grid", "batch_size=16,64"], "--grid batch_size conflicts with --set batch_size"),
    (["--grid", "total_steps=100,200"], "--grid total_steps conflicts with --total-steps"),
    (["--grid", "tau=0.01,0.010"], "--grid tau repeats the value 0.01"),
    (["--grid", "gamma=0.9", "--grid", "gamma=0.99"], "--grid gamma is given twice"),
    (["--grid", "variant=xinet,sac"], "xinet-compare sets variant itself"),
])
def test_bad_grid_exit_2_before_anything_is_written(tmp_path, args, message):
    proc = compare("--env", "HalfCheetah-v4", "--variants", "xinet,small", *args, "--out", tmp_path / "out", *TINY)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_grid_with_runs_is_refused(tmp_path):
    proc = compare("--runs", tmp_path, "--grid", "gamma=0.9,0.99", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "--grid trains runs" in proc.stderr and "Traceback" not in proc.stderr


def fake_run(root, name, variant, seed, final, deploy, train, flops=None, grid_file=None, **config):
    """A finished run's files with known numbers (no model file: the report shows its latency as n/a)."""
    path = root / name
    path.mkdir(parents=True)
    summary = {"env": "HalfCheetah-v4", "seed": seed, "variant": variant, "total_steps": 1000,
               "final_eval_return_mean": final, "steps_per_second": 100.0, "flops_final": None,
               "params_final": {"deploy": deploy, "train": train}}
    if flops is not None:
        summary["train_flops_total"] = flops
    (path / "summary.json").write_text(json.dumps(summary))
    settings = {"env": "HalfCheetah-v4", "seed": seed, "variant": variant, "batch_size": 256,
                "arch_from": f"/somewhere/xinet_s{seed}" if variant == "small" else "", **config}
    (path / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    (path / "evaluations.csv").write_text(f"step,event,return_mean\n500,eval,{final / 2}\n600,prune,\n"
                                          f"1000,eval,{final}\n")
    if grid_file is not None:
        (path / "grid_point.json").write_text(json.dumps(grid_file))
    return path


@pytest.mark.slow
def test_front_from_run_directories_one_row_per_grid_point(tmp_path):
    runs = tmp_path / "runs"
    finals = {0.25: [100.0, 120.0, 140.0], 0.5: [200.0, 260.0, 230.0], 1.0: [300.0, 330.0, 360.0]}
    deploy = {0.25: 1000, 0.5: 3000, 1.0: 10000}
    dirs = []
    for scale, returns in finals.items():  # the width sweep of unpruned: older runs, grid read from config.yaml
        for seed, final in enumerate(returns):
            flops = None if scale == 0.5 and seed == 2 else int(4e12 * scale)  # one older run lacks it
            dirs.append(fake_run(runs, f"u{scale}_{seed}", "unpruned", seed, final, deploy[scale] + seed,
                                 2 * deploy[scale], flops, width_scale=scale, checkpoint_freq=10_000))
    for seed, final in enumerate([250.0, 290.0]):  # xinet with a recorded grid point: config noise is not a grid
        dirs.append(fake_run(runs, f"x_{seed}", "xinet", seed, final, 2000, 40000, int(3e12), {"width_scale": 1.0},
                             width_scale=1.0, checkpoint_freq=5000 * (seed + 1)))
    out = tmp_path / "report"
    proc = compare("--runs", *dirs, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("front_params.png", "front_flops.png", "curves.png", "return_vs_params.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    front = {(r["variant"], r["grid_label"]): r for r in results["front"]}
    assert list(front) == [("xinet", "width_scale=1.0"), ("unpruned", "width_scale=0.25"),
                           ("unpruned", "width_scale=0.5"), ("unpruned", "width_scale=1.0")]
    for scale, returns in finals.items():
        row = front[("unpruned", f"width_scale={scale}")]
        assert row["seeds"] == [0, 1, 2] and row["final_returns"] == returns
        assert row["mean"] == pytest.approx(np.mean(returns))
        assert min(returns) <= row["mean_ci"][0] <= row["mean"] <= row["mean_ci"][1] <= max(returns)
        assert row["params_deploy"] == pytest.approx(deploy[scale] + 1)
        assert row["params_train"] == pytest.approx(2 * deploy[scale])
        assert row["params_deploy_pct"] == pytest.approx(100 * (deploy[scale] + 1) / 10001)
    assert front[("unpruned", "width_scale=0.5")]["train_flops_total"] is None  # not every seed records it
    assert front[("unpruned", "width_scale=0.5")]["train_flops_total_pct"] is None
    assert front[("unpruned", "width_scale=0.25")]["train_flops_total_pct"] == pytest.approx(25.0)
    xinet = front[("xinet", "width_scale=1.0")]
    assert xinet["mean"] == pytest.approx(270.0) and xinet["train_flops_total"] == pytest.approx(3e12)
    assert xinet["reference"] == "unpruned (width_scale=1.0)"
    assert xinet["params_deploy_pct"] == pytest.approx(100 * 2000 / 10001)
    report = (out / "report.md").read_text()
    assert "| unpruned | width_scale=0.25 | 3 | 120.0 [" in report
    assert "| 1,001 (10.0%) | 2,000 | 1.000e+12 (25.0%) |" in report
    assert "| unpruned | width_scale=0.5 | 3 | 230.0 [" in report and "| n/a |" in report
    assert "| xinet | width_scale=1.0 | 2 | 270.0 [" in report
    assert "P(xinet (width_scale=1.0) > unpruned (width_scale=1.0))" in report


def test_front_without_train_flops_total(tmp_path):
    dirs = [fake_run(tmp_path / "runs", f"u{s}", "unpruned", s, 10.0 * (s + 1), 500, 900) for s in range(2)]
    out = tmp_path / "report"
    proc = compare("--runs", *dirs, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    [row] = results["front"]
    assert row["grid"] == {} and row["train_flops_total"] is None and row["mean"] == pytest.approx(15.0)
    assert (out / "front_flops.png").stat().st_size > 0
    assert "| unpruned | - | 2 | 15.0 [" in (out / "report.md").read_text()


def test_runs_without_gates_differing_in_the_gates_keys_are_one_series(tmp_path):
    """Unpruned runs made under different defaults of the gates' keys trained alike: one series (the pruned agents'
    runs that differ in a gate key stay apart), while a key that changes an ungated run still makes a grid point."""
    from xinet_rl.config import GATED_ONLY_KEYS, TrainConfig
    from xinet_rl.report.runs import assign_grid_points, read_run

    assert GATED_ONLY_KEYS <= set(vars(TrainConfig()))
    runs = [read_run(fake_run(tmp_path, f"u{seed}", "unpruned", seed, 100.0, 1000, 2000, gated=False,
                              prune_strength=0.1 if seed < 2 else 0.3, prune_interval=1000 if seed < 2 else 500))
            for seed in range(3)]
    runs += [read_run(fake_run(tmp_path, f"w{seed}", "unpruned", seed, 50.0, 100, 200, gated=False,
                               width_scale=0.25, prune_strength=0.1)) for seed in range(2)]
    runs += [read_run(fake_run(tmp_path, f"x{strength}", "xinet", 0, 90.0, 100, 200, gated=True,
                               prune_strength=strength)) for strength in (0.3, 0.6)]
    assign_grid_points(runs)
    assert [r.name for r in runs] == ["unpruned (width_scale=1.0)"] * 3 + ["unpruned (width_scale=0.25)"] * 2 + [
        "xinet (prune_strength=0.3)", "xinet (prune_strength=0.6)"]
