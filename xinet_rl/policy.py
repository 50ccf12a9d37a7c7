"""``XiPolicy``: the gated OFENet, actor and twin critics (with targets), their optimizers and the gate state.

Everything that a saved model or a checkpoint must restore lives in this module's ``state_dict``: weights, gate
parameters ``π`` (target ones included), BN running statistics, the entropy temperature, the loss scales and the
cost normaliser ``C_0``. The architecture is the :class:`~xinet_rl.structure.Widths` it was built from.
"""

from __future__ import annotations

import copy
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
from xinet_rl.structure import ACTOR, CRITICS, OFENET_BLOCKS, Structure, Widths, build_structure, group_name, parse_name

NETWORKS = ("ofenet", "actor", "critic")


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """Trainable weights of a module, without its gate parameters (``π`` has its own optimizer)."""
    return [p for name, p in module.named_parameters() if not name.endswith(".pi") and name != "pi"]


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
        gated, pi_init = config.gated, config.pi_init
        w = self.widths
        self.ofenet = OFENet(w.obs_dim, w.act_dim, w.state, w.state_action, w.aux_dim, gated, pi_init)
        self.actor = Actor(w.z_s_dim, w.actor, w.act_dim, gated, pi_init)
        self.critic1 = Critic(w.z_sa_dim, w.critic1, gated, pi_init)
        self.critic2 = Critic(w.z_sa_dim, w.critic2, gated, pi_init)
        self.critic1_target = copy.deepcopy(self.critic1).requires_grad_(False)
        self.critic2_target = copy.deepcopy(self.critic2).requires_grad_(False)
        self.log_ent_coef = nn.Parameter(torch.tensor(float(config.ent_coef_init)).log())
        self.loss_scales = nn.ModuleDict({k: LossScale(config.loss_scale_decay) for k in NETWORKS})
        structure = self.structure()
        ones = {g: float(structure.groups[g]) * pi_init for g in structure.gated_groups} if gated else {}
        self.regularizer = CostRegularizer(config.prune_strength, config.deploy_cost_mix,
                                           float(expected_params(structure, ones)),
                                           float(expected_params(structure, ones, deploy_only=True)))
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
        """Every live gate by its group name (``state.3``, ``actor.0``, ``critic2.1``, ...)."""
        if "gates" not in self._cache:
            self._cache["gates"] = self._find_gates()
        return self._cache["gates"]

    def _find_gates(self) -> dict[str, Gate]:
        if not self.gated:
            return {}
        found: dict[str, Gate] = {}
        for block in OFENET_BLOCKS:
            for i, layer in enumerate(getattr(self.ofenet, block).layers):
                found[group_name(block, i)] = layer.gate
        for name in (ACTOR, *CRITICS):
            for i, gate in enumerate(getattr(self, name).trunk.gates):
                found[group_name(name, i)] = gate
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
        return {g: gate.pi.detach().sum() for g, gate in self.gates().items()}

    def param_counts(self) -> dict[str, int]:
        """Actual parameters of the live modules (weights, biases, BN affine; gates and targets not counted)."""
        train = sum(p.numel() for m in (self.ofenet, self.actor, self.critic1, self.critic2) for p in weights_of(m))
        deploy = sum(p.numel() for m in (self.ofenet.state, self.actor) for p in weights_of(m))
        return {"train": train, "deploy": deploy}

    def expected_param_counts(self) -> dict[str, float]:
        structure, widths = self.structure(), self.expected_widths()
        return {"train": float(expected_params(structure, widths)),
                "deploy": float(expected_params(structure, widths, deploy_only=True))}

    def flops(self, batch_size: int, gate_every: int = 1, estimator: str = "curvature") -> dict[str, int]:
        """Matmul FLOPs per gradient update (at ``batch_size``, gate step every ``gate_every`` updates) and per
        environment step (the deployable policy)."""
        structure = self.structure()
        return {"update": update_flops(structure, batch_size, self.gated, gate_every, estimator),
                "env_step": int(expected_flops(structure, {}, deploy_only=True))}

    # ----- modules by structural name (for the pruner) -------------------------------------------------------------
    def _mlp_pair(self, name: str) -> list[nn.Module]:
        if name == "actor":
            return [self.actor]
        return [getattr(self, name), getattr(self, f"{name}_target")]

    def linears(self, layer: str) -> list[nn.Linear]:
        """The linear modules of a structural layer (a critic's layer and its target copy)."""
        head, index = parse_name(layer)
        if head in OFENET_BLOCKS:
            return [getattr(self.ofenet, head).layers[int(index)].linear]
        if layer == "aux_head":
            return [self.ofenet.aux_head]
        modules = self._mlp_pair(head)
        if index.isdigit():
            return [m.trunk.linears[int(index)] for m in modules]
        return [getattr(m, index) for m in modules]

    def unit_modules(self, group: str) -> list[nn.Module]:
        """Modules that hold one entry per unit of a gated group: BN and gate (targets included)."""
        head, index = parse_name(group)
        if head in OFENET_BLOCKS:
            layer = getattr(self.ofenet, head).layers[int(index)]
            return [layer.bn] + ([layer.gate] if layer.gate is not None else [])
        return [m.trunk.gates[int(index)] for m in self._mlp_pair(head) if len(m.trunk.gates)]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        found = [self.ofenet_optimizer, self.actor_optimizer, self.critic_optimizer, self.ent_coef_optimizer,
                 self.gate_optimizer]
        return [o for o in found if o is not None]

    def drop_empty_layers(self) -> None:
        """Remove DenseNet layers left with no units (and their parameters from every optimizer)."""
        dropped: set[nn.Parameter] = set()
        for block in (self.ofenet.state, self.ofenet.state_action):
            kept = [layer for layer in block.layers if layer.linear.out_features > 0]
            for layer in block.layers:
                if layer.linear.out_features == 0:
                    dropped.update(layer.parameters())
            block.layers = nn.ModuleList(kept)
        for optimizer in self.optimizers():
            for group in optimizer.param_groups:
                group["params"] = [q for q in group["params"] if q not in dropped]
            for q in dropped:
                optimizer.state.pop(q, None)

    # ----- optimizers ----------------------------------------------------------------------------------------------
    def make_optimizers(self) -> None:
        lr, cfg = self.learning_rate, self.config
        adam = FusedAdam  # one kernel per optimizer step, CPU and CUDA
        self.ofenet_optimizer = adam(weights_of(self.ofenet), lr=cfg.ofenet_lr) if self.has_ofenet else None
        self.actor_optimizer = adam(weights_of(self.actor), lr=lr)
        self.critic_optimizer = adam(weights_of(self.critic1) + weights_of(self.critic2), lr=lr)
        self.ent_coef_optimizer = adam([self.log_ent_coef], lr=lr)
        gate_params = [g.pi for g in self.gates().values()]
        self.gate_optimizer = adam(gate_params, lr=cfg.pi_lr) if gate_params else None

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
