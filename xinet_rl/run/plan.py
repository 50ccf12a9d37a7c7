"""A training request checked before anything is written: the configuration resolved, the environment, the source
run of a ``small`` variant and a budget validated, and the run directory chosen (new and empty, or one to resume from
its newest valid checkpoint). Bad input is an error here, so it leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xinet_rl.agents.xisac import check_budget
from xinet_rl.config import BUDGET_KEYS, TrainConfig, resolve_config
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.run.errors import UsageError
from xinet_rl.run.paths import arch_networks, default_run_dir
from xinet_rl.run.resume import load_run_config, newest_valid_checkpoint


@dataclass
class TrainingPlan:
    """A checked training request, ready for :func:`xinet_rl.run.trainer.run_training`.

    :param env_id: the environment id
    :param config: the resolved configuration
    :param seed: the run's seed
    :param run_dir: the run directory
    :param resume_from: the checkpoint to continue from (``None``: a new run)
    :param created: whether the run directory did not exist yet (it is removed again where training fails before
        it holds anything worth keeping)
    """

    env_id: str
    config: TrainConfig
    seed: int
    run_dir: Path
    resume_from: Path | None = None
    created: bool = False


def plan_new_run(env_id: str, seed: int = 0, config_file: str | None = None, overrides: list[str] | None = None,
                 total_steps: int | None = None, variant: str | None = None, arch_from: str | None = None,
                 out: str | Path | None = None) -> TrainingPlan:
    """A new run, checked. Config keys apply in this order: the defaults, the environment's shipped YAML,
    ``config_file``, ``overrides``, ``variant`` and ``arch_from``, ``total_steps``.

    :param env_id: gymnasium id of a continuous-control environment
    :param seed: random seed of the agent and environments
    :param config_file: YAML file of config keys
    :param overrides: ``KEY=VALUE`` pairs (YAML values)
    :param total_steps: environment steps (overrides ``total_steps``)
    :param variant: the variant (overrides the config's)
    :param arch_from: pruned run directory or model file whose final widths a ``small`` run trains
    :param out: the run directory, new or empty (default: ``runs/ENV_sSEED_TIME``)
    :return: the plan
    """
    check_env_id(env_id)
    overrides = list(overrides or [])
    if variant:
        overrides.append(f"variant={variant}")
    if arch_from:
        overrides.append(f"arch_from={arch_from}")
    config = resolve_config(env_id, config_file, overrides, total_steps)
    if config.variant == "small":
        arch_networks(config.arch_from)  # a missing or foreign source run is a user error, before anything is written
    if any(getattr(config, key) is not None for key in BUDGET_KEYS):  # a budget the model cannot meet, too
        probe = make_env(env_id, seed=seed)
        try:
            check_budget(config, probe.observation_space, probe.action_space)
        finally:
            probe.close()
    run_dir = Path(out) if out else default_run_dir(env_id, seed)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"run directory {run_dir} already exists and is not empty (resume it with --resume)")
    return TrainingPlan(env_id, config, seed, run_dir, None, created=not run_dir.exists())


def plan_resume(run_dir: Path, total_steps: int | None = None) -> TrainingPlan:
    """An existing run, to be continued from its newest valid checkpoint to ``total_steps`` (or its recorded total).

    :param run_dir: the run directory
    :param total_steps: the new total, recorded in the run's ``config.yaml`` when it trains
    :return: the plan
    """
    if not run_dir.is_dir():
        raise UsageError(f"run directory not found: {run_dir}")
    env_id, seed, config = load_run_config(run_dir, total_steps)
    check_env_id(env_id)
    checkpoint = newest_valid_checkpoint(run_dir)
    return TrainingPlan(env_id, config, seed, run_dir, checkpoint, created=False)
