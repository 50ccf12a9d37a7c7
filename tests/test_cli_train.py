"""``xinet-train`` as a real subprocess: one short end-to-end run whose artifacts are all checked, and bad input that
must fail in one line with exit code 2 and leave no run directory behind."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from support.counts import config_widths, count_widths
from xinet_rl import XiSAC

ENV_ID = "HalfCheetah-v4"
TOTAL_STEPS = 1100  # HalfCheetah episodes are 1000 steps: one episode ends, so the training logs are dumped once
EVAL_FREQ = 500
OVERRIDES = {"learning_starts": 150, "ofenet_pretrain_steps": 10, "batch_size": 32, "eval_freq": EVAL_FREQ,
             "eval_episodes": 1, "buffer_size": 2000, "checkpoint_freq": 1000}
EVAL_COLUMNS = ["step", "event", "return_mean", "return_std", "expected_params_train", "expected_params_deploy",
                "params_train", "params_deploy", "flops_update", "flops_env_step", "update_ms", "widths",
                "train_flops_total", "prune_strength", "budget_target", "budget_expected", "budget_on",
                "budget_held"]
SET = [f"{key}={value}" for key, value in OVERRIDES.items()]
# the unpruned model of the shipped HalfCheetah config (none of the overrides changes a width): HalfCheetah's 17-d
# observation and 6-d action, widths from the config loader, counts from first principles
WIDTHS = config_widths(ENV_ID, 17, 6, SET)
INITIAL = {k: v for k, v in count_widths(WIDTHS).items() if k in ("train", "deploy")}


UMASK = 0o027  # not the usual 022, so that a file with the permissions of the umask is told from a fixed 0644


def run_train(args: list[str], cwd: Path, timeout: float = 3600, umask: int = -1) -> subprocess.CompletedProcess:
    """``xinet-train`` in a subprocess. The timeout guards against a hang only: a 1,100-step run takes about a minute,
    and more than 20 on a machine whose cores two training runs hold, which must not fail the test."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "xinet_rl.cli.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, umask=umask)


# ----- end to end ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run shared by the artifact tests: (completed process, run directory)."""
    cwd = tmp_path_factory.mktemp("train")
    out = cwd / "run"
    args = ["--env", ENV_ID, "--total-steps", str(TOTAL_STEPS), "--no-progress", "--out", str(out), "--device", "cpu",
            "--set", *SET]  # several pairs after one --set
    proc = run_train(args, cwd, umask=UMASK)
    assert proc.returncode == 0, f"xinet-train failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc, out


def read_evaluations(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (run_dir / "evaluations.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), [r for r in reader if r["event"] == "eval"]


@pytest.mark.slow  # the shared run takes about 50 s
def test_train_exits_cleanly_and_reports(run):
    proc, out = run
    assert "Traceback" not in proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"xinet-train: {ENV_ID} seed 0: final return")
    assert str(out) in last
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "evaluations.csv", "model.safetensors", "summary.json"} <= names


@pytest.mark.slow  # the shared run takes about 50 s
def test_terminal_and_working_directory_stay_clean(run):
    """No warning of any library, and nothing but the run directory in the working directory (MuJoCo writes
    MUJOCO_LOG.TXT there by default)."""
    proc, out = run
    assert proc.stderr == "", f"unexpected output on stderr:\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip().count("\n") == 0, proc.stdout  # the closing line only
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.slow  # the shared run takes about 50 s
def test_run_files_get_the_permissions_of_the_umask(run):
    _, out = run
    paths = [out, *out.rglob("*")]
    assert {p.name for p in paths} >= {"config.yaml", "summary.json", "model.safetensors", "evaluations.csv",
                                       "state.safetensors", "manifest.json"}
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~UMASK
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"


@pytest.mark.slow  # the shared run takes about 50 s
def test_config_yaml_is_resolved(run):
    _, out = run
    from dataclasses import asdict

    from xinet_rl.config import resolve_config

    config = yaml.safe_load((out / "config.yaml").read_text())
    # every key, as the config loader resolves the command line (defaults, HalfCheetah.yaml, --set, --total-steps)
    assert config == {"env": ENV_ID, "seed": 0, **asdict(resolve_config(ENV_ID, None, SET, TOTAL_STEPS))}
    assert list(config)[:2] == ["env", "seed"]
    assert config["env"] == ENV_ID
    assert config["seed"] == 0
    assert config["total_steps"] == TOTAL_STEPS
    for key, value in OVERRIDES.items():
        assert config[key] == value, key
    # the shipped HalfCheetah.yaml applies under the overrides
    assert config["ofenet_layers"] == 8 and config["ofenet_units"] == 30
    assert config["prune_strength"] == pytest.approx(0.3) and config["prune_start"] == 1000  # the defaults


@pytest.mark.slow  # the shared run takes about 50 s
def test_tensorboard_events_hold_training_and_gate_logs(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = run
    events = list(out.glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {sorted(p.name for p in out.iterdir())}"
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for tag in ["eval/mean_reward", "eval/train_flops_total", "train/critic_loss", "train/actor_loss",
                "train/aux_loss", "train/ent_coef",
                "gates/sum_keep_prob/actor", "params/expected_train"]:
        assert tag in scalars, f"scalar {tag} missing; have {sorted(scalars)}"
    histograms = [t for t in tags["histograms"] if t.startswith("gates/keep_prob/")]
    assert histograms, f"no gates/keep_prob/ histogram; have {sorted(tags['histograms'])}"
    # eval/mean_reward is logged at each periodic evaluation, at the step it ran, and at the final one
    assert [e.step for e in acc.Scalars("eval/mean_reward")] == [*range(EVAL_FREQ, TOTAL_STEPS + 1, EVAL_FREQ),
                                                                 TOTAL_STEPS]
    for e in acc.Scalars("train/critic_loss"):
        assert np.isfinite(e.value)
    assert 0 < acc.Scalars("params/expected_train")[-1].value <= INITIAL["train"]


@pytest.mark.slow  # the shared run takes about 50 s
def test_evaluations_csv_rows_at_each_eval_and_final_step(run):
    _, out = run
    header, rows = read_evaluations(out)
    assert header == EVAL_COLUMNS
    expected_steps = list(range(EVAL_FREQ, TOTAL_STEPS + 1, EVAL_FREQ))
    if expected_steps[-1] != TOTAL_STEPS:
        expected_steps.append(TOTAL_STEPS)
    # a step with a cut twice: the policy trained, then the policy the cut leaves (see test_summary_json)
    cuts = json.loads((out / "summary.json").read_text())["final_cut"]["cuts"]
    made = [c["step"] for c in cuts if c["params_deploy"] < c["params_deploy_before"]]
    assert [int(r["step"]) for r in rows] == sorted(expected_steps + made)
    for r in rows:
        assert np.isfinite(float(r["return_mean"]))
        assert float(r["return_std"]) >= 0
        assert 0 < float(r["expected_params_deploy"]) < float(r["expected_params_train"]) <= INITIAL["train"]
        assert float(r["expected_params_deploy"]) <= INITIAL["deploy"]
    # no pruning during training (see test_summary_json): the actual counts are the initial ones up to the first cut
    first_cut = [int(r["step"]) for r in rows].index(made[0]) + 1
    for r in rows[:first_cut]:
        assert {"train": int(r["params_train"]), "deploy": int(r["params_deploy"])} == INITIAL
    assert int(rows[first_cut]["params_deploy"]) < INITIAL["deploy"]
    # the training compute so far: grows from each evaluated step to the next, and the last row's is the run's total
    flops = {}
    for r in rows:  # the rows of one step (before and after a cut) agree: a cut is no update
        assert flops.setdefault(int(r["step"]), int(r["train_flops_total"])) == int(r["train_flops_total"])
    values = [flops[step] for step in sorted(flops)]
    assert all(a < b for a, b in zip(values[:-1], values[1:])), values
    flops = [int(r["train_flops_total"]) for r in rows]
    assert flops[-1] == json.loads((out / "summary.json").read_text())["train_flops_total"]
    # a gated run without a budget: the strength it was given, and no budget columns
    assert {r["prune_strength"] for r in rows} == {"0.3"}
    assert {r["budget_target"] + r["budget_expected"] + r["budget_on"] + r["budget_held"] for r in rows} == {""}


@pytest.mark.slow  # the shared run takes about 50 s
def test_summary_json(run):
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    for key in ["env", "seed", "total_steps", "final_eval_return_mean", "final_eval_return_std", "steps_per_second",
                "params_initial", "params_final", "widths_initial", "widths_final"]:
        assert key in summary, key
    assert summary["env"] == ENV_ID
    assert summary["seed"] == 0
    assert summary["total_steps"] == TOTAL_STEPS
    assert summary["steps_per_second"] > 0
    for name in ["params_initial", "params_final"]:
        counts = summary[name]
        assert set(counts) >= {"train", "deploy"}
        assert all(isinstance(counts[k], int) and not isinstance(counts[k], bool) for k in ("train", "deploy"))
    assert summary["params_initial"] == INITIAL
    assert summary["widths_initial"] == {"ofenet_state": WIDTHS["state"], "ofenet_state_action": WIDTHS["state_action"],
                                         "actor": WIDTHS["actor"], "critic1": WIDTHS["critic1"],
                                         "critic2": WIDTHS["critic2"]}
    # No pruning check comes in this run (the first one is due after prune_start updates, one update per step after
    # learning_starts), so nothing is removed while it trains but by the final cut (final_deploy_params, 10% by
    # default): at the first evaluation from final_cut_from (0.9) of the run, step 1000, where the policy is still at
    # its initial size, and at the end. Each removes the units that move the actions least as far as they allow, and
    # its policy is evaluated again
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert TOTAL_STEPS - config["learning_starts"] < config["prune_start"]
    assert config["final_deploy_params"] == 0.1 and config["final_cut_from"] == 0.9
    final_cut = summary["final_cut"]
    cuts = final_cut["cuts"]
    assert final_cut["target"] == pytest.approx(0.1 * INITIAL["deploy"])
    assert [c["step"] for c in cuts] == [1000, TOTAL_STEPS]
    assert cuts[0]["params_deploy_before"] == INITIAL["deploy"]
    assert cuts[1]["params_deploy_before"] == cuts[0]["params_deploy"]
    assert final_cut["params_deploy"] == cuts[-1]["params_deploy"] == summary["params_final"]["deploy"]
    assert summary["params_final"]["deploy"] < INITIAL["deploy"] and final_cut["return"] == cuts[-1]["return"]
    made = [c for c in cuts if c["params_deploy"] < c["params_deploy_before"]]
    assert made and summary["prune_events"] == len(made)
    with (out / "evaluations.csv").open(newline="") as handle:
        events = [(int(r["step"]), r["event"]) for r in csv.DictReader(handle)]
    assert [e for _, e in events].count("prune") == len(made)
    for cut in made:  # the policy as trained, the cut, the cut policy
        at_step = [e for step, e in events if step == cut["step"]]
        assert at_step[-3:] == ["eval", "prune", "eval"]
    _, rows = read_evaluations(out)
    last = cuts[-1]
    if last in made:
        assert last["return_before"] == float(rows[-2]["return_mean"])
        assert last["return"] == float(rows[-1]["return_mean"])
    else:
        assert last["return_before"] == last["return"] == float(rows[-1]["return_mean"])
    # the return check: each cut tried is scored on the validation episodes; every one but a kept last was refused
    for cut in cuts:
        check = cut["validation"]
        assert check["max_loss"] == config["final_cut_max_loss"] == 0.05
        assert check["episodes"] == config["eval_episodes"] and len(check["returns_cut"]) <= 4
        floor = check["return_uncut"] - 0.05 * abs(check["return_uncut"])
        kept = cut["tolerance"] is not None
        assert all(r < floor for r in check["returns_cut"][:-1 if kept else None])
        if cut in made:
            assert check["returns_cut"][-1] >= floor
            assert 0 < cut["action_change"] <= cut["tolerance"] <= config["final_cut_tolerance"]
            assert (cut["tolerance"] == config["final_cut_tolerance"]) == (len(check["returns_cut"]) == 1)
    assert summary["widths_final"]["critic1"] == summary["widths_initial"]["critic1"]  # not deployed: not cut

    assert summary["final_eval_return_mean"] == float(rows[-1]["return_mean"])
    assert summary["final_eval_return_std"] == float(rows[-1]["return_std"])
    assert summary["params_final"]["train"] == int(rows[-1]["params_train"])
    assert summary["params_final"]["deploy"] == int(rows[-1]["params_deploy"])


@pytest.mark.slow  # the shared run takes about 50 s
def test_model_loads_and_predicts(run):
    from xinet_rl.envs import make_env

    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    model = XiSAC.load(out / "model.safetensors", device="cpu")
    assert model.num_timesteps == TOTAL_STEPS
    assert model.policy.param_counts() == summary["params_final"]
    assert model.policy.widths.networks() == summary["widths_final"]
    _, rows = read_evaluations(out)  # the final row describes the saved model: its expected counts under its π
    expected = model.policy.expected_param_counts()
    assert float(rows[-1]["expected_params_train"]) == round(expected["train"], 2)
    assert float(rows[-1]["expected_params_deploy"]) == round(expected["deploy"], 2)
    assert summary["expected_params_final"] == expected
    env = make_env(ENV_ID, seed=123)
    try:
        obs, _ = env.reset(seed=123)
        action, _ = model.predict(obs, deterministic=True)
        again, _ = model.predict(obs, deterministic=True)
    finally:
        env.close()
    assert action.shape == env.action_space.shape
    assert np.all(np.isfinite(action))
    assert np.all(action >= env.action_space.low) and np.all(action <= env.action_space.high)
    np.testing.assert_array_equal(action, again)


def test_former_key_names_are_read_as_the_current_ones(tmp_path):
    from xinet_rl.config import resolve_config

    (tmp_path / "old.yaml").write_text("pi_init: 0.9\n")
    config = resolve_config(ENV_ID, str(tmp_path / "old.yaml"), ["pi_lr=0.01", "pi_update_every=2"])
    assert (config.gate_init, config.gate_lr, config.gate_update_every) == (0.9, 0.01, 2)


# ----- bad input -------------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return path.name


BAD_INPUT = [
    pytest.param(lambda d: ["--env", "HalfCheetah-v9"],
                 ["unknown environment", "HalfCheetah-v9", "HalfCheetah-v4", "HalfCheetah-v5"], id="unknown-env-version"),
    pytest.param(lambda d: ["--env", "HalfCheeta-v4"],
                 ["unknown environment", "HalfCheeta-v4", "did you mean", "HalfCheetah-v4"], id="misspelled-env"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "prune_strenght=0.1"],
                 ["unknown config key", "prune_strenght", "prune_strength"], id="unknown-set-key"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "foo"],
                 ["malformed --set", "foo", "key=value"], id="set-without-equals"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "batch_size=-5"],
                 ["batch_size", "negative", "-5"], id="negative-batch-size"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "width_scale=0"],
                 ["width_scale", "positive", "0"], id="zero-width-scale"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "gate_lr=abc"],
                 ["gate_lr", "number", "abc"], id="non-numeric-gate-lr"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "strength_scale={critics: 0.5}"],
                 ["strength_scale", "state_action", "critics", "did you mean", "critic"], id="strength-scale-typo"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "strength_scale={actor: -1}"],
                 ["strength_scale", "non-negative", "actor: -1"], id="negative-strength-scale"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set"],
                 ["--set", "expected at least one argument"], id="set-without-pairs"),
    pytest.param(lambda d: ["--env", "HalfCheetah-v3"],
                 ["HalfCheetah-v3", "registered but cannot be made here", "gymnasium-robotics", "HalfCheetah-v5"],
                 id="registered-env-needing-mujoco-py"),
    pytest.param(lambda d: ["--env", "BipedalWalker-v3"],
                 ["BipedalWalker-v3", "registered but cannot be made here", "Box2D"],
                 id="registered-env-needing-box2d"),
    pytest.param(lambda d: ["--env", "CartPole-v1"],
                 ["CartPole-v1", "needs Box observation and action spaces", "Discrete actions"], id="discrete-env"),
    pytest.param(lambda d: ["--env", ENV_ID, "--total-steps", "-3"],
                 ["--total-steps", "-3", "non-negative"], id="negative-total-steps"),
    pytest.param(lambda d: ["--env", ENV_ID, "--config", "missing.yaml"],
                 ["config file", "not found", "missing.yaml"], id="missing-config-file"),
    pytest.param(lambda d: ["--env", ENV_ID, "--config", _write(d / "broken.yaml", "a: [1, 2\n")],
                 ["broken.yaml", "not valid YAML"], id="invalid-yaml-config"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "final_cut_max_loss=5%"],
                 ["final_cut_max_loss", "a number or null", "5%"], id="max-loss-with-a-unit"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "final_cut_max_loss=2"],
                 ["final_cut_max_loss", "2"], id="max-loss-above-one"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "final_cut_from=0"],
                 ["final_cut_from", "positive"], id="cut-from-zero"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "final_cut_from=1.5"],
                 ["final_cut_from", "[0, 1]", "1.5"], id="cut-from-above-one"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "target_deploy_params=0"],
                 ["target_deploy_params", "must be positive"], id="zero-budget"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "target_deploy_params=10000000"],
                 ["target_deploy_params", "larger than the model", f"{INITIAL['deploy']} parameters"],
                 id="budget-above-the-model"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "target_deploy_params=0.1", "target_deploy_flops=0.1"],
                 ["'target_deploy_params' and 'target_deploy_flops' contradict each other"], id="two-budgets"),
    pytest.param(lambda d: ["--env", ENV_ID, "--set", "target_deploy_flops=5MFLOPs"],
                 ["target_deploy_flops", "FLOPs per action", "percentage", "5MFLOPs"], id="budget-with-a-unit"),
    pytest.param(lambda d: ["--env", ENV_ID, "--config", _write(d / "typo.yaml", "prune_strenght: 0.1\n")],
                 ["unknown config key", "prune_strenght", "prune_strength", "typo.yaml"], id="unknown-key-in-config"),
]


@pytest.mark.parametrize("make_args, words", BAD_INPUT)
def test_bad_input_fails_in_one_line_and_leaves_nothing(tmp_path, make_args, words):
    out = tmp_path / "run"
    proc = run_train(make_args(tmp_path) + ["--no-progress", "--out", str(out)], tmp_path)  # a hang guard
    assert proc.returncode == 2, f"rc {proc.returncode}, stderr:\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    message = lines[0]
    assert message.startswith("xinet-train: error: "), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert not out.exists(), "a run directory was left behind"
    # nothing else was created either (no default runs/ directory): only the config files this test wrote
    assert {p.name for p in tmp_path.iterdir()} <= {"broken.yaml", "typo.yaml"}


def test_resume_of_a_run_whose_environment_cannot_be_made_here(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("env: BipedalWalker-v3\nseed: 0\n")
    proc = run_train(["--resume", str(run), "--no-progress"], tmp_path)  # a hang guard
    assert proc.returncode == 2, proc.stderr[-4000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "registered but cannot be made here" in lines[0], proc.stderr
    assert [p.name for p in tmp_path.rglob("*")] == ["old", "config.yaml"]


# ----- the command lines -----------------------------------------------------------------------------------------------
def _parsers():
    from xinet_rl.cli import bench, compare, evaluate, export, train

    return {"xinet-train": train.build_parser(), "xinet-eval": evaluate.build_parser(),
            "xinet-export": export.build_parser(), "xinet-bench": bench.build_parser(),
            "xinet-compare": compare.build_parser()}


@pytest.mark.parametrize("prog", ["xinet-train", "xinet-eval", "xinet-export", "xinet-bench", "xinet-compare"])
def test_version_and_help_of_every_command(prog, capsys):
    from importlib.metadata import version

    parser = _parsers()[prog]
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {version('xinet-rl')}"
    text = " ".join(parser.format_help().split())
    assert "``" not in text and ":func:" not in text  # no raw reST markup in the description
    for action in parser._actions:
        if not action.option_strings:
            assert action.help, f"{prog} {action.dest}: no help"
            continue
        name = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{prog} {name}: no help text"
        default = action.default
        if default is None or default is False or default == [] or name in ("--help", "--version"):
            continue
        shown = " ".join(f"(default: {default})".split())
        assert shown in text, f"{prog} {name}: default {default!r} not shown in --help"


def test_set_takes_several_pairs_after_one_flag_and_repeated_flags():
    from xinet_rl.cli.train import build_parser

    args = build_parser().parse_args(["--set", "batch_size=64", "gamma=0.98", "--env", ENV_ID, "--set", "tau=0.01",
                                      "--no-progress"])
    assert args.overrides == ["batch_size=64", "gamma=0.98", "tau=0.01"]
    assert args.env == ENV_ID and args.no_progress


# ----- environments ----------------------------------------------------------------------------------------------------
def test_float64_observations_become_float32_without_a_warning():
    import warnings

    import gymnasium as gym

    from xinet_rl.envs import make_env
    from xinet_rl.envs.make import Float32Observation

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make_env(ENV_ID, seed=0)
        wrapped = Float32Observation(gym.wrappers.TransformObservation(
            env.unwrapped, lambda o: o, gym.spaces.Box(np.array([0.1, -np.inf, -1e300]), np.array([0.3, 2.0, 1e300]),
                                                       dtype=np.float64)))
    assert env.observation_space.dtype == np.float32 and env.reset(seed=0)[0].dtype == np.float32
    space = wrapped.observation_space
    assert space.dtype == np.float32 and space.low.dtype == np.float32 and space.high.dtype == np.float32
    assert space.low[0] <= 0.1 and space.high[0] >= 0.3  # rounded outwards: the float64 bounds stay inside
    assert space.low[1] == -np.inf and space.high[1] == 2.0 and space.low[2] == -np.inf and space.high[2] == np.inf
    env.close()


def test_known_third_party_noise_is_filtered_narrowly():
    import warnings

    from xinet_rl.cli.common import filter_known_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_known_noise()
        message = "random_state is deprecated and will be removed in a future version."
        warnings.warn_explicit(message, FutureWarning, "base.py", 1, module="arch.bootstrap.base")
        warnings.warn_explicit(message, FutureWarning, "other.py", 1, module="other")
        warnings.warn_explicit("something else", FutureWarning, "base.py", 2, module="arch.bootstrap.base")
    assert [(str(w.message), w.filename) for w in caught] == [(message, "other.py"), ("something else", "base.py")]
