"""Parameter counts from first principles of the architecture (docs/method.md), for the tests to check the package's
own counting (``XiPolicy.param_counts``, ``cost.expected_params``) against. Written from the description of the
networks, not from the package's code:

- OFENet, two MLP-DenseNet blocks: layer ``l`` of a block is ``Linear(in_l, w_l, bias=False)`` then BatchNorm (2
  affine parameters per unit), and its input grows by its width: the state block reads the observation, the
  state-action block ``z_s`` (observation and state block) and the action. A layer of width 0 is no layer at all
  and counts nothing, so widths given per gated group (units kept) may contain zeros.
- the auxiliary head: ``Linear(z_sa, aux_dim)`` with bias (none when ``aux_dim`` is 0: no OFENet).
- the actor: a ReLU MLP on ``z_s`` with biases, and two heads of ``act_dim`` (mean and log-std).
- each critic: a ReLU MLP on ``z_sa`` with biases, and a head of 1. Target critics and gates are not counted.

``deploy`` is what acts: the state block and the actor.
"""

from __future__ import annotations

from typing import Mapping, Sequence


def _dense_block(in_dim: int, widths: Sequence[int]) -> tuple[int, int]:
    """(parameters, output width) of an MLP-DenseNet block."""
    total = 0
    for w in widths:
        total += in_dim * w + 2 * w
        in_dim += w
    return total, in_dim


def _mlp(in_dim: int, widths: Sequence[int], heads: Sequence[int]) -> int:
    total = 0
    for w in widths:
        total += (in_dim + 1) * w
        in_dim = w
    return total + sum((in_dim + 1) * h for h in heads)


def count_params(obs_dim: int, act_dim: int, aux_dim: int, state: Sequence[int], state_action: Sequence[int],
                 actor: Sequence[int], critic1: Sequence[int], critic2: Sequence[int]) -> dict[str, int]:
    state_params, z_s = _dense_block(obs_dim, state)
    sa_params, z_sa = _dense_block(z_s + act_dim, state_action)
    aux = (z_sa + 1) * aux_dim
    actor_params = _mlp(z_s, actor, [act_dim, act_dim])
    critics = _mlp(z_sa, critic1, [1]) + _mlp(z_sa, critic2, [1])
    return {"train": state_params + sa_params + aux + actor_params + critics, "deploy": state_params + actor_params,
            "ofenet": state_params + sa_params, "aux_head": aux, "actor": actor_params, "critics": critics}


FIELDS = ("obs_dim", "act_dim", "aux_dim", "state", "state_action", "actor", "critic1", "critic2")


def count_widths(widths, **replace) -> dict[str, int]:
    """:func:`count_params` of a ``Widths`` or a mapping of its fields, some of them replaced."""
    get = widths.get if isinstance(widths, Mapping) else lambda f: getattr(widths, f)
    return count_params(**{f: replace.get(f, get(f)) for f in FIELDS})


def count_groups(widths, kept: Mapping[str, int]) -> dict[str, int]:
    """The counts with each gated group ``block.i`` at ``kept[block.i]`` units (0 for a vanished DenseNet layer)."""
    get = widths.get if isinstance(widths, Mapping) else lambda f: getattr(widths, f)
    lists = {name: [int(kept[f"{name}.{i}"]) for i in range(len(get(name)))]
             for name in ("state", "state_action", "actor", "critic1", "critic2")}
    return count_widths(widths, **lists)


def config_widths(env_id: str, obs_dim: int, act_dim: int, overrides: list[str] | None = None) -> dict:
    """The unpruned widths a config gives, read with the package's config loader (shipped YAML and ``overrides``),
    laid out from the meaning of its keys: ``ofenet_layers`` layers of ``ofenet_units`` per block, the actor's and
    both critics' widths, the auxiliary head predicting the whole observation when ``aux_target_dim`` is 0."""
    from xinet_rl.config import resolve_config

    cfg = resolve_config(env_id, overrides=overrides)
    assert cfg.width_scale == 1.0  # not laid out here
    block = [cfg.ofenet_units] * cfg.ofenet_layers
    return {"obs_dim": obs_dim, "act_dim": act_dim,
            "aux_dim": (cfg.aux_target_dim or obs_dim) if cfg.ofenet_layers else 0,
            "state": block, "state_action": list(block), "actor": list(cfg.actor_widths),
            "critic1": list(cfg.critic_widths), "critic2": list(cfg.critic_widths)}
