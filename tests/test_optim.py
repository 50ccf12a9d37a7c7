"""``FusedAdam`` steps exactly as torch's fused Adam (its shortcut must not change a single bit)."""

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from xinet_rl.optim import FusedAdam


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(7, 5), (5,), (3, 7), (1,)]]


def _run(optimizer_class, groups_of, steps: int = 6, none_grad_at: int | None = None) -> list[torch.Tensor]:
    params = _params(0)
    optimizer = optimizer_class(groups_of(params), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, param in enumerate(params):
            param.grad = None if (step == none_grad_at and i == 1) else torch.randn(param.shape, generator=g)
        optimizer.step()
    return [p.detach().clone() for p in params] + [
        v for state in optimizer.state.values() for v in (state["exp_avg"], state["exp_avg_sq"], state["step"])]


def _fused_adam(groups, lr):
    return torch.optim.Adam(groups, lr=lr, fused=True)


@pytest.mark.parametrize("groups_of", [
    lambda ps: ps,
    lambda ps: [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "maximize": True, "betas": (0.5, 0.9)}],
    lambda ps: [{"params": ps[:2], "decoupled_weight_decay": True, "weight_decay": 0.1}, {"params": ps[2:]}],
], ids=["one group", "weight decay and maximize", "decoupled weight decay"])
@pytest.mark.parametrize("none_grad_at", [None, 3])
def test_fused_adam_steps_bit_for_bit_like_torch_fused_adam(groups_of, none_grad_at):
    ours, torchs = _run(FusedAdam, groups_of, none_grad_at=none_grad_at), _run(_fused_adam, groups_of,
                                                                                 none_grad_at=none_grad_at)
    assert len(ours) == len(torchs)
    for a, b in zip(ours, torchs):
        assert torch.equal(a, b)


def test_fused_adam_takes_the_shortcut_after_the_first_step(monkeypatch):
    params = _params(0)
    optimizer = FusedAdam(params, lr=1e-2)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()  # creates the state through Adam's own step
    calls = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: calls.append(1))
    optimizer.step()
    assert calls == [] and all(optimizer.state[p]["step"].item() == 2 for p in params)


def _three_steps() -> tuple[list[torch.nn.Parameter], FusedAdam]:
    params = _params(0)
    optimizer = FusedAdam(params, lr=1e-2)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    return params, optimizer


def test_fused_adam_state_dict_loads_into_torch_adam():
    params, optimizer = _three_steps()
    other = torch.optim.Adam(_params(0), lr=1e-2, fused=True)
    other.load_state_dict(optimizer.state_dict())
    assert all(other.state_dict()["state"][0][k].equal(v) for k, v in optimizer.state_dict()["state"][0].items())


def test_step_hooks_still_run_once_per_step():
    torch.optim.Adam(_params(1), lr=1e-2)  # a plain Adam wraps Adam.step: FusedAdam's fallback must not run hooks twice
    params = _params(0)
    optimizer = FusedAdam(params, lr=1e-2)
    calls = []
    local = optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    global_ = register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    try:
        for _ in range(2):  # first step through Adam's own step, second through the kernel shortcut
            for p in params:
                p.grad = torch.ones_like(p)
            optimizer.step()
    finally:
        local.remove()
        global_.remove()
    assert calls == ["pre", "post", "pre", "post"]
    assert all(optimizer.state[p]["step"].item() == 2 for p in params)


def test_step_counters_are_joined_and_survive_a_state_dict_round_trip():
    """One ``add_`` advances every counter of a group; counters Adam or ``load_state_dict`` made separately are
    joined with their values, and a loaded optimizer keeps stepping exactly like torch's."""
    params, optimizer = _three_steps()
    steps = [optimizer.state[p]["step"] for p in params]
    assert steps[0]._base is not None and all(s._base is steps[0]._base for s in steps)
    assert [s.item() for s in steps] == [3.0] * len(params)

    saved = optimizer.state_dict()
    copies = [[torch.nn.Parameter(p.detach().clone()) for p in params] for _ in range(2)]
    loaded, reference = FusedAdam(copies[0], lr=1e-2), torch.optim.Adam(copies[1], lr=1e-2, fused=True)
    loaded.load_state_dict(copy.deepcopy(saved))  # load_state_dict keeps references to the tensors it is given
    reference.load_state_dict(copy.deepcopy(saved))
    for _ in range(2):
        for opt, ps in ((loaded, copies[0]), (reference, copies[1])):
            for p in ps:
                p.grad = torch.full_like(p, 0.5)
            opt.step()
    for a, b in zip(*copies):
        assert torch.equal(a, b) and torch.equal(loaded.state[a]["exp_avg_sq"], reference.state[b]["exp_avg_sq"])
        assert loaded.state[a]["step"].item() == reference.state[b]["step"].item() == 5.0
    assert [s.item() for s in steps] == [3.0] * len(params)  # the first optimizer's counters are its own
