"""``XiPolicy``: the gated OFENet, actor and twin critics (with targets), their optimizers and the gate state.

Everything that a saved model or a checkpoint must restore lives in this module's ``state_dict``: weights, gate
parameters ``π`` (target ones included), BN running statistics, the entropy temperature, the loss scales and the
cost normaliser ``C_0``. The architecture is the :class:`~xinet_rl.structure.Widths` it was built from.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from xinet_rl.budget import BudgetController
from xinet_rl.cost import CostRegularizer, LossScale, expected_flops, expected_params, update_flops
from xinet_rl.cuda_graph import GraphedAct
from xinet_rl.gates import Gate
from xinet_rl.heads import Actor, Critic
from xinet_rl.ofenet import OFENet
from xinet_rl.optim import FusedAdam
from xinet_rl.structure import CRITICS, Structure, Widths, build_structure

NETWORKS = ("ofenet", "actor", "critic")


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """Trainable weights of a module, without its gate parameters (``π`` has its own optimizer)."""
    return [p for name, p in module.named_parameters() if not name.endswith(".pi") and name != "pi"]


class XiPolicy(BasePolicy):
    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        widths: dict,
        gated: bool = True,
        pi_init: float = 1.0,
        pi_lr: float = 1e-3,
        ofenet_lr: float = 3e-4,
        prune_strength: float = 0.1,
        deploy_cost_mix: float = 0.0,
        loss_scale_decay: float = 0.99,
        ent_coef_init: float = 1.0,
        budget: dict | None = None,
        use_sde: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        self._widths = Widths.from_dict(widths)
        self._cache: dict[str, Any] = {}
        self.graphed_act: GraphedAct | None = None  # set by the agent (use_cuda_graphs)
        self.gated = gated
        self.pi_init = pi_init
        self.hparams = dict(pi_lr=pi_lr, ofenet_lr=ofenet_lr, lr=lr_schedule(1))
        w = self.widths
        self.ofenet = OFENet(w.obs_dim, w.act_dim, w.state, w.state_action, w.aux_dim, gated, pi_init)
        self.actor = Actor(w.z_s_dim, w.actor, w.act_dim, gated, pi_init)
        self.critic1 = Critic(w.z_sa_dim, w.critic1, gated, pi_init)
        self.critic2 = Critic(w.z_sa_dim, w.critic2, gated, pi_init)
        self.critic1_target = copy.deepcopy(self.critic1).requires_grad_(False)
        self.critic2_target = copy.deepcopy(self.critic2).requires_grad_(False)
        self.log_ent_coef = nn.Parameter(torch.tensor(float(ent_coef_init)).log())
        self.loss_scales = nn.ModuleDict({k: LossScale(loss_scale_decay) for k in NETWORKS})
        structure = self.structure()
        ones = {g: float(structure.groups[g]) * pi_init for g in structure.gated_groups} if gated else {}
        self.regularizer = CostRegularizer(prune_strength, deploy_cost_mix,
                                           float(expected_params(structure, ones)),
                                           float(expected_params(structure, ones, deploy_only=True)))
        # a deployable-cost budget: its controller moves the regularizer's strength (xinet_rl/budget.py)
        self.budget = BudgetController(**budget) if budget else None
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
        self._cache.clear()

    def structure(self) -> Structure:
        if "structure" not in self._cache:
            self._cache["structure"] = build_structure(self._widths)
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
        for block in ("state", "state_action"):
            for i, layer in enumerate(getattr(self.ofenet, block).layers):
                found[f"{block}.{i}"] = layer.gate
        for name, trunk in (("actor", self.actor.trunk), ("critic1", self.critic1.trunk), ("critic2", self.critic2.trunk)):
            for i, gate in enumerate(trunk.gates):
                found[f"{name}.{i}"] = gate
        return found

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

    def flops(self, batch_size: int, gate_every: int = 1) -> dict[str, int]:
        """Matmul FLOPs per gradient update (at ``batch_size``, gate step every ``gate_every`` updates) and per
        environment step (the deployable policy)."""
        structure = self.structure()
        return {"update": update_flops(structure, batch_size, self.gated, gate_every),
                "env_step": int(expected_flops(structure, {}, deploy_only=True))}

    # ----- modules by structural name (for the pruner) -------------------------------------------------------------
    def _mlp_pair(self, name: str) -> list[nn.Module]:
        if name == "actor":
            return [self.actor]
        return [getattr(self, name), getattr(self, f"{name}_target")]

    def linears(self, layer: str) -> list[nn.Linear]:
        """The linear modules of a structural layer (a critic's layer and its target copy)."""
        head, _, index = layer.partition(".")
        if head in ("state", "state_action"):
            return [getattr(self.ofenet, head).layers[int(index)].linear]
        if layer == "aux_head":
            return [self.ofenet.aux_head]
        modules = self._mlp_pair(head)
        if index.isdigit():
            return [m.trunk.linears[int(index)] for m in modules]
        return [getattr(m, index) for m in modules]

    def unit_modules(self, group: str) -> list[nn.Module]:
        """Modules that hold one entry per unit of a gated group: BN and gate (targets included)."""
        head, _, index = group.partition(".")
        if head in ("state", "state_action"):
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
        lr, hp = self.hparams["lr"], self.hparams
        adam = FusedAdam  # one kernel per optimizer step, CPU and CUDA
        ofenet_weights = weights_of(self.ofenet)
        self.ofenet_optimizer = adam(ofenet_weights, lr=hp["ofenet_lr"]) if ofenet_weights else None
        self.actor_optimizer = adam(weights_of(self.actor), lr=lr)
        self.critic_optimizer = adam(weights_of(self.critic1) + weights_of(self.critic2), lr=lr)
        self.ent_coef_optimizer = adam([self.log_ent_coef], lr=lr)
        gate_params = [g.pi for g in self.gates().values()]
        self.gate_optimizer = adam(gate_params, lr=hp["pi_lr"]) if gate_params else None

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

    def use_cuda_graphs(self, enabled: bool) -> None:
        """Act through CUDA graphs (:class:`~xinet_rl.cuda_graph.GraphedAct`) when observations are on a GPU."""
        self.graphed_act = GraphedAct(self, self._act) if enabled else None

    def forward(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self._predict(obs, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """Only this module's flag: nothing below depends on the mode except OFENet's BN, which stays on running
        statistics and is switched by its auxiliary update alone (``OFENet.aux_mode``). SB3 calls this on every
        ``predict`` and ``train``; walking the module tree each time cost about a tenth of a training step."""
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(widths=self.widths.to_dict(), gated=self.gated, pi_init=self.pi_init)
        return data
