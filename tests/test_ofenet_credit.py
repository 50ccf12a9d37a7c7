"""``ofenet_gate_credit`` "consumers": OFENet's units credited with the critic and actor losses of the networks that
read them, each estimate against the brute-force exact difference, added to the auxiliary part; no OFENet gate step
in pre-training."""

import pytest
import torch

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.gates import MaskTape
from xinet_rl.structure import OFENET_BLOCKS, STATE

from support.exact import accumulate, exact_differences, relative_errors


def _model(**overrides):
    config = dict(seed=0, device="cpu", ofenet_layers=2, ofenet_units=4, actor_widths=[8, 8], critic_widths=[16, 16],
                  learning_starts=100, ofenet_pretrain_steps=5, batch_size=32, buffer_size=1000, gate_init=0.7,
                  ofenet_gate_credit="consumers")
    return XiSAC(make_env("HalfCheetah-v4", seed=0), **{**config, **overrides})


class _RecordTapes:
    """Wraps the updater's ``_tapes`` to keep the tapes it draws, so the brute force can replay their masks."""

    def __init__(self, updater):
        self.tapes, self._draw = [], updater._tapes
        updater._tapes = self

    def __call__(self, *args, **kwargs):
        tapes = self._draw(*args, **kwargs)
        self.tapes.extend(tapes)
        return tapes


def _ofenet_groups(policy, prefixes):
    return [g for g in policy.gates() if g.split(".")[0] in prefixes]


def test_critic_credit_matches_exact_difference_and_adds_to_the_auxiliary_part():
    """The critic loss with OFENet's masks sampled: the curvature estimate (one Rademacher probe per critic output,
    since both critics read every OFENet unit) against Σ_b [L(ξ_bj=1) − L(ξ_bj=0)], summed over draws; the result is
    added, divided by the loss scale, to what the auxiliary loss already filed."""
    torch.manual_seed(0)
    model = _model()
    p, updater = model.policy, model.updater
    recorder = _RecordTapes(updater)
    batch = 512
    obs, act, target_q = torch.randn(batch, 17), torch.rand(batch, 6) * 2 - 1, torch.randn(batch) * 3
    groups = _ofenet_groups(p, OFENET_BLOCKS)
    already = {g: torch.full((p.gates()[g].units,), 5.0) for g in groups}
    scale = torch.tensor(2.0)

    def loss_of_masks(masks):
        tape = MaskTape(replay=masks)
        z_sa = p.ofenet.z_sa(p.ofenet.z_s(obs, tape), act, tape)
        q = torch.stack([p.critic1(z_sa), p.critic2(z_sa)], -1)
        return 0.5 * (q - target_q[:, None]).square().mean(0).sum()

    est_sum = exact_sum = None
    for _ in range(4):
        grads = dict(already)
        updater._credit_ofenet_with_critics(obs, act, target_q, scale, grads)
        masks = recorder.tapes[-1].masks
        assert set(grads) == set(groups)
        est_sum = accumulate(est_sum, [(grads[g] - 5.0) * scale for g in groups])
        exact_sum = accumulate(exact_sum, exact_differences(loss_of_masks, masks, per_sample_coupled=False))
    errors = relative_errors(est_sum, exact_sum)
    assert len(errors) == 4 and max(errors) < 0.25, errors


def test_actor_credit_matches_exact_difference_for_the_state_block():
    """The actor loss with the state block's masks sampled (the actor, the state-action block and the critics in
    mean mode, the actor's noise given): the flip estimate against the exact difference, over draws. Only the state
    block's units are credited: the actor does not read the state-action block."""
    torch.manual_seed(1)
    model = _model()
    p, updater = model.policy, model.updater
    recorder = _RecordTapes(updater)
    batch, ent_coef = 1024, torch.tensor(0.2)
    obs = torch.randn(batch, 17)
    groups = _ofenet_groups(p, (STATE,))
    est_sum = exact_sum = None
    for _ in range(8):
        noise = torch.randn(batch, 6)

        def loss_of_masks(masks, noise=noise):
            z_s = p.ofenet.z_s(obs, MaskTape(replay=masks))
            action, log_prob, _ = p.actor.sample(z_s, None, noise)
            z = p.ofenet.z_sa(z_s, action)
            return (ent_coef * log_prob - torch.min(p.critic1(z), p.critic2(z))).mean()

        grads = {}
        updater._credit_state_with_actor(obs, noise, ent_coef, torch.tensor(1.0), grads)
        assert set(grads) == set(groups)
        est_sum = accumulate(est_sum, [grads[g] for g in groups])
        exact_sum = accumulate(exact_sum, exact_differences(loss_of_masks, recorder.tapes[-1].masks,
                                                              per_sample_coupled=False))
    errors = relative_errors(est_sum, exact_sum)
    assert max(errors) < 0.2, errors


@pytest.mark.parametrize("credit", ["aux", "consumers"])
def test_pretraining_steps_ofenet_gates_only_when_the_auxiliary_loss_alone_credits_them(credit):
    """With the auxiliary loss as the only credit OFENet's gates move in pre-training; with every consumer's credit
    they wait (the critics and the actor are not trained yet) and move in the SAC phase's gate steps."""
    model = _model(ofenet_gate_credit=credit, gate_lr=0.05, prune=False, gate_update_every=1)
    model.learn(100)  # random steps: nothing trained yet
    before = {g: gate.keep_prob.detach().clone() for g, gate in model.policy.gates().items()}
    model.train(0, 32)  # the 5 pre-training updates and no SAC update
    moved = {g: not torch.equal(before[g], gate.keep_prob) for g, gate in model.policy.gates().items()}
    ofenet = [g for g in moved if g.split(".")[0] in OFENET_BLOCKS]
    assert all(moved[g] == (credit == "aux") for g in ofenet), moved
    model.train(1, 32)  # one SAC update with its gate step
    assert all(not torch.equal(before[g], model.policy.gates()[g].keep_prob) for g in ofenet)
