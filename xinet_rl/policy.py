"""``XiPolicy``: the gated OFENet, actor and twin critics (with targets), their optimizers and the gate state.

Everything that a saved model or a checkpoint must restore lives in this module's ``state_dict``: weights, the
gates' keep probabilities ``π`` (``keep_prob``, target ones included), BN running statistics, the entropy
temperature, the loss scales and the cost normaliser ``C_0``. The architecture is the
:class:`~xinet_rl.structure.Widths` it was built from, through its :class:`~xinet_rl.structure.Structure`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from xinet_rl.budget import Budget, BudgetController
from xinet_rl.config import AgentConfig
from xinet_rl.cost import CostRegularizer, LossScale, expected_flops, expected_params, update_flops
from xinet_rl.gates import Gate
from xinet_rl.heads import Actor, Critic
from xinet_rl.ofenet import OFENet
from xinet_rl.optim import FusedAdam
from xinet_rl.structure import (ACTOR, AUX_HEAD, CRITICS, OFENET_BLOCKS, Structure, Widths, build_structure,
                                parse_name)

NETWORKS = ("ofenet", "actor", "critic")


@dataclass(frozen=True)
class LayerModules:
    """What one structural layer is in the networks: its linear maps (a critic's layer and its target copy's) and
    the modules that hold one entry per output unit (BN and gates, the target copies' included; none for a head).
    ``gate`` is the online gate of a gated layer."""

    linears: tuple[nn.Linear, ...]
    unit_modules: tuple[nn.Module, ...]
    gate: Gate | None


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """Trainable weights of a module, without its gates' keep probabilities (they have their own optimizer)."""
    return [p for name, p in module.named_parameters() if not name.endswith(".keep_prob") and name != "keep_prob"]


class XiPolicy(BasePolicy):
    """All of XiSAC's networks and their training state: the gated OFENet, actor, two critics and their targets, the
    temperature, the loss scales, the cost regularizer, a budget's controller and one optimizer per network.

    :param observation_space: a Box space (observations are computed as float32 rows).
    :param action_space: a Box space.
    :param lr_schedule: SB3's learning-rate schedule; its value at the start is the actor's, critics' and
        temperature's learning rate.
    :param widths: every layer's width (:class:`~xinet_rl.structure.Widths` as a dict): the networks are built at
        these widths, pruned or not.
    :param config: the agent's configuration, the one place the hyperparameters are read from (gated or not, the
        gates' initial value and learning rate, OFENet's learning rate, the strength and cost mix, the loss-scale
        decay, the initial temperature, the budget controller's step); default ``AgentConfig()``.
    :param budget: the resolved deployable-cost budget (:func:`~xinet_rl.budget.resolve_budget`), or ``None``.
    :param use_sde: SB3's; gSDE is not supported (ignored).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        widths: dict,
        config: AgentConfig | None = None,
        budget: Budget | None = None,
        use_sde: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self.config = config = AgentConfig() if config is None else config
        self._widths = Widths.from_dict(widths)
        self.structure_version = 0  # bumped by each change of the widths (pruning): what caches key on
        self._cache: dict[str, Any] = {}
        # a faster act function on a GPU (the agent hands it :class:`~xinet_rl.cuda_graph.GraphedAct`)
        self.graphed_act: Callable[[Tensor, bool], Tensor] | None = None
        self.learning_rate = lr_schedule(1)
        gated, gate_init = config.gated, config.gate_init
        structure = self.structure()  # the networks are built from it: every layer's input width is derived there
        self.ofenet = OFENet.from_structure(structure, gated, gate_init)
        self.actor = Actor.from_structure(structure, gated, gate_init)
        self.critic1 = Critic.from_structure(structure, CRITICS[0], gated, gate_init)
        self.critic2 = Critic.from_structure(structure, CRITICS[1], gated, gate_init)
        self.critic1_target = copy.deepcopy(self.critic1).requires_grad_(False)
        self.critic2_target = copy.deepcopy(self.critic2).requires_grad_(False)
        self.log_ent_coef = nn.Parameter(torch.tensor(float(config.ent_coef_init)).log())
        self.loss_scales = nn.ModuleDict({k: LossScale(config.loss_scale_decay) for k in NETWORKS})
        ones = {g: float(structure.groups[g]) * gate_init for g in structure.gated_groups} if gated else {}
        self.regularizer = CostRegularizer(config.prune_strength, config.deploy_cost_mix,
                                           float(expected_params(structure, ones)),
                                           float(expected_params(structure, ones, deploy_only=True)),
                                           config.strength_scale)
        # a deployable-cost budget: its controller moves the regularizer's strength (xinet_rl/budget.py)
        self.budget = None if budget is None else BudgetController(budget.kind, budget.target, config.budget_lr,
                                                                    config.prune_eps, budget.state_target)
        self.register_buffer("pretrain_done", torch.tensor(0, dtype=torch.long))
        self.make_optimizers()

    # ----- architecture --------------------------------------------------------------------------------------------
    @property
    def widths(self) -> Widths:
        return self._widths

    @widths.setter
    def widths(self, value: Widths) -> None:
        """Set after pruning: the structure and the gate lookup are derived from the widths, so they are rebuilt."""
        self._widths = value
        self.structure_version += 1
        self._cache.clear()

    def structure(self) -> Structure:
        if "structure" not in self._cache:
            self._cache["structure"] = build_structure(self._widths, self.structure_version)
        return self._cache["structure"]

    def gates(self) -> dict[str, Gate]:
        """Every live gate by its group name (``state.3``, ``actor.0``, ``critic2.1``, ...); the target critics'
        copies are not listed (they follow the online gates' values only through pruning)."""
        if "gates" not in self._cache:
            self._cache["gates"] = {layer.out: modules.gate for layer in self.structure().layers
                                    if (modules := self.layer_modules(layer.name)).gate is not None}
        return self._cache["gates"]

    def layer_modules(self, name: str) -> LayerModules:
        """The modules of structural layer ``name``: its linear maps and its per-unit modules (what surgery
        slices). Derived once per structure version by pairing the structure's layers with the networks' modules,
        each checked against the structure's widths."""
        if "layer_modules" not in self._cache:
            self._cache["layer_modules"] = self._pair_layers_with_modules()
        return self._cache["layer_modules"][name]

    def _pair_layers_with_modules(self) -> dict[str, LayerModules]:
        structure, found = self.structure(), {}
        for block in OFENET_BLOCKS:
            layers = getattr(self.ofenet, block).layers
            for spec, layer in zip(structure.hidden_layers(block), layers, strict=True):
                gates = (layer.gate,) if layer.gate is not None else ()
                found[spec.name] = LayerModules((layer.linear,), (layer.bn, *gates), gates[0] if gates else None)
        if self.ofenet.aux_head is not None:
            found[AUX_HEAD] = LayerModules((self.ofenet.aux_head,), (), None)
        for name in (ACTOR, *CRITICS):
            copies = [getattr(self, name)] + ([] if name == ACTOR else [getattr(self, f"{name}_target")])
            for i, spec in enumerate(structure.hidden_layers(name)):
                gates = tuple(m.trunk.gates[i] for m in copies if len(m.trunk.gates))
                found[spec.name] = LayerModules(tuple(m.trunk.linears[i] for m in copies), gates,
                                                gates[0] if gates else None)
            for spec in structure.heads(name):
                head = parse_name(spec.name)[1]  # "mu", "log_std", "out": the module's attribute
                found[spec.name] = LayerModules(tuple(getattr(m, head) for m in copies), (), None)
        for spec in structure.layers:  # the modules as the structure says, or the pairing is wrong
            for linear in found[spec.name].linears:
                if (linear.out_features, linear.in_features) != (spec.out_dim, structure.in_dim(spec.name)):
                    raise RuntimeError(f"layer {spec.name}: the module is {linear.out_features} x "
                                       f"{linear.in_features}, the structure says {spec.out_dim} x "
                                       f"{structure.in_dim(spec.name)}")
        return found

    @property
    def gated(self) -> bool:
        """Whether the hidden units carry gates: the config's ``gated``, the one place it is decided."""
        return self.config.gated

    @property
    def has_ofenet(self) -> bool:
        """Whether the model is composed with an OFENet (``ofenet_layers`` > 0, so an auxiliary head to train; a
        pruned OFENet without DenseNet layers keeps its head)."""
        return self.widths.aux_dim > 0

    def polyak_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """``(targets, online)``: the target critics' tensors and the online ones they follow, in matching order
        (kept until the next pruning: listing them walks the module tree, about 70 µs per update on the CPU)."""
        if "polyak" not in self._cache:
            self._cache["polyak"] = ([*self.critic1_target.parameters(), *self.critic2_target.parameters()],
                                     [*self.critic1.parameters(), *self.critic2.parameters()])
        return self._cache["polyak"]

    def expected_widths(self) -> dict[str, Tensor]:
        return {g: gate.keep_prob.detach().sum() for g, gate in self.gates().items()}

    def param_counts(self) -> dict[str, int]:
        """Actual parameters of the live modules (weights, biases, BN affine; gates and targets not counted)."""
        train = sum(p.numel() for m in (self.ofenet, self.actor, self.critic1, self.critic2) for p in weights_of(m))
        deploy = sum(p.numel() for m in (self.ofenet.state, self.actor) for p in weights_of(m))
        return {"train": train, "deploy": deploy}

    def expected_param_counts(self) -> dict[str, float]:
        structure, widths = self.structure(), self.expected_widths()
        return {"train": float(expected_params(structure, widths)),
                "deploy": float(expected_params(structure, widths, deploy_only=True))}

    def flops(self, batch_size: int, gate_every: int = 1, estimator: str = "curvature",
              ofenet_credit: str = "aux") -> dict[str, int]:
        """Matmul FLOPs per gradient update (at ``batch_size``, gate step every ``gate_every`` updates) and per
        environment step (the deployable policy)."""
        structure = self.structure()
        return {"update": update_flops(structure, batch_size, self.gated, gate_every, estimator, ofenet_credit),
                "env_step": int(expected_flops(structure, {}, deploy_only=True))}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        found = [self.ofenet_optimizer, self.actor_optimizer, self.critic_optimizer, self.ent_coef_optimizer,
                 self.gate_optimizer]
        return [o for o in found if o is not None]

    # ----- optimizers ----------------------------------------------------------------------------------------------
    def make_optimizers(self) -> None:
        lr, cfg = self.learning_rate, self.config
        adam = FusedAdam  # one kernel per optimizer step, CPU and CUDA
        self.ofenet_optimizer = adam(weights_of(self.ofenet), lr=cfg.ofenet_lr) if self.has_ofenet else None
        self.actor_optimizer = adam(weights_of(self.actor), lr=lr)
        self.critic_optimizer = adam(weights_of(self.critic1) + weights_of(self.critic2), lr=lr)
        self.ent_coef_optimizer = adam([self.log_ent_coef], lr=lr)
        gate_params = [g.keep_prob for g in self.gates().values()]
        self.gate_optimizer = adam(gate_params, lr=cfg.gate_lr) if gate_params else None

    # ----- acting --------------------------------------------------------------------------------------------------
    def _predict(self, observation: Tensor, deterministic: bool = False) -> Tensor:
        # as SB3's policies preprocess a Box observation: any dtype computed as float32 (float64 from gym.make),
        # one row per observation (both no-ops, no copy, for float32 rows)
        observation = observation.float().flatten(1)
        if self.graphed_act is not None and observation.is_cuda and not torch.is_grad_enabled():
            return self.graphed_act(observation, deterministic)
        return self._act(observation, deterministic)

    def _act(self, observation: Tensor, deterministic: bool) -> Tensor:
        z_s = self.ofenet.z_s(observation)
        if deterministic:
            return self.actor.deterministic(z_s)
        return self.actor.act(z_s)

    def forward(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self._predict(obs, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """Only this module's flag: nothing below depends on the mode except OFENet's BN, which stays on running
        statistics and is switched by its auxiliary update alone (``OFENet.aux_mode``). SB3 calls this on every
        ``predict`` and ``train``; walking the module tree each time cost about a tenth of a training step."""
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(widths=self.widths.to_dict(), config=self.config)
        return data
