"""The folded deployable policy: the unfolded computation up to float rounding, as a plain MLP-DenseNet of the live
widths (no BatchNorm, no gates, a unit at π = 0 not computed), exported unchanged to ONNX and TorchScript."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from xinet_rl.config import AgentConfig
from xinet_rl.cost import expected_params
from xinet_rl.export import DeployPolicy, export_policy
from xinet_rl.gates import Gate
from xinet_rl.policy import XiPolicy
from xinet_rl.pruning import prune

OBS = gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
ACT = gym.spaces.Box(np.array([-1.0, -2.0, 0.0], np.float32), np.array([1.0, 3.0, 0.5], np.float32))
WIDTHS = dict(obs_dim=11, act_dim=3, aux_dim=11, state=[6, 5, 4, 5], state_action=[4, 3], actor=[16, 12],
              critic1=[8], critic2=[8])


def make_policy(gated: bool = True, seed: int = 0) -> XiPolicy:
    """BN with non-trivial running statistics and affine parameters; where gated, π in (0, 1) on most units, π = 1
    on some, π = 0 on a third of them and on every unit of ``state.1``."""
    torch.manual_seed(seed)
    policy = XiPolicy(OBS, ACT, lambda _: 1e-3, widths=WIDTHS, config=AgentConfig(gated=gated))
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in policy.ofenet.state.layers:
            layer.bn.running_mean.normal_(0.0, 1.0, generator=rng)
            layer.bn.running_var.uniform_(0.2, 3.0, generator=rng)
            layer.bn.weight.uniform_(0.5, 1.5, generator=rng)
            layer.bn.bias.normal_(0.0, 0.5, generator=rng)
        for group, gate in policy.gates().items():
            gate.keep_prob.uniform_(0.2, 1.0, generator=rng)
            gate.keep_prob[torch.rand(gate.units, generator=rng) < 0.2] = 1.0
            gate.keep_prob[torch.rand(gate.units, generator=rng) < 0.33] = 0.0
            if group == "state.1":
                gate.keep_prob.zero_()
    return policy


def unfolded(policy: XiPolicy, obs: torch.Tensor) -> torch.Tensor:
    """What the policy computes itself: BN and gates in mean mode, then SB3's rescaling to the action box."""
    with torch.no_grad():
        action = policy.actor.deterministic(policy.ofenet.z_s(obs))
    low, high = torch.as_tensor(ACT.low), torch.as_tensor(ACT.high)
    return low + 0.5 * (action + 1.0) * (high - low)


def live_widths(policy: XiPolicy) -> dict[str, int]:
    return {g: int((gate.keep_prob > 0).sum()) for g, gate in policy.gates().items()}


def folded_param_count(policy: XiPolicy, widths: dict[str, int]) -> int:
    """The cost model's deployable count at these widths, less what folding removes: BN's two affine parameters
    per unit become one bias, and the log-std head is not part of the deterministic policy."""
    structure, act_dim = policy.structure(), policy.widths.act_dim
    state_units = sum(widths.get(g, structure.groups[g]) for g in structure.groups if g.startswith("state."))
    last = f"actor.{len(policy.widths.actor) - 1}"
    return int(expected_params(structure, widths, deploy_only=True)) - state_units - (
        widths.get(last, structure.groups[last]) + 1) * act_dim


def observations(n: int = 512) -> torch.Tensor:
    return torch.randn(n, 11, generator=torch.Generator().manual_seed(7)) * 3


def test_folded_equals_unfolded_with_fractional_and_zero_gates():
    policy = make_policy()
    keep_probs = torch.cat([g.keep_prob.detach() for g in policy.gates().values()])
    assert bool(((keep_probs > 0) & (keep_probs < 1)).any())
    assert bool((keep_probs == 0).any()) and bool((keep_probs == 1).any())
    bn = policy.ofenet.state.layers[0].bn
    assert bn.running_mean.abs().max() > 0.3 and (bn.running_var - 1).abs().max() > 0.3
    deploy = DeployPolicy(policy)
    obs = observations()
    expected = unfolded(policy, obs)
    with torch.no_grad():
        got = deploy(obs)
    assert float((got - expected).abs().max()) < 1e-5
    assert float(expected.std()) > 0.05  # the comparison is not between two constants


def test_folded_module_is_a_plain_densenet_of_the_live_widths():
    policy = make_policy()
    deploy = DeployPolicy(policy)
    assert {type(m) for m in deploy.modules()} == {DeployPolicy, nn.ModuleList, nn.Linear}
    assert not any(isinstance(m, (nn.BatchNorm1d, Gate)) for m in deploy.modules())
    live = live_widths(policy)
    state = [live[f"state.{i}"] for i in range(len(WIDTHS["state"]))]
    assert state[1] == 0  # that layer is not computed at all
    assert [layer.out_features for layer in deploy.state] == [w for w in state if w > 0]
    assert [layer.out_features for layer in deploy.trunk] == [live["actor.0"], live["actor.1"]]
    assert deploy.trunk[0].in_features == 11 + sum(state)
    assert sum(p.numel() for p in deploy.parameters()) == folded_param_count(policy, live)


def test_folded_pruned_and_ungated_policies():
    policy = make_policy()
    prune(policy, {g: gate.keep_prob.detach() > 0 for g, gate in policy.gates().items()})
    assert len(policy.ofenet.state.layers) == 3  # state.1 was removed with all its units
    deploy = DeployPolicy(policy)
    obs = observations()
    with torch.no_grad():
        assert float((deploy(obs) - unfolded(policy, obs)).abs().max()) < 1e-5
    assert sum(p.numel() for p in deploy.parameters()) == folded_param_count(policy, live_widths(policy))

    dense = make_policy(gated=False)
    deploy = DeployPolicy(dense)
    with torch.no_grad():
        assert float((deploy(obs) - unfolded(dense, obs)).abs().max()) < 1e-5
    count = sum(p.numel() for p in deploy.parameters())
    assert count == folded_param_count(dense, {})
    # the policy's own count holds BN's two affine parameters per unit and the log-std head
    log_std = dense.actor.log_std.weight.numel() + dense.actor.log_std.bias.numel()
    assert count == dense.param_counts()["deploy"] - sum(WIDTHS["state"]) - log_std


def test_folded_policy_is_a_snapshot():
    policy = make_policy()
    deploy = DeployPolicy(policy)
    obs = observations(64)
    with torch.no_grad():
        before = deploy(obs)
        for gate in policy.gates().values():
            gate.keep_prob.fill_(1.0)
        policy.ofenet.state.layers[0].bn.running_mean.add_(1.0)
        assert torch.equal(deploy(obs), before)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_of_the_folded_policy(tmp_path, fmt):
    policy = make_policy()
    model = SimpleNamespace(policy=policy, observation_space=OBS)
    diff = export_policy(model, fmt, tmp_path / f"policy.{fmt}")
    assert diff < 1e-5
