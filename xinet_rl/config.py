"""Configuration: the defaults, the per-environment YAML files, ``--config`` files and ``--set`` overrides.

Every key is a field of :class:`TrainConfig` with its type; anything else is a user error reported in one line with
the close matches (:class:`ConfigError`), never a traceback.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A user mistake in a configuration: the message is shown as is, and the command exits with code 2."""


class UnknownKeyError(ConfigError, TypeError):
    """A key that is not a config key. Also a ``TypeError``: for ``XiSAC(..., key=value)`` it is an unexpected keyword
    argument, which Python reports as a ``TypeError``."""


@dataclass
class AgentConfig:
    """Hyperparameters of :class:`~xinet_rl.agents.xisac.XiSAC` (OFENet paper and SAC defaults)."""

    learning_rate: float = 3e-4
    ofenet_lr: float = 3e-4
    buffer_size: int = 1_000_000
    # float32 storage; true: next observations are not stored (half the memory), but SB3 then treats a time-limit
    # truncation as a termination (no bootstrap at the episode's cut)
    optimize_memory_usage: bool = False
    learning_starts: int = 10_000
    ofenet_pretrain_steps: int = 10_000
    batch_size: int = 256
    # SB3's train_freq and gradient_steps: every train_freq environment steps (of the vectorized env: n_envs
    # transitions each) run gradient_steps updates; gradient_steps -1: as many as transitions collected
    train_freq: int = 1
    gradient_steps: int = 1
    tau: float = 0.005
    gamma: float = 0.99
    ent_coef_init: float = 1.0
    ofenet_layers: int = 8
    ofenet_units: int = 30
    actor_widths: list[int] = field(default_factory=lambda: [256, 256])
    critic_widths: list[int] = field(default_factory=lambda: [256, 256])
    width_scale: float = 1.0  # multiplies every hidden width (OFENet units, actor and critic layers), rounded, >= 1
    aux_target_dim: int = 0  # first dims of the next observation predicted by OFENet; 0 = all
    gated: bool = True
    # α: return versus size (with a budget: the controller's starting value); 0.3 and prune_start 1,000 from the
    # study of docs/method.md ("The defaults")
    prune_strength: float = 0.3
    # a budget for the deployable policy (at most one): a count (> 1), a fraction of the initial deployable cost in
    # (0, 1], or a percentage ("10%"); the strength is then adapted online so the run ends within it (xinet_rl/budget.py)
    target_deploy_params: Optional[float] = None
    target_deploy_flops: Optional[float] = None  # matmul FLOPs per action of the deployable policy
    budget_lr: float = 0.002  # step of the budget controller on log(prune_strength), per gate step
    # the end of training: the deployable policy is cut toward this size (same forms as a budget), the units that move
    # its actions least first, as far as its actions on recent states move by at most final_cut_tolerance (RMS;
    # xinet_rl/final_cut.py), and kept only if its return on validation episodes is within final_cut_max_loss of the
    # uncut policy's (else cut again, allowing half its action change; null: no check); the final evaluation is of
    # the cut policy. Values from docs/method.md ("The final cut"); final_deploy_params null: no cut
    final_deploy_params: Optional[float] = 0.1
    final_cut_tolerance: float = 0.1
    final_cut_max_loss: Optional[float] = 0.05
    # the final cut is also made at every evaluation from this share of the total steps on, while the policy is above
    # the size, and training goes on with the cut policy, which adapts before the next cut (1: at the end only)
    final_cut_from: float = 0.9
    deploy_cost_mix: float = 0.0  # β: weight of the deployable policy's own cost
    # α per network: each gate's marginal cost times the factor of its network (state, state_action, actor, critic;
    # a network not named: 1; a mapping given replaces this one whole). The cost itself and a budget's measure stay as
    # they are; only the price of the network's units changes. The critics, not deployed, at a tenth of the strength
    # and the state-action block, read only by them, at 10 times: docs/method.md ("The strength per network")
    strength_scale: dict[str, float] = field(default_factory=lambda: {"state_action": 10.0, "critic": 0.1})
    gate_lr: float = 4e-3  # with gate_update_every 4: the same gate speed per update as 1e-3 every update
    gate_init: float = 1.0
    gate_update_every: int = 4  # gate step (and its estimator passes) every 4th update: docs/method.md
    gate_estimator: str = "curvature"
    # what an OFENet unit's keep probability is credited with: "aux", the auxiliary loss alone (OFENet's gates step in
    # pre-training too), or "consumers", also the critic and actor losses of the networks that read it (METHOD.md's
    # open question; OFENet's gates then wait for the SAC phase, where every consumer can credit them)
    ofenet_gate_credit: str = "aux"
    loss_scale_decay: float = 0.99
    prune_start: int = 1_000  # gradient updates before the first pruning check
    prune_interval: int = 500  # gradient updates between pruning checks
    prune_eps: float = 0.0  # a unit is "at 0" when its π is at most this
    # consecutive checks at 0 before a unit is removed; 500 and 1 from docs/method.md ("The final cut"): a unit at 0
    # leaves the tensors within 500 updates instead of 2,000-3,000 (training FLOPs 53% -> 49% of unpruned on seed 0)
    prune_patience: int = 1
    min_units: int = 1  # an MLP hidden layer keeps at least this many units
    prune: bool = True  # false: gates and regularizer without removing units
    cuda_graph: bool = True  # on CUDA: each update is one replayed CUDA graph (xinet_rl/cuda_graph.py); false: eager


@dataclass
class TrainConfig(AgentConfig):
    """Everything ``xinet-train`` reads: the agent's keys plus the run's."""

    total_steps: int = 1_000_000
    eval_freq: int = 5_000
    eval_episodes: int = 10
    log_interval: int = 1  # episodes between TensorBoard/console dumps
    variant: str = "xinet"  # xinet | unpruned (no gates) | small (final widths of arch_from, no gates) | sac (no OFENet)
    arch_from: str = ""  # run directory or model file whose final widths the `small` variant trains from scratch
    checkpoint_freq: int = 10_000  # steps between checkpoints (0: only on SIGINT/SIGTERM/SIGHUP)
    keep_checkpoints: int = 2  # newest checkpoints kept


AGENT_KEYS = {f.name for f in fields(AgentConfig)}
_AGENT_ORDER = [f.name for f in fields(AgentConfig)]
_TYPES = {f.name: f.type for f in fields(TrainConfig)}
GATED_ONLY_KEYS = frozenset({
    "prune_strength", "target_deploy_params", "target_deploy_flops", "budget_lr", "final_deploy_params",
    "final_cut_tolerance", "final_cut_max_loss", "final_cut_from", "deploy_cost_mix", "strength_scale", "gate_lr",
    "gate_init", "gate_update_every", "gate_estimator", "ofenet_gate_credit", "loss_scale_decay", "prune_start",
    "prune_interval", "prune_eps", "prune_patience", "min_units", "prune"})
"""Keys that change nothing in a run without gates (``gated`` false: the unpruned, small and sac variants): the
gates, the regularizer, the pruner, budgets and the final cut. Runs that differ only in them trained alike."""
VARIANT_KEYS: dict[str, dict[str, Any]] = {
    "xinet": {},  # OFENet, gated units, pruning
    "unpruned": {"gated": False},  # the same networks without gates
    "small": {"gated": False},  # and at the final widths of the run that arch_from names
    "sac": {"gated": False, "ofenet_layers": 0},  # no gates and no OFENet: SAC on the raw observation
}
"""Every variant as a composition of the agent: the keys it sets. The baselines of METHOD.md section 5 share every
other key with the gated agent."""
VARIANTS = tuple(VARIANT_KEYS)
_CHOICES = {"gate_estimator": ("curvature", "straight_through"), "ofenet_gate_credit": ("aux", "consumers"),
            "variant": VARIANTS}
_UNIT_INTERVAL = {"final_cut_max_loss", "final_cut_from", "deploy_cost_mix", "gate_init", "tau", "gamma",
                  "loss_scale_decay"}
_POSITIVE = {"width_scale", "batch_size", "buffer_size", "ofenet_units", "total_steps", "eval_freq", "eval_episodes",
             "learning_rate", "ofenet_lr", "gate_lr", "gate_update_every", "ent_coef_init", "log_interval",
             "prune_interval", "prune_patience", "min_units", "keep_checkpoints", "train_freq", "budget_lr",
             "final_cut_from"}
BUDGET_KEYS = ("target_deploy_params", "target_deploy_flops")
SIZE_KEYS = (*BUDGET_KEYS, "final_deploy_params")  # keys read as a deployable size (count, fraction or percentage)
RENAMED_KEYS = {"pi_lr": "gate_lr", "pi_init": "gate_init", "pi_update_every": "gate_update_every"}
"""Former names of config keys (``π`` is SAC's policy): older run directories, model files and checkpoints use them,
so they are read everywhere as the keys they became (:func:`current_keys`)."""
_BELOW_ONE = {"prune_eps"}  # π never exceeds 1: prune_eps 1 would count every unit as at 0


def current_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every former key name (:data:`RENAMED_KEYS`) replaced by its current one, order kept. Not a
    mapping: a ``TypeError``, which readers of files report as a malformed file."""
    if not isinstance(values, dict):
        raise TypeError(f"config keys must form a mapping, got {type(values).__name__}")
    return {RENAMED_KEYS.get(key, key): value for key, value in values.items()}


def _close(word: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(word, options, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


def _coerce(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    if key in SIZE_KEYS:
        return _coerce_budget(key, value)
    if key == "train_freq" and isinstance(value, (list, tuple)) and len(value) == 2:  # SB3's (n, unit) form
        unit = getattr(value[1], "value", value[1])  # or SB3's TrainFreq, whose unit is an enum
        if unit == "step":
            value = value[0]
        elif unit == "episode":
            raise ConfigError(f"config key 'train_freq' counts environment steps; SB3's unit 'episode' is not "
                              f"supported, got {value!r}")
    if kind == "Optional[float]":  # null switches the feature off
        if value is None:
            return None
        kind = "float"
    try:
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if kind == "list[int]":
            if isinstance(value, str):
                value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
            if not isinstance(value, list) or not value:
                raise ValueError
            return [_coerce_width(v) for v in value]
        if kind == "str":
            return str(value)
        if kind == "dict[str, float]":
            return _coerce_scales(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, yaml.YAMLError):
        pass
    raise ConfigError(f"config key '{key}' expects {_describe(_TYPES[key])}, got {value!r}")


STRENGTH_SCALE_NETWORKS = ("state", "state_action", "actor", "critic")
"""The names ``strength_scale`` accepts: OFENet's two blocks, the actor, and both critics together."""


def _coerce_scales(value: Any) -> dict[str, float]:
    """``strength_scale``: a mapping (or its YAML text) from network names to non-negative finite factors."""
    if isinstance(value, str):  # YAML text, braces optional: "{critic: 0}" or "critic: 0"
        text = value.strip()
        value = yaml.safe_load(text if text.startswith("{") else "{" + text + "}")
    if value is None:  # an empty YAML value
        return {}
    if not isinstance(value, dict):
        raise ValueError
    scales = {}
    for name, factor in value.items():
        if name not in STRENGTH_SCALE_NETWORKS:
            raise ConfigError(f"config key 'strength_scale' names the networks {', '.join(STRENGTH_SCALE_NETWORKS)}, "
                              f"got {name!r}{_close(str(name), list(STRENGTH_SCALE_NETWORKS))}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                or factor < 0:
            raise ConfigError(f"config key 'strength_scale' expects a non-negative number per network, got "
                              f"{name}: {factor!r}")
        scales[name] = float(factor)
    return {name: scales[name] for name in STRENGTH_SCALE_NETWORKS if name in scales}


def _coerce_budget(key: str, value: Any) -> float | None:
    """A deployable size (a budget or the final cut's): ``None`` (none), a fraction in (0, 1], a whole count above 1,
    or a percentage string."""
    what = "FLOPs per action" if key.endswith("flops") else "parameters"
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "~")):
        return None
    number: float | None = None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            number = None
        if number is not None and not 0 < number <= 1:
            raise ConfigError(f"config key '{key}' as a percentage must lie in (0%, 100%], got {value!r}")
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise ConfigError(f"config key '{key}' expects a number of {what} (above 1), a fraction of the initial "
                          f"deployable policy's in (0, 1] or a percentage such as 10%, got {value!r}")
    if number <= 0:
        raise ConfigError(f"config key '{key}' must be positive, got {value!r}")
    if number > 1 and not number.is_integer():
        raise ConfigError(f"config key '{key}' above 1 is a number of {what} and must be whole, got {value!r}")
    return number


def _coerce_width(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v) or int(v) <= 0:
        raise ValueError
    return int(v)


def _describe(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false",
            "list[int]": "a list of positive integers", "str": "a string",
            "dict[str, float]": "a mapping such as {state_action: 10, critic: 0.5}",
            "Optional[float]": "a number or null"}.get(kind, kind)


def _check_range(key: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key == "gradient_steps":
            if value < -1:
                raise ConfigError(f"config key '{key}' must be at least 0, or -1 (one update per transition "
                                  f"collected), got {value}")
            return
        if value < 0:
            raise ConfigError(f"config key '{key}' must not be negative, got {value}")
        if key in _POSITIVE and value == 0:
            raise ConfigError(f"config key '{key}' must be positive, got {value}")
        if key in _UNIT_INTERVAL and value > 1:
            raise ConfigError(f"config key '{key}' must lie in [0, 1], got {value}")
        if key in _BELOW_ONE and value >= 1:
            raise ConfigError(f"config key '{key}' must lie in [0, 1), got {value}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(_CHOICES[key])}, got {value!r}")


def apply_overrides(config: TrainConfig, values: dict[str, Any], source: str, env_id: str | None = None) -> TrainConfig:
    """Validate ``values`` (from ``source``, named in errors) and set them on ``config``."""
    for key, value in current_keys(values).items():
        if key not in _TYPES:
            raise UnknownKeyError(f"unknown config key '{key}' in {source}{_close(str(key), sorted(_TYPES))}")
        if key == "aux_target_dim" and isinstance(value, dict):
            value = _per_version(value, env_id, source)
        setattr(config, key, checked_value(key, value))
    return config


def checked_value(key: str, value: Any) -> Any:
    """``value`` of config key ``key`` converted to the key's type and checked against its range (the message of a
    bad one names the key, the rule and the value)."""
    value = _coerce(key, value)
    _check_range(key, value)
    return value


def check_consistency(config: AgentConfig) -> None:
    """Settings that are each valid but contradict each other (:class:`ConfigError`, before anything is written)."""
    if config.buffer_size < config.batch_size:
        raise ConfigError(f"config keys 'buffer_size' ({config.buffer_size}) and 'batch_size' ({config.batch_size}) "
                          f"contradict each other: the replay buffer must hold at least one minibatch")
    budgets = [key for key in BUDGET_KEYS if getattr(config, key) is not None]
    if len(budgets) > 1:
        raise ConfigError(f"config keys '{budgets[0]}' and '{budgets[1]}' contradict each other: a run has one budget, "
                          f"in parameters or in FLOPs per action")
    if budgets and not config.gated:
        raise ConfigError(f"config key '{budgets[0]}' needs the gated agent (variant xinet, gated true): only gates "
                          f"can shrink a policy to a budget")
    if isinstance(config, TrainConfig) and config.eval_freq % config.train_freq:
        raise ConfigError(f"config keys 'eval_freq' ({config.eval_freq}) and 'train_freq' ({config.train_freq}) "
                          f"contradict each other: evaluations fall between training phases, so eval_freq must be "
                          f"a multiple of train_freq")


def agent_config(config: AgentConfig | None = None, overrides: dict[str, Any] | None = None,
                 source: str = "XiSAC's keyword arguments", check_config: bool = True) -> AgentConfig:
    """``config`` (default :class:`AgentConfig`) with ``overrides``, checked as ``--set`` values are: unknown keys
    (:class:`UnknownKeyError`), then each value (type and range), then the keys against each other, with the
    command line's messages. ``check_config=False`` checks only ``overrides`` (a configuration read back from a
    model file). A new object; ``config`` is not changed."""
    if config is None:
        config = AgentConfig()
    elif not isinstance(config, AgentConfig):
        raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
    overrides = current_keys(dict(overrides or {}))
    for key in overrides:
        if key not in AGENT_KEYS:
            raise UnknownKeyError(f"unknown config key '{key}' in {source}{_close(str(key), sorted(AGENT_KEYS))}")
    merged = replace(config, **{k: checked_value(k, v) for k, v in overrides.items()})
    if check_config:
        for key in _AGENT_ORDER:
            setattr(merged, key, checked_value(key, getattr(merged, key)))
        check_consistency(merged)
    return merged


def _per_version(mapping: dict, env_id: str | None, source: str) -> Any:
    version = (env_id or "").rsplit("-", 1)[-1]
    if version not in mapping:
        raise ConfigError(f"{source}: aux_target_dim has no entry for {version or 'this environment'}")
    return mapping[version]


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` to a mapping; values are read as YAML scalars or lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"malformed --set '{item}': expected key=value")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"malformed --set '{item}': the value is not valid YAML") from None
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of key: value")
    return data


def configs_dir() -> Path:
    return Path(str(resources.files("xinet_rl") / "configs"))


def env_config_path(env_id: str) -> Path | None:
    """The shipped per-environment file (``configs/HalfCheetah.yaml`` serves HalfCheetah-v4 and -v5)."""
    family = env_id.rsplit("-", 1)[0]
    path = configs_dir() / f"{family}.yaml"
    return path if path.is_file() else None


def resolve_config(env_id: str, config_file: str | None = None, overrides: list[str] | None = None,
                   total_steps: int | None = None) -> TrainConfig:
    """Defaults, then the environment's file, then ``--config``, then ``--set``, then ``--total-steps``."""
    config = TrainConfig()
    shipped = env_config_path(env_id)
    if shipped is not None:
        apply_overrides(config, read_yaml(shipped), str(shipped), env_id)
    if config_file is not None:
        apply_overrides(config, read_yaml(config_file), str(config_file), env_id)
    if overrides:
        apply_overrides(config, parse_set(overrides), "--set", env_id)
    if total_steps is not None:
        apply_overrides(config, {"total_steps": total_steps}, "--total-steps", env_id)
    config = apply_variant(config)
    check_consistency(config)
    return config


def apply_variant(config: TrainConfig) -> TrainConfig:
    """Set the keys of ``config.variant``'s composition (:data:`VARIANT_KEYS`): they win over the same keys from the
    files and ``--set``, so one configuration serves every variant (the run's ``config.yaml`` records the values
    used)."""
    if config.variant == "small" and not config.arch_from:
        raise ConfigError("variant 'small' needs --arch-from RUN (a pruned run directory or model file)")
    if config.variant != "small" and config.arch_from:
        raise ConfigError("--arch-from is only used by --variant small")
    for key, value in VARIANT_KEYS[config.variant].items():
        setattr(config, key, value)
    return config


def agent_kwargs(config: AgentConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k in AGENT_KEYS}
