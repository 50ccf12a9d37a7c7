"""``XiSAC``: Soft Actor-Critic on gated OFENet features, with gates trained under the cost-aware regularizer.

Built on stable-baselines3's off-policy base, so ``learn``, ``predict``, callbacks, VecEnv and ``evaluate_policy``
behave as in SB3. This module is the glue and the schedule: :meth:`XiSAC.train` decides which update takes a gate step,
runs OFENet's pre-training once, runs each update (eagerly or as a CUDA graph), guards against non-finite values and
calls the pruner. The update's tensor work is :class:`~xinet_rl.update.GatedSACUpdate`; what goes into model files
and checkpoints (:meth:`XiSAC.save_checkpoint`: everything needed to continue a run exactly) is
:mod:`xinet_rl.agents.persistence`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecEnv

from xinet_rl.agents.persistence import (checkpoint_contents, model_path, read_model, restore_checkpoint,
                                         same_but_float_dtype, space_from_json, space_to_json)
from xinet_rl.budget import Budget, deploy_cost, fit_keep, guard_keep, resolve_budget
from xinet_rl.checkpoint import read_checkpoint, write_checkpoint
from xinet_rl.config import (AgentConfig, ConfigError, UnknownKeyError, agent_config, agent_kwargs,
                             current_keys)
from xinet_rl.cost import pretrain_flops, update_flops
from xinet_rl.cuda_graph import GraphedAct, GraphedUpdate
from xinet_rl.final_cut import checked_cut, final_cut_target
from xinet_rl.guards import TrainingError
from xinet_rl.io import ModelFileError, _versions, write_model_file
from xinet_rl.policy import XiPolicy
from xinet_rl.pruning import prune, units_to_keep, update_counters, with_min_units
from xinet_rl.replay import TensorReplayBuffer
from xinet_rl.structure import Widths, build_structure, network_of
from xinet_rl.update import LOSS_DESCRIPTIONS, GatedSACUpdate


_NOT_GIVEN: Any = object()  # ``env`` left out: the short form ``XiSAC(env, ...)``

# SAC's keyword arguments that XiSAC has no use for, and why (anything else unknown gets the config key check)
_SB3_ONLY = {
    "policy_kwargs": "the networks are set by ofenet_layers, ofenet_units, actor_widths and critic_widths",
    "ent_coef": "the entropy temperature is always learned, starting from ent_coef_init",
    "target_entropy": "the target entropy is -dim(A)",
    "target_update_interval": "the target critics follow every update (tau)",
    "use_sde": "gSDE is not supported", "sde_sample_freq": "gSDE is not supported",
    "use_sde_at_warmup": "gSDE is not supported",
    "action_noise": "exploration comes from the stochastic policy alone",
    "replay_buffer_class": "XiSAC uses its own replay buffer", "replay_buffer_kwargs": "XiSAC uses its own replay buffer",
    "n_steps": "n-step returns are not supported",
}


def initial_widths(cfg: AgentConfig, observation_space: spaces.Box, action_space: spaces.Box) -> Widths:
    """The unpruned model's widths for these spaces: the config's OFENet, actor and critic sizes times
    ``width_scale``."""
    obs_dim = int(np.prod(observation_space.shape))
    act_dim = int(np.prod(action_space.shape))
    if cfg.aux_target_dim > obs_dim:
        raise ConfigError(f"aux_target_dim {cfg.aux_target_dim} exceeds the observation size {obs_dim}")
    block = [cfg.ofenet_units] * cfg.ofenet_layers
    aux_dim = (cfg.aux_target_dim or obs_dim) if cfg.ofenet_layers > 0 else 0  # no OFENet: no auxiliary task
    return Widths(obs_dim, act_dim, aux_dim, list(block), list(block), list(cfg.actor_widths),
                  list(cfg.critic_widths), list(cfg.critic_widths)).scaled(cfg.width_scale)


def check_budget(cfg: AgentConfig, observation_space: spaces.Box, action_space: spaces.Box) -> Budget | None:
    """The config's budget resolved for a model on these spaces (:class:`ConfigError` for one the model cannot
    meet): what :class:`XiSAC` checks when it is built, for callers that check before writing anything."""
    if not cfg.gated:
        return None
    return resolve_budget(cfg, build_structure(initial_widths(cfg, observation_space, action_space)), cfg.min_units)


def _is_policy(candidate: Any) -> bool:
    return isinstance(candidate, type) or (isinstance(candidate, str) and candidate.endswith("Policy"))


def _constructor_form(policy: Any, env: Any, config: Any) -> tuple[Any, Any]:
    """``(env, config)`` from SB3's form ``(policy, env, ...)`` or the short form ``(env, config, ...)``."""
    if policy is None:  # XiSAC(env=...)
        return (None if env is _NOT_GIVEN else env), config
    if _is_policy(policy) or (env is not _NOT_GIVEN and env is not None and not isinstance(env, AgentConfig)):
        if policy not in XiSAC.policy_aliases and policy is not XiPolicy:
            name = policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__)
            raise ValueError(f"XiSAC has one policy, 'MlpPolicy' (alias 'XiPolicy': its gated OFENet, actor and "
                             f"critics on Box observations), got {name!r}")
        return (None if env is _NOT_GIVEN else env), config
    # the short form: the first argument is the environment, a second one (if any) the config
    if isinstance(env, AgentConfig):
        if config is not None:
            raise TypeError("XiSAC got two configs (the second positional argument and config=)")
        config = env
    return policy, config


def _env_id(env: VecEnv | None) -> str | None:
    """The gymnasium id of the (first) environment, where it has one."""
    if env is None:
        return None
    try:
        spec = env.envs[0].spec if hasattr(env, "envs") else env.get_attr("spec", indices=[0])[0]
    except Exception:  # noqa: BLE001 - an environment without a spec, or one that cannot send it
        return None
    return getattr(spec, "id", None)


class XiSAC(OffPolicyAlgorithm):
    """SAC with a gated OFENet feature extractor and gated actor/critics that learn their own size.

    Built like stable-baselines3's ``SAC``: ``XiSAC("MlpPolicy", env, batch_size=128)`` (SB3's form; ``"MlpPolicy"``
    and ``"XiPolicy"`` name the one policy) or ``XiSAC(env, config, batch_size=128)``.

    :param policy: ``"MlpPolicy"`` (or :class:`~xinet_rl.policy.XiPolicy`) followed by ``env``; or, in the short
        form, the environment itself.
    :param env: a gymnasium environment with Box observation (any float dtype, cast to float32 at the policy's
        input) and Box action spaces, an environment id, a VecEnv of any number of environments (``DummyVecEnv``,
        ``SubprocVecEnv``, ``make_vec_env``), or ``None`` when loading.
    :param config: an :class:`~xinet_rl.config.AgentConfig`; keyword arguments override single fields of it. Every
        value is checked as ``xinet-train --set`` checks it, with the same messages (:class:`~xinet_rl.config
        .ConfigError`, a ``ValueError``; an unknown keyword is an :class:`~xinet_rl.config.UnknownKeyError`, also a
        ``TypeError``). ``train_freq`` and ``gradient_steps`` are SB3's (``train_freq=(4, "step")`` is accepted).
    :param seed: seed of the networks' initialisation, the masks, the replay sampling, the actions and the
        environments (SB3's).
    :param device: ``"cpu"``, ``"cuda"``, a ``torch.device`` or ``"auto"`` (SB3's: CUDA when there is one).
    :param verbose: SB3's: 0 silent, 1 training information, 2 debug.
    :param tensorboard_log: SB3's: the TensorBoard directory, or ``None``.
    :param stats_window_size: SB3's: episodes averaged for the rollout statistics.
    :param widths: the networks' widths (:class:`~xinet_rl.structure.Widths`), for a pruned model or the ``small``
        variant; default: the widths the config gives for the environment.
    :param _init_setup_model: SB3's: build the networks now (``False`` while loading).
    :param _stored_config: the config was read back from a model file: taken as it is, not checked again.
    :param overrides: config keys, each overriding the field of ``config``.
    """

    policy_aliases = {"MlpPolicy": XiPolicy, "XiPolicy": XiPolicy}
    policy: XiPolicy

    def __init__(self, policy: str | type[XiPolicy] | GymEnv | None = None, env: Any = _NOT_GIVEN,
                 config: AgentConfig | None = None, *, seed: int | None = None, device: torch.device | str = "auto",
                 verbose: int = 0, tensorboard_log: str | None = None, stats_window_size: int = 100,
                 widths: Widths | None = None, _init_setup_model: bool = True, _stored_config: bool = False,
                 **overrides: Any) -> None:
        env, config = _constructor_form(policy, env, config)
        for key in overrides:
            if key in _SB3_ONLY:
                raise UnknownKeyError(f"XiSAC does not take SAC's keyword argument '{key}': {_SB3_ONLY[key]}")
        # the command line's checks and messages; a configuration read back from a model file is taken as it is
        self.config = agent_config(config, overrides, check_config=not _stored_config)
        cfg = self.config
        super().__init__(XiPolicy, env, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
                         learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
                         train_freq=cfg.train_freq, gradient_steps=cfg.gradient_steps, seed=seed, device=device,
                         verbose=verbose, tensorboard_log=tensorboard_log, stats_window_size=stats_window_size,
                         sde_support=False, support_multi_env=True,  # action space: checked below, a ValueError
                         replay_buffer_class=TensorReplayBuffer, optimize_memory_usage=cfg.optimize_memory_usage,
                         # SB3 cannot tell truncation from termination when next observations are not stored
                         replay_buffer_kwargs={"handle_timeout_termination": not cfg.optimize_memory_usage})
        if self.env is None and _init_setup_model:
            raise ValueError("XiSAC needs an environment to build its networks (a model is loaded with XiSAC.load)")
        if self.env is not None and not (isinstance(self.observation_space, spaces.Box)
                                         and isinstance(self.action_space, spaces.Box)):
            raise ValueError(f"XiSAC needs Box observation and action spaces (continuous control), got "
                             f"{self.observation_space} and {self.action_space}")
        self._widths = widths
        self.prune_events: list[dict[str, Any]] = []
        self.train_flops = 0  # matmul FLOPs of every gradient update run so far (pre-training and gate steps included)
        self._flops_per_update: tuple[int, int, int] | None = None  # (structure version, with gate step, without)
        self.update_seconds: float | None = None
        self.graphed: GraphedUpdate | None = None  # made on the first CUDA update (see _graphed_update)
        self._pretrained = False  # host copy of "policy.pretrain_done reached ofenet_pretrain_steps" (set by train)
        self.env_id: str | None = _env_id(self.env)
        if _init_setup_model:
            self._setup_model()

    # ----- construction --------------------------------------------------------------------------------------------
    def initial_widths(self) -> Widths:
        return initial_widths(self.config, self.observation_space, self.action_space)

    def _setup_model(self) -> None:
        cfg = self.config
        widths = self._widths or self.initial_widths()
        # a budget is a cost of the initial (unpruned) model: resolved from the config, whatever the current widths
        self.budget: Budget | None = check_budget(cfg, self.observation_space, self.action_space)
        # the final cut's size, likewise of the initial model (parameters); only a pruning run cuts
        self.final_cut: float | None = (
            final_cut_target(cfg, build_structure(initial_widths(cfg, self.observation_space, self.action_space)))
            if cfg.gated and cfg.prune else None)
        self.final_cut_change: float | None = None  # the action change the final cut made (xinet_rl/final_cut.py)
        self.final_cut_tolerance: float | None = None  # the tolerance of the cut made (None: every cut refused)
        self.policy_kwargs = dict(widths=widths.to_dict(), config=cfg, budget=self.budget)
        super()._setup_model()
        # acting through CUDA graphs when observations are on a GPU: the policy is handed the graphed act function
        graphs = self.device.type == "cuda" and cfg.cuda_graph
        self.policy.graphed_act = GraphedAct(self.policy, self.policy._act) if graphs else None
        seed = 0 if self.seed is None else int(self.seed) + 7919
        self.updater = GatedSACUpdate(self.policy, cfg, seed, self.device)
        self.updater.replay_buffer = self.replay_buffer  # and again by each train call (SB3 may replace it)

    # ----- training ------------------------------------------------------------------------------------------------
    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        cfg = self.config
        self.policy.set_training_mode(True)
        self.updater.replay_buffer, self.updater.vec_normalize_env = self.replay_buffer, self._vec_normalize_env
        if not self._pretrained and not self._pretrain(batch_size):  # once, before any SAC update
            return  # a stop cut the pre-training short: the rest of this call is the resumed run's first work
        values = None
        for _ in range(gradient_steps):
            gate_step = cfg.gated and self._n_updates % cfg.gate_update_every == 0
            graphed = self._graphed_update(batch_size)
            if graphed is None:
                started = time.perf_counter()
                losses = self.updater.step(batch_size, gate_step)
                values = self._check_finite(dict(zip(losses, torch.stack(list(losses.values())).tolist())))
                self._note_update_time(time.perf_counter() - started)
            else:
                values = self._graphed_step(graphed, gate_step) or values
            self.train_flops += self._update_flops(batch_size)[0 if gate_step else 1]
            self._n_updates += 1
            if (cfg.gated and cfg.prune and self._n_updates >= cfg.prune_start
                    and self._n_updates % cfg.prune_interval == 0):
                self.prune_check()

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for name, value in (values or {}).items():
            self.logger.record(f"train/{name}", value)

    def _pretrain(self, batch_size: int) -> bool:
        """OFENet's pre-training updates (auxiliary step and, gated, its gate step) still due, graphed on a GPU.
        Returns whether they are all done: a stop (:attr:`stop_requested`) ends them early, so that a signal is
        answered within an update instead of after minutes of pre-training, and the counter in the policy tells a
        resumed run how many are left."""
        p, cfg = self.policy, self.config
        due = max(cfg.ofenet_pretrain_steps - int(p.pretrain_done), 0) if p.has_ofenet else 0
        graphed = self._graphed_update(batch_size) if due > 0 else None
        hook, stop = self.pretrain_hook, self.stop_requested
        done = 0
        while done < due:
            if graphed is None:
                self.updater.pretrain_step(batch_size)
            else:
                graphed.step("pretrain")
            done += 1
            if hook is not None:
                hook(done, due)
            if stop is not None and done < due and stop():
                break
        if done:
            self.train_flops += done * pretrain_flops(p.structure(), batch_size, self.updater.pretrain_gates,
                                                      cfg.gate_estimator)
        finished = done == due
        if finished and due > 0 and p.budget is not None:  # the state block's multiplier is done; the budget's
            p.regularizer.log_strength.fill_(math.log(cfg.prune_strength))  # starts at prune_strength
        if graphed is not None:  # the losses of all of them are checked once, at the end
            values, went_bad, _ = graphed.read()
            if "aux_loss" in went_bad or not math.isfinite(values["aux_loss"]):
                raise TrainingError(f"non-finite {LOSS_DESCRIPTIONS['aux_loss']} in OFENet's pre-training (its last "
                                    f"{done} updates)")
        self._pretrained = finished
        return finished

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's collection, after the rest of a train call whose pre-training a stop cut short (a resumed run's
        first work, so that it continues exactly where the uninterrupted run would have been)."""
        if not self._pretrained and self.num_timesteps > self.learning_starts and not (
                self.stop_requested is not None and self.stop_requested()):
            if self.policy.has_ofenet and int(self.policy.pretrain_done) < self.config.ofenet_pretrain_steps:
                steps = self.gradient_steps if self.gradient_steps >= 0 else self.train_freq.frequency * self.n_envs
                self.train(gradient_steps=steps, batch_size=self.batch_size)
            else:  # a run resumed after its pre-training: one host read of the counter, then the host flag
                self._pretrained = True
        return super().collect_rollouts(*args, **kwargs)

    pretrain_hook: Callable[[int, int], None] | None = None
    """Where set, called as ``hook(done, due)`` after each of the ``due`` pre-training updates of OFENet (the progress
    bar, :class:`~xinet_rl.callbacks.ProgressBar`, sets it for the length of ``learn``)."""

    stop_requested: Callable[[], bool] | None = None
    """Where set, asked after each of OFENet's pre-training updates whether to stop them (the checkpoints' signal
    handling, :class:`~xinet_rl.callbacks.Checkpoints`, sets it for the length of ``learn``)."""

    check_every = 100
    """Updates between reads of the losses of a CUDA-graphed update (and between finiteness checks of the gate
    parameters): a read waits for the GPU. A non-finite loss at any update is still reported, at the next read."""

    def _graphed_step(self, graphed: GraphedUpdate, gate_step: bool) -> dict[str, float] | None:
        """Replay one graphed update. Every :attr:`check_every` updates, read (and check) the losses; the updates
        just before the read, one whole gate cycle of them, are timed on the GPU (the host only launches a graph, so
        its clock would time the launch)."""
        cycle = min(self.config.gate_update_every, self.check_every)
        phase = self._n_updates % self.check_every
        graphed.step(gate_step, timed=phase >= self.check_every - cycle)
        if phase != 0:
            return None
        values, went_bad, seconds = graphed.read()  # waits for the GPU
        if seconds is not None:
            self._note_update_time(seconds)
        return self._check_finite(values, went_bad)

    def _graphed_update(self, batch_size: int) -> GraphedUpdate | None:
        """The CUDA-graphed update in use, or ``None`` for the eager one (CPU, ``cuda_graph=False``, or
        ``VecNormalize``, whose numpy normalisation of sampled batches cannot be captured)."""
        if self.device.type != "cuda" or not self.config.cuda_graph or self._vec_normalize_env is not None:
            return None
        if self.graphed is None or self.graphed.batch_size != batch_size:
            self.graphed = GraphedUpdate(self.updater, batch_size)
        return self.graphed

    def _check_finite(self, values: dict[str, float], went_bad: list[str] | None = None) -> dict[str, float]:
        """Stop with a diagnosis on a non-finite loss (or one in ``went_bad``: non-finite at some update since the
        last read of a graphed update) or, every :attr:`check_every` updates, gate parameter. Returns ``values``."""
        bad = [name for name, value in values.items() if not math.isfinite(value) or name in (went_bad or [])]
        if bad:
            since = "" if went_bad is None else f", or at an update since update {self._n_updates - self.check_every}"
            raise TrainingError(f"non-finite {', '.join(LOSS_DESCRIPTIONS.get(name, name) for name in bad)} at step "
                                f"{self.num_timesteps} (gradient update {self._n_updates}{since})")
        if self.config.gated and self._n_updates % self.check_every == 0:
            for group, gate in self.policy.gates().items():
                if not bool(torch.isfinite(gate.keep_prob).all()):
                    raise TrainingError(f"non-finite gate parameter in layer {group} at step {self.num_timesteps}")
        return values

    def _note_update_time(self, seconds: float) -> None:
        """Moving average of the wall time of one gradient update (reported after each pruning event)."""
        self.update_seconds = seconds if self.update_seconds is None else 0.98 * self.update_seconds + 0.02 * seconds

    def budget_state(self) -> dict[str, float]:
        """The strength ``α`` and, with a budget, the budget and the deployable cost in its unit: ``target``,
        ``expected`` (under the current ``π``), ``on`` (of the units with ``π`` above ``prune_eps``: the policy that
        ``xinet-export`` writes), ``held`` (the part of ``on`` that only the budget's floor holds on) and ``model``
        (of the tensors as pruned so far). Empty for an ungated model."""
        p = self.policy
        if not p.gated:
            return {}
        state = {"prune_strength": p.regularizer.strength}
        if p.budget is not None:
            structure, gates = p.structure(), p.gates()
            on = float(p.budget.on_cost(structure, gates))
            state.update(target=float(p.budget.target),
                         expected=float(p.budget.expected_cost(structure, gates)), on=on,
                         held=on - float(p.budget.on_cost(structure, gates, free=True)),
                         model=float(deploy_cost(structure, {}, p.budget.kind)))
        return state

    def flops(self) -> dict[str, int]:
        """Matmul FLOPs per gradient update (averaged over the gate-step schedule) and per environment step."""
        cfg = self.config
        return self.policy.flops(self.batch_size, cfg.gate_update_every, cfg.gate_estimator, cfg.ofenet_gate_credit)

    def _update_flops(self, batch_size: int) -> tuple[int, int]:
        """Matmul FLOPs of one update with and without the gate step at the current widths (recomputed when the
        structure's version changes: a pruning event)."""
        structure = self.policy.structure()
        if self._flops_per_update is None or self._flops_per_update[0] != structure.version:
            self._flops_per_update = (structure.version,
                                      update_flops(structure, batch_size, self.config.gated,
                                                   estimator=self.config.gate_estimator,
                                                   ofenet_credit=self.config.ofenet_gate_credit),
                                      update_flops(structure, batch_size, gated=False))
        return self._flops_per_update[1], self._flops_per_update[2]

    def prune_check(self) -> dict[str, int]:
        """One pruning check: count checks at 0, remove units due, and record the event (TensorBoard and
        :attr:`prune_events`). Returns the units removed per group."""
        cfg, p = self.config, self.policy
        gates = p.gates()
        update_counters(gates, cfg.prune_eps)
        keep = units_to_keep(gates, cfg.prune_patience, cfg.min_units)
        if p.budget is not None:  # never below the budget: units at 0 it does not need to lose may come back
            keep = guard_keep(keep, gates, p.structure(), p.budget.kind, float(p.budget.target))
        removed = prune(p, keep)
        if removed:
            self._record_prune_event(removed)
        return removed

    def cut_off_units(self, observations: torch.Tensor | None = None,
                      accept: Callable[[dict[str, torch.Tensor]], bool] | None = None) -> dict[str, int]:
        """Remove every unit that is off (``π <= prune_eps``) now, without the patience or a budget's guard, and
        record the event: the end of a budgeted run or of one with a final cut, whose model then is the policy it
        deploys (a unit at 0 contributes nothing, so only the float rounding of the sums changes). Where the units on
        still exceed the budget, those with the lowest ``π`` go too, until the policy fits (:func:`fit_keep`); then
        the final cut (``final_deploy_params``, :mod:`xinet_rl.final_cut`) as far as the actions on ``observations``
        allow (default: :meth:`recent_observations`; without any, no final cut) and ``accept`` agrees. Returns the
        units removed per group.

        :param observations: states on which the final cut's action change is measured
        :param accept: given a final cut's masks (units kept per group), whether that cut may be made; a refused cut
            is followed by one allowed half its action change (:func:`~xinet_rl.final_cut.checked_cut`)
        """
        cfg, p = self.config, self.policy
        on = {g: gate.keep_prob.detach() > cfg.prune_eps for g, gate in p.gates().items()}
        keep = with_min_units(on, p.gates(), cfg.min_units)  # an MLP layer keeps min_units units, as pruning does
        if p.budget is not None:
            keep = fit_keep(keep, p.gates(), p.structure(), p.budget.kind, float(p.budget.target), cfg.min_units)
        if self.final_cut is not None:
            states = self.recent_observations() if observations is None else observations
            if states is not None:
                keep, self.final_cut_change, self.final_cut_tolerance = checked_cut(
                    keep, p.gates(), p.structure(), self.final_cut, lambda o: p._act(o, True), states,
                    cfg.final_cut_tolerance, cfg.min_units, accept)
        removed = prune(p, keep)
        if removed:
            self._record_prune_event(removed)
        return removed

    def recent_observations(self, count: int = 1024) -> torch.Tensor | None:
        """The latest ``count`` observations of the replay buffer (normalised as the policy sees them), on the
        policy's device; ``None`` when it holds none."""
        buffer = self.replay_buffer
        if buffer is None or buffer.size() == 0:
            return None
        stored = buffer.buffer_size if buffer.full else buffer.pos
        rows = (buffer.pos - 1 - np.arange(min(count, stored))) % buffer.buffer_size
        observations = buffer.observations[rows].reshape(-1, *buffer.obs_shape)
        if self._vec_normalize_env is not None:
            observations = self._vec_normalize_env.normalize_obs(observations)
        return torch.as_tensor(observations, dtype=torch.float32, device=self.device).flatten(1)

    def _record_prune_event(self, removed: dict[str, int]) -> None:
        p = self.policy
        event = {"step": int(self.num_timesteps), "n_updates": int(self._n_updates), "removed": removed,
                 "params": p.param_counts(), "flops": self.flops(),
                 "update_ms_before": None if self.update_seconds is None else round(1000 * self.update_seconds, 3),
                 "widths": p.widths.networks()}
        self.update_seconds = None  # measure the pruned model afresh
        self.prune_events.append(event)
        for kind, value in event["params"].items():
            self.logger.record(f"prune/params_{kind}", value)
        for kind, value in event["flops"].items():
            self.logger.record(f"prune/flops_per_{kind}", value)
        self.logger.record("prune/units_removed", sum(removed.values()))
        if event["update_ms_before"] is not None:
            self.logger.record("prune/update_ms_before", event["update_ms_before"])
        self._record_widths()
        self.logger.dump(self.num_timesteps)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """SB3's set-up of ``learn``, then every layer's width to the logger at the starting step (pruning events
        write them again), so that each layer has a curve from the start, one removed early too."""
        result = super()._setup_learn(*args, **kwargs)
        self._record_widths()
        self.logger.dump(self.num_timesteps)
        return result

    def _record_widths(self) -> None:
        """``widths/NETWORK/i`` of every layer; where a DenseNet layer has been removed, the indices past the last
        remaining layer are written as 0 (``i`` counts the layers that remain)."""
        logged = self.__dict__.setdefault("_widths_logged", {})  # layers per network written so far
        for network, widths in self.policy.widths.networks().items():
            logged[network] = max(logged.get(network, 0), len(widths))
            for i in range(logged[network]):
                self.logger.record(f"widths/{network}/{i}", widths[i] if i < len(widths) else 0)

    def dump_logs(self) -> None:
        """SB3's console/TensorBoard dump, plus the gates: sum of ``π`` per network, expected parameter count and a
        histogram of ``π`` per layer."""
        p = self.policy
        if p.gated:
            sums: dict[str, float] = {}
            for group, gate in p.gates().items():
                network = network_of(group)
                sums[network] = sums.get(network, 0.0) + float(gate.keep_prob.detach().sum())
                self.logger.record(f"gates/keep_prob/{group}", gate.keep_prob.detach().cpu().clone(),
                                   exclude=("stdout", "log", "json", "csv"))
            for network, total in sums.items():
                self.logger.record(f"gates/sum_keep_prob/{network}", total)
            for name, value in self.budget_state().items():
                self.logger.record(f"budget/{name}", value)
        for kind, value in p.expected_param_counts().items():
            self.logger.record(f"params/expected_{kind}", value)
        for kind, value in p.param_counts().items():
            self.logger.record(f"params/{kind}", value)
        if self.update_seconds is not None:
            self.logger.record("time/update_ms", 1000 * self.update_seconds)
        super().dump_logs()

    # ----- saving --------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, exclude: Any = None, include: Any = None) -> None:
        """Weights to safetensors, metadata (config, widths, spaces, versions) to JSON in the same file's header.

        Paths follow SB3's habits: a path without a suffix gets ``.zip`` (``save("best_model")``, as SB3's
        ``EvalCallback`` calls it, writes ``best_model.zip``), any other suffix is kept (``model.safetensors``,
        ``rl_model_1000_steps.zip``). Whatever the name, the file is a safetensors file, never a zip archive and never
        a pickle; :meth:`load` finds it under either name. It holds the policy's weights, not the optimizers' states
        (those are in checkpoints, :meth:`save_checkpoint`, and in :meth:`get_parameters`). ``exclude`` and
        ``include`` (SB3's, for pickled attributes) have nothing to select here."""
        write_model_file(model_path(path, for_writing=True), self.policy.state_dict(), self.metadata())

    def metadata(self) -> dict[str, Any]:
        return {"algorithm": "XiSAC", "env_id": self.env_id, "config": agent_kwargs(self.config),
                "widths": self.policy.widths.to_dict(),
                "observation_space": space_to_json(self.observation_space),
                "action_space": space_to_json(self.action_space), "num_timesteps": int(self.num_timesteps),
                "n_updates": int(self._n_updates), "train_flops": int(self.train_flops)}

    @classmethod
    def load(cls, path: str | Path, env: GymEnv | None = None, device: torch.device | str = "auto",
             custom_objects: dict[str, Any] | None = None, print_system_info: bool = False, force_reset: bool = True,
             **kwargs: Any) -> "XiSAC":
        """Rebuild a saved model from its widths and load its weights. Never unpickles anything.

        ``path`` as SB3 takes it: ``best_model`` finds ``best_model.zip`` and the reverse (see :meth:`save`); a run
        directory finds its ``model.safetensors``. ``env`` may have any number of environments; keyword arguments
        override config keys (checked as :class:`XiSAC`'s). ``custom_objects`` (SB3's, for unpickling) has nothing
        to replace here; ``print_system_info`` prints the versions the file was written with and the current ones;
        ``force_reset`` as in SB3's ``set_env``."""
        path = model_path(path)
        state, meta = read_model(path)
        if print_system_info:
            print(f"== saved with ==\n{json.dumps(meta.get('versions', {}), indent=1)}\n== current ==\n"
                  f"{json.dumps(_versions(), indent=1)}")
        model = cls._from_metadata(meta, path, env, device, force_reset=force_reset, **kwargs)
        try:
            model.policy.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{path}: weights do not match the stored widths ({str(exc).splitlines()[0]})") from None
        return model

    @classmethod
    def _from_metadata(cls, meta: dict[str, Any], path: str | Path, env: GymEnv | None,
                       device: torch.device | str, force_reset: bool = True, **kwargs: Any) -> "XiSAC":
        try:
            config = AgentConfig(**current_keys(meta["config"]))
            widths = Widths.from_dict(meta["widths"])
            obs_space = space_from_json(meta["observation_space"])
            act_space = space_from_json(meta["action_space"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: not an XiSAC model file (metadata: {exc})") from None
        model = cls(env=None, config=config, device=device, widths=widths, _init_setup_model=False,
                    _stored_config=True, **kwargs)
        model.observation_space, model.action_space = obs_space, act_space
        if env is not None:
            env = model._wrap_env(maybe_make_env(env, model.verbose), model.verbose)
            if same_but_float_dtype(env.observation_space, obs_space):  # float64 gym.make env, float32 model
                model.observation_space = env.observation_space
        model.n_envs = 1 if env is None else env.num_envs
        model._setup_model()
        if env is not None:
            model.set_env(env, force_reset=force_reset)
        model.num_timesteps = int(meta.get("num_timesteps", 0))
        model._n_updates = int(meta.get("n_updates", 0))
        model.train_flops = int(meta.get("train_flops", 0))
        model.env_id = meta.get("env_id")
        return model

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset=force_reset)
        self.env_id = _env_id(self.env) or self.env_id

    # ----- parameters (SB3's get_parameters / set_parameters) -------------------------------------------------------
    _OPTIMIZERS = ("ofenet_optimizer", "actor_optimizer", "critic_optimizer", "ent_coef_optimizer", "gate_optimizer")

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        """The policy and each of its optimizers, by the names :meth:`get_parameters` gives their state dicts:
        ``policy``, ``policy.actor_optimizer``, ``policy.critic_optimizer``, ``policy.ent_coef_optimizer`` and, where
        the model has them, ``policy.ofenet_optimizer`` and ``policy.gate_optimizer``."""
        names = ["policy"] + [f"policy.{name}" for name in self._OPTIMIZERS
                              if getattr(self.policy, name, None) is not None]
        return names, []

    def set_parameters(self, load_path_or_dict: str | Path | dict[str, dict], exact_match: bool = True,
                       device: torch.device | str = "auto") -> None:
        """SB3's: state dicts by name (as :meth:`get_parameters` returns them; ``exact_match`` wants every name),
        or a model file (as :meth:`load` finds it), whose policy weights are loaded (``exact_match``: every
        tensor; a model file holds no optimizer states, so the optimizers keep theirs). The widths must be the
        model's: a pruned model's parameters go into a model of the same widths (:meth:`load` builds one)."""
        if isinstance(load_path_or_dict, dict):
            try:
                super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)
            except RuntimeError as exc:
                raise ValueError(f"the parameters do not fit this model ({str(exc).splitlines()[0][:200]})") from None
        else:
            path = model_path(load_path_or_dict)
            state, _ = read_model(path)
            try:
                self.policy.load_state_dict(state, strict=exact_match)
            except RuntimeError as exc:
                raise ModelFileError(f"{path}: the weights do not fit this model "
                                     f"({str(exc).splitlines()[0][:200]})") from None
        self.graphed = None  # captured CUDA graphs hold the old optimizer state tensors: capture again

    # ----- checkpoints ---------------------------------------------------------------------------------------------
    def save_checkpoint(self, run_dir: str | Path, keep: int, extra: dict[str, Any] | None = None) -> Path:
        """Everything needed to continue this run exactly: model, optimizers, replay buffer, counters, every RNG and
        the environment's state (:func:`~xinet_rl.agents.persistence.checkpoint_contents`). Call it between
        environment steps (after the update of the last step)."""
        tensors, replay, env_arrays, meta = checkpoint_contents(self, self.metadata(), extra)
        return write_checkpoint(Path(run_dir), int(self.num_timesteps), tensors, replay, env_arrays, meta, keep)

    @classmethod
    def from_checkpoint(cls, path: str | Path, env: GymEnv, device: torch.device | str = "auto",
                        **kwargs: Any) -> tuple["XiSAC", dict[str, Any]]:
        """Rebuild a run from a checkpoint directory; returns the model and the checkpoint's metadata."""
        tensors, replay, env_arrays, meta = read_checkpoint(Path(path))
        model = cls._from_metadata(meta, path, env, device, **kwargs)
        restore_checkpoint(model, path, tensors, replay, env_arrays, meta)
        return model, meta


__all__ = ["XiSAC", "check_budget", "initial_widths", "model_path"]  # model_path: where it was
