"""The gradient update of :class:`~xinet_rl.agents.xisac.XiSAC`, readable top to bottom in one place.

:meth:`GatedSACUpdate.step` is one update: OFENet's auxiliary step (:meth:`~GatedSACUpdate.ofenet_step`), the SAC
step (critics, actor, temperature, targets: :meth:`~GatedSACUpdate.sac_step`) and, every ``gate_update_every``
updates, the gate step (:meth:`~GatedSACUpdate.apply_gate_step`: each network's loss part of the ``π`` gradient from
its estimator, plus ``α ∂C/∂π``, one projected Adam step, then the budget's floor and controller).
:meth:`~GatedSACUpdate.pretrain_step` is one of OFENet's pre-training updates. Both are tensor work only, with no host
read, so that :class:`~xinet_rl.cuda_graph.GraphedUpdate` can capture them. The agent keeps the schedule (which update
takes a gate step, when to prune), the guards and the logging.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from torch import Tensor

from xinet_rl.config import AgentConfig
from xinet_rl.gates import MaskRandomness, MaskTape, curvature_corrected, flip_difference, straight_through
from xinet_rl.policy import XiPolicy
from xinet_rl.replay import TensorReplayBuffer
from xinet_rl.structure import OFENET_BLOCKS, STATE, network_of

LOSS_NAMES = ("aux_loss", "critic_loss", "actor_loss", "ent_coef_loss", "ent_coef")
"""What :meth:`GatedSACUpdate.step` and :meth:`GatedSACUpdate.pretrain_step` return, in this order."""

LOSS_DESCRIPTIONS = {"aux_loss": "OFENet auxiliary loss", "critic_loss": "critic loss", "actor_loss": "actor loss",
                     "ent_coef_loss": "entropy temperature loss", "ent_coef": "entropy temperature"}
"""Each loss by the words an error message uses for it."""


class GatedSACUpdate:
    """The tensors' side of training: one gradient update of the gated networks, given minibatches.

    :param policy: the :class:`~xinet_rl.policy.XiPolicy` whose networks, optimizers, gates, loss scales, cost
        regularizer and budget controller it steps.
    :param config: the agent's configuration (discount, Polyak rate, gate estimator, starting strength).
    :param seed: seeds the generator of the gate estimators' draws (probes, flips) and of the masks.
    :param device: where the networks live: masks come from numpy's PCG64 on the CPU (less than half the time of
        torch's CPU ``rand``) and from the gate generator elsewhere.

    The agent points :attr:`replay_buffer` (and :attr:`vec_normalize_env`) at its own before each ``train`` call,
    since SB3 may replace its buffer (``load_replay_buffer``).
    """

    def __init__(self, policy: XiPolicy, config: AgentConfig, seed: int, device: torch.device) -> None:
        self.policy, self.config, self.device = policy, config, device
        self.gamma, self.tau = config.gamma, config.tau
        self.target_entropy = -float(policy.widths.act_dim)
        self.gate_rng = torch.Generator(device=device)  # estimator draws (probes, flips)
        self.gate_rng.manual_seed(seed)
        self.mask_rng: MaskRandomness = np.random.PCG64(seed) if device.type == "cpu" else self.gate_rng
        self.replay_buffer: TensorReplayBuffer | None = None
        self.vec_normalize_env: VecNormalize | None = None
        self.credit_consumers = config.gated and config.ofenet_gate_credit == "consumers"

    @property
    def pretrain_gates(self) -> bool:
        """Whether OFENet's pre-training takes gate steps: not when OFENet's units are credited by their consumers,
        since the critics and the actor that read them are not trained yet."""
        return self.config.gated and not self.credit_consumers

    def pretrain_step(self, batch_size: int, rows: Tensor | None = None) -> dict[str, Tensor]:
        """One pre-training update, tensor work only (a CUDA graph can hold it): the auxiliary step on the minibatch
        of ``rows`` (or one sampled here) with the OFENet gate step, and the counter. Returns the losses in the order
        of :data:`LOSS_NAMES` (the SAC ones zero)."""
        data = None if rows is None else self.replay_buffer.gather(rows[0])
        aux_loss = self.ofenet_step(batch_size, update_gates=self.pretrain_gates, data=data)
        self.policy.pretrain_done += 1
        zero = torch.zeros((), device=self.device)
        return {"aux_loss": aux_loss, "critic_loss": zero, "actor_loss": zero, "ent_coef_loss": zero,
                "ent_coef": zero}

    def step(self, batch_size: int, gate_step: bool, rows: Tensor | None = None) -> dict[str, Tensor]:
        """One gradient update, tensor work only (no host read, so a CUDA graph can hold it): OFENet auxiliary step,
        SAC step, and with ``gate_step`` the joint gate step. Returns the losses, in the order of
        :data:`LOSS_NAMES`.

        ``rows`` holds the storage rows of the auxiliary and SAC minibatches (:meth:`TensorReplayBuffer.draw_rows`),
        given by a CUDA graph; without it both are sampled here, in the same order."""
        p = self.policy
        has_ofenet = p.has_ofenet
        if rows is None:
            batches = [self.replay_buffer.sample(batch_size, env=self.vec_normalize_env)
                       for _ in range(2 if has_ofenet else 1)]
        else:
            batches = [self.replay_buffer.gather(r) for r in rows]
        keep_prob_grads: dict[str, Tensor] | None = {} if gate_step else None
        aux_loss = (self.ofenet_step(batch_size, update_gates=False, keep_prob_grads=keep_prob_grads, data=batches[0])
                    if has_ofenet else torch.zeros((), device=self.device))
        losses = self.sac_step(batch_size, keep_prob_grads, data=batches[-1])
        if keep_prob_grads is not None:  # gates: loss part / s_k plus α ∂C/∂π, a projected Adam step (and the budget's)
            self.apply_gate_step(keep_prob_grads, adapt_strength=True)
        return {"aux_loss": aux_loss, **losses}

    def sac_step(self, batch_size: int, keep_prob_grads: dict[str, Tensor] | None,
                 data: ReplayBufferSamples | None = None) -> dict[str, Tensor]:
        """Critic, actor, temperature and target updates on one minibatch (``data``, or one sampled here). OFENet is
        only read (mean mode, BN on running statistics); with ``keep_prob_grads`` the actor's and critics' gate
        gradients are collected into it."""
        p = self.policy
        gate_step = keep_prob_grads is not None
        if data is None:
            data = self.replay_buffer.sample(batch_size, env=self.vec_normalize_env)
        ent_coef = p.log_ent_coef.detach().exp()

        # Features in mean mode with BN on running statistics; RL losses never step OFENet. Observations and next
        # observations go through OFENet as one batch (row-wise the same computation, half the operator calls).
        with torch.no_grad():
            both_z_s = p.ofenet.z_s(torch.cat([data.observations, data.next_observations]))
            z_s, next_z_s = both_z_s[:batch_size], both_z_s[batch_size:]
            next_action, next_log_prob, _ = p.actor.sample(next_z_s)
            both_z_sa = p.ofenet.z_sa(both_z_s, torch.cat([data.actions, next_action]))
            z_sa, next_z_sa = both_z_sa[:batch_size], both_z_sa[batch_size:]
            next_q = torch.min(p.critic1_target(next_z_sa), p.critic2_target(next_z_sa))
            target_q = data.rewards.flatten() + (1 - data.dones.flatten()) * self.gamma * (
                next_q - ent_coef * next_log_prob)

        # Critics: each on its own sampled masks (both critics' masks drawn in one call).
        tapes = self._tapes(batch_size, "critic1", "critic2", gate_step=gate_step)
        q1, q2 = p.critic1(z_sa, tapes[0]), p.critic2(z_sa, tapes[1])
        critic_loss = 0.5 * (F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q))
        n1 = len(tapes[0].masks)
        masks = tapes[0].masks + tapes[1].masks if gate_step else []
        weight_grads, mask_grads = self._grads(p.critic_optimizer, critic_loss, masks, keep_graph=gate_step)
        if gate_step:  # 0.5·mean_b (q_b − y_b)²: B·∂²L/∂q_b² = 1 for each critic; one curvature pass for both
            grads = self._loss_keep_prob_grads(masks, mask_grads, torch.stack([q1, q2], -1), gn_coef=1.0, probe=False)
            scale = p.loss_scales["critic"].update(critic_loss)
            self._collect(keep_prob_grads, ("critic1",), grads[:n1], scale)
            self._collect(keep_prob_grads, ("critic2",), grads[n1:], scale)
            if self.credit_consumers:
                self._credit_ofenet_with_critics(data.observations, data.actions, target_q, scale, keep_prob_grads)
        self._apply(p.critic_optimizer, weight_grads)

        # Actor: sampled actor masks, critics and OFENet in mean mode; gradient reaches the action through z_sa.
        (tape,) = self._tapes(batch_size, "actor", gate_step=gate_step)
        action, log_prob, noise = p.actor.sample(z_s, tape)

        def per_sample_actor_loss(masks: list[Tensor] | None, a: Tensor = action, lp: Tensor = log_prob) -> Tensor:
            if masks is not None:
                a, lp, _ = p.actor.sample(z_s, MaskTape(replay=masks), noise)
            return self._actor_objective(z_s, a, lp, ent_coef)

        actor_losses = per_sample_actor_loss(None)
        actor_loss = actor_losses.mean()
        weight_grads, mask_grads = self._grads(p.actor_optimizer, actor_loss, tape.masks if gate_step else [],
                                               keep_graph=False)
        if gate_step:
            if self.config.gate_estimator == "curvature":
                grads = flip_difference(tape.masks, mask_grads, actor_losses, per_sample_actor_loss, self.gate_rng)
            else:
                grads = straight_through(tape.masks, mask_grads)
            # The actor loss has an arbitrary offset (−Q): its scale is the spread of the per-sample losses.
            actor_scale = p.loss_scales["actor"].update(actor_losses.detach().std())
            self._collect(keep_prob_grads, ("actor",), grads, actor_scale)
            if self.credit_consumers:
                self._credit_state_with_actor(data.observations, noise, ent_coef, actor_scale, keep_prob_grads)
        self._apply(p.actor_optimizer, weight_grads)

        # Entropy temperature: loss −log α · mean(log π + H̄), whose gradient is −mean(log π + H̄).
        entropy_gap = (log_prob.detach() + self.target_entropy).mean()
        ent_loss = -p.log_ent_coef.detach() * entropy_gap
        p.log_ent_coef.grad = -entropy_gap.reshape(p.log_ent_coef.shape)
        p.ent_coef_optimizer.step()

        # Targets: Polyak copies of critic weights and gate parameters.
        with torch.no_grad():
            target, online = p.polyak_pairs()
            torch._foreach_lerp_(target, online, self.tau)  # SB3's polyak_update in one pass over the tensors
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "ent_coef_loss": ent_loss.detach(), "ent_coef": ent_coef}

    def ofenet_step(self, batch_size: int, update_gates: bool, keep_prob_grads: dict[str, Tensor] | None = None,
                    data: ReplayBufferSamples | None = None) -> Tensor:
        """One auxiliary (next-observation MSE) step on OFENet weights, BN on batch statistics, on ``data`` (or a
        minibatch sampled here).

        With ``update_gates`` the gate step is taken here (pre-training); with ``keep_prob_grads`` the OFENet part of
        the gate gradient is collected for the joint gate step.
        """
        p = self.policy
        if data is None:
            data = self.replay_buffer.sample(batch_size, env=self.vec_normalize_env)
        target = data.next_observations[:, : p.widths.aux_dim]
        want_gates = self.config.gated and (update_gates or keep_prob_grads is not None)
        (tape,) = self._tapes(batch_size, *OFENET_BLOCKS, joint=True, gate_step=want_gates)
        with p.ofenet.aux_mode():
            _, _, prediction = p.ofenet(data.observations, data.actions, tape)
            loss = F.mse_loss(prediction, target)
            masks = tape.masks if want_gates else []
            weight_grads, mask_grads = self._grads(p.ofenet_optimizer, loss, masks, keep_graph=want_gates)
            if want_gates:  # mean over B·D squared errors: B·∂²L/∂f_bk² = 2/D
                grads = self._loss_keep_prob_grads(masks, mask_grads, prediction, gn_coef=2.0 / prediction.shape[-1])
        self._apply(p.ofenet_optimizer, weight_grads)
        if want_gates:
            collected = {} if keep_prob_grads is None else keep_prob_grads
            scale = p.loss_scales["ofenet"].update(loss)
            self._collect(collected, OFENET_BLOCKS, grads, scale)
            if update_gates:
                self.apply_gate_step(collected)
        return loss.detach()

    def _credit_ofenet_with_critics(self, observations: Tensor, actions: Tensor, target_q: Tensor, scale: Tensor,
                                    keep_prob_grads: dict[str, Tensor]) -> None:
        """Add the critic loss's part to every OFENet unit's ``π`` gradient (``ofenet_gate_credit`` "consumers"): the
        critic loss with OFENet's masks sampled and the critics in mean mode, through the critics' estimator. A pass
        of its own, so that the critics' weights train on the same features as without it."""
        p = self.policy
        if not self._groups(OFENET_BLOCKS):
            return
        (tape,) = self._tapes(observations.shape[0], *OFENET_BLOCKS, joint=True)
        z_sa = p.ofenet.z_sa(p.ofenet.z_s(observations, tape), actions, tape)
        q = torch.stack([p.critic1(z_sa), p.critic2(z_sa)], -1)
        loss = 0.5 * (q - target_q[:, None]).square().mean(0).sum()  # the critic loss, both critics
        mask_grads = torch.autograd.grad(loss, tape.masks, retain_graph=True)
        # both critics read every OFENet unit: one Rademacher probe per critic output gives the Jacobian columns
        self._collect(keep_prob_grads, OFENET_BLOCKS,
                  self._loss_keep_prob_grads(tape.masks, list(mask_grads), q, gn_coef=1.0, probe=True), scale)

    def _credit_state_with_actor(self, observations: Tensor, noise: Tensor, ent_coef: Tensor, scale: Tensor,
                                 keep_prob_grads: dict[str, Tensor]) -> None:
        """Add the actor loss's part to every state-block unit's ``π`` gradient (``ofenet_gate_credit``
        "consumers"): the actor loss with the state block's masks sampled and the actor, the state-action block and
        the critics in mean mode, through the actor's estimator (the same action noise as the actor's own pass)."""
        p = self.policy
        if not self._groups((STATE,)):
            return
        (tape,) = self._tapes(observations.shape[0], STATE, joint=True)

        def per_sample_loss(masks: list[Tensor] | None) -> Tensor:
            z_s = p.ofenet.z_s(observations, tape if masks is None else MaskTape(replay=masks))
            action, log_prob, _ = p.actor.sample(z_s, None, noise)
            return self._actor_objective(z_s, action, log_prob, ent_coef)

        losses = per_sample_loss(None)
        mask_grads = list(torch.autograd.grad(losses.mean(), tape.masks))
        if self.config.gate_estimator == "curvature":
            grads = flip_difference(tape.masks, mask_grads, losses, per_sample_loss, self.gate_rng)
        else:
            grads = straight_through(tape.masks, mask_grads)
        self._collect(keep_prob_grads, (STATE,), grads, scale)

    def _actor_objective(self, z_s: Tensor, action: Tensor, log_prob: Tensor, ent_coef: Tensor) -> Tensor:
        """The actor's per-sample loss ``α log π(a|s) − min(Q1, Q2)(s, a)``, the state-action block and the critics
        in mean mode."""
        z = self.policy.ofenet.z_sa(z_s, action)
        return ent_coef * log_prob - torch.min(self.policy.critic1(z), self.policy.critic2(z))

    @staticmethod
    def _grads(optimizer: torch.optim.Optimizer, loss: Tensor, masks: list[Tensor], keep_graph: bool
               ) -> tuple[list[Tensor], list[Tensor]]:
        """Gradients of ``loss`` for the optimizer's weights and for the masks, in one backward pass."""
        params = [q for group in optimizer.param_groups for q in group["params"]]
        grads = torch.autograd.grad(loss, params + list(masks), retain_graph=keep_graph)
        return list(grads[: len(params)]), list(grads[len(params):])

    @staticmethod
    def _apply(optimizer: torch.optim.Optimizer, grads: list[Tensor]) -> None:
        """Step the weights (after any estimator pass that still needs the forward graph)."""
        params = [q for group in optimizer.param_groups for q in group["params"]]
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()

    def _loss_keep_prob_grads(self, masks: list[Tensor], mask_grads: list[Tensor], outputs: Tensor, gn_coef: float,
                              probe: bool = True) -> list[Tensor]:
        """The loss part of the ``π`` gradient for a squared-error loss on ``outputs`` (see :mod:`xinet_rl.gates`)."""
        if self.config.gate_estimator == "straight_through":
            return straight_through(masks, mask_grads)
        return curvature_corrected(masks, mask_grads, outputs, gn_coef, self.gate_rng, probe=probe)

    def _tapes(self, batch: int, *networks: str, joint: bool = False, gate_step: bool = True) -> list[MaskTape]:
        """Sample-mode tapes for the given networks, every mask drawn in one Bernoulli call; ``joint`` gives one tape
        for all of them (OFENet's two blocks). Masks record gradients only for a gate step. An ungated model gets
        empty tapes."""
        if not self.policy.gated:  # nothing to draw
            return [MaskTape(replay=[]) for _ in range(1 if joint else len(networks))]
        gates = self.policy.gates()
        groups = [self._groups((n,)) for n in networks]
        tape = MaskTape.draw_all([gates[g].keep_prob for gs in groups for g in gs], batch, self.mask_rng,
                                 requires_grad=gate_step)
        return [tape] if joint else tape.split([len(gs) for gs in groups])

    def _groups(self, prefixes: tuple[str, ...]) -> list[str]:
        return [g for g in self.policy.gates() if network_of(g) in prefixes]

    def _collect(self, keep_prob_grads: dict[str, Tensor], prefixes: tuple[str, ...], grads: list[Tensor],
                 scale: Tensor) -> None:
        """File a loss's part of each group's ``π`` gradient, divided by that loss's scale ``s_k``: added to what
        another loss filed for the group (OFENet's units credited by their consumers), else filed as is."""
        groups = self._groups(prefixes)
        if groups:
            for group, grad in zip(groups, torch._foreach_div(grads, scale)):
                keep_prob_grads[group] = keep_prob_grads[group] + grad if group in keep_prob_grads else grad

    def apply_gate_step(self, loss_grads: dict[str, Tensor], adapt_strength: bool = False) -> None:
        """One projected Adam step on every ``π`` that has a loss gradient: loss part plus ``α ∂C/∂π``. A
        budget's controller then takes its step on ``α``: with ``adapt_strength`` (the SAC phase's gate steps, where
        every gate moves) toward the budget, without (OFENet's pre-training, where only OFENet's gates move) toward the
        state block's share of it."""
        p = self.policy
        gates = p.gates()
        costs = p.regularizer.unit_costs(p.structure(), {g: gate.keep_prob for g, gate in gates.items()})
        groups = [g for g in gates if g in loss_grads]
        for group in gates:
            gates[group].keep_prob.grad = None
        if not groups:
            return
        budget = p.budget
        if budget is not None and not adapt_strength:  # pre-training's multiplier prices the state block only: the
            # state-action block is not deployed, and at the state block's price it lost 215 of 240 units (HalfCheetah)
            relief = (math.log(self.config.prune_strength) - p.regularizer.log_strength).exp()
            costs = {g: (cost if network_of(g) == STATE else cost * relief) for g, cost in costs.items()}
        before = [gate.keep_prob.detach().clone() for gate in gates.values()] if budget is not None else []
        for group, grad in zip(groups, torch._foreach_add([loss_grads[g] for g in groups], [costs[g] for g in groups])):
            gates[group].keep_prob.grad = grad
        p.gate_optimizer.step()
        with torch.no_grad():  # projection onto [0, 1]
            keep_probs = [gate.keep_prob for gate in gates.values()]
            torch._foreach_clamp_min_(keep_probs, 0.0)
            torch._foreach_clamp_max_(keep_probs, 1.0)
        if budget is not None:  # the budget's floor, then the controller's step on α (pre-training: the state block's)
            structure, state_only = p.structure(), not adapt_strength
            target = budget.state_target if state_only else budget.target
            budget.floor(structure, gates, before, state_only, target)
            budget.step(p.regularizer.log_strength, budget.on_cost(structure, gates, state_only, free=True),
                        budget.expected_cost(structure, gates, state_only), target)


__all__ = ["GatedSACUpdate", "LOSS_DESCRIPTIONS", "LOSS_NAMES"]
