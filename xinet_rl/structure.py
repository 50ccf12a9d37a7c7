"""The model as data: the width of every layer and the ordered input groups of every layer.

A *group* is a block of features that is kept or removed unit by unit: the raw observation, the action, or the
output units of one gated layer. Every layer reads a concatenation of groups in a fixed order (an OFENet layer reads
the observation and every earlier layer of its block, the actor's first layer reads ``z_s``, a critic's first layer
and the auxiliary head read ``z_sa``). Three things are derived from this one description: building the networks
(:mod:`xinet_rl.policy`), the expected parameter count (:mod:`xinet_rl.cost`) and, for pruning
(:mod:`xinet_rl.pruning`), the columns a unit occupies in every layer that reads its group.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

OBS, ACT = "obs", "act"
STATE, STATE_ACTION, ACTOR = "state", "state_action", "actor"
CRITICS = ("critic1", "critic2")
OFENET_BLOCKS = (STATE, STATE_ACTION)
AUX_HEAD = "aux_head"  # the auxiliary head's layer name
DEPLOYED = (STATE, ACTOR)  # the networks of the deployable policy: OFENet's state block and the actor


# ----- the group-name grammar: ``NETWORK.INDEX`` for a gated group, ``NETWORK.HEAD`` for an ungated head ----------------
def group_name(network: str, index: int) -> str:
    """The name of the units of a network's ``index``-th hidden layer: ``state.3``, ``actor.0``, ``critic2.1``."""
    return f"{network}.{index}"


def parse_name(name: str) -> tuple[str, str]:
    """``(network, part)`` of a group or layer name: ``critic2.1`` -> ``("critic2", "1")``, ``actor.mu`` ->
    ``("actor", "mu")``, ``aux_head`` -> ``("aux_head", "")``."""
    network, _, part = name.partition(".")
    return network, part


def network_of(name: str) -> str:
    """The network a group or layer belongs to (``state``, ``state_action``, ``actor``, ``critic1``, ``critic2``)."""
    return parse_name(name)[0]


def in_ofenet(name: str) -> bool:
    """A group of one of OFENet's DenseNet blocks: such a layer may lose every unit (its block reads the others)."""
    return network_of(name) in OFENET_BLOCKS


def is_deployed(name: str) -> bool:
    """A group of the deployable policy (OFENet's state block or the actor)."""
    return network_of(name) in DEPLOYED


@dataclass
class Widths:
    """Current width of every layer; a pruned model is rebuilt from this alone."""

    obs_dim: int
    act_dim: int
    aux_dim: int
    state: list[int] = field(default_factory=list)  # OFENet state block, one entry per DenseNet layer
    state_action: list[int] = field(default_factory=list)  # OFENet state-action block
    actor: list[int] = field(default_factory=lambda: [256, 256])
    critic1: list[int] = field(default_factory=lambda: [256, 256])
    critic2: list[int] = field(default_factory=lambda: [256, 256])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Widths":
        return cls(**{k: (list(v) if isinstance(v, list) else int(v)) for k, v in data.items()})

    def scaled(self, factor: float) -> "Widths":
        """Every hidden width times ``factor``, rounded half up, at least 1 (the ``width_scale`` key): a dense agent of
        another size with the same shape. Input and output dimensions stay."""
        def scale(widths: list[int]) -> list[int]:
            return [max(1, math.floor(w * factor + 0.5)) for w in widths]

        return replace(self, state=scale(self.state), state_action=scale(self.state_action), actor=scale(self.actor),
                       critic1=scale(self.critic1), critic2=scale(self.critic2))

    def with_networks(self, networks: dict[str, list[int]]) -> "Widths":
        """These input and output dimensions with the hidden widths of ``networks`` (as :meth:`networks` gives them,
        or :meth:`check_networks` returns them): another run's final widths on this environment (``small``)."""
        return replace(self, state=networks["ofenet_state"], state_action=networks["ofenet_state_action"],
                       actor=networks["actor"], critic1=networks["critic1"], critic2=networks["critic2"])

    @staticmethod
    def check_networks(networks: Any) -> dict[str, list[int]]:
        """``networks`` as :meth:`networks` gives them, checked: every network named, every width a positive whole
        number (``ValueError`` otherwise)."""
        names = ("ofenet_state", "ofenet_state_action", "actor", "critic1", "critic2")
        if not isinstance(networks, dict) or set(networks) != set(names):
            raise ValueError(f"widths per network must name exactly {', '.join(names)}")
        checked = {}
        for name in names:
            widths = networks[name]
            if not isinstance(widths, list) or not all(type(w) is int and w >= 1 for w in widths):
                raise ValueError(f"widths of {name} must be a list of positive whole numbers, not {widths!r}")
            checked[name] = list(widths)
        return checked

    def networks(self) -> dict[str, list[int]]:
        """Layer widths per network name, as reported in ``summary.json``."""
        return {
            "ofenet_state": list(self.state),
            "ofenet_state_action": list(self.state_action),
            "actor": list(self.actor),
            "critic1": list(self.critic1),
            "critic2": list(self.critic2),
        }

    @property
    def z_s_dim(self) -> int:
        return self.obs_dim + sum(self.state)

    @property
    def z_sa_dim(self) -> int:
        return self.z_s_dim + self.act_dim + sum(self.state_action)


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer: the groups it reads (in concatenation order) and what it writes.

    ``out`` is the name of the layer's own gated group, or ``None`` for an ungated head of ``out_dim`` outputs.
    ``network`` says which loss owns the layer; ``deploy`` marks the layers of the deployable policy.
    """

    name: str
    inputs: tuple[str, ...]
    out: str | None
    out_dim: int
    network: str
    batchnorm: bool = False
    deploy: bool = False


@dataclass
class Structure:
    """Every group's width and every layer's inputs. ``version`` counts the prunings of the model it describes (the
    policy sets it): caches of anything derived from a structure key on it."""

    groups: dict[str, int]  # group name -> current width
    layers: list[LayerSpec]
    version: int = 0

    @property
    def gated_groups(self) -> list[str]:
        return [layer.out for layer in self.layers if layer.out is not None]

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name`` (``state.0``, ``aux_head``, ``actor.mu``, ``critic1.out``, ...)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in this structure")

    def has_layer(self, name: str) -> bool:
        return any(layer.name == name for layer in self.layers)

    def in_dim(self, name: str) -> int:
        """The input width of layer ``name``: the summed widths of the groups it reads."""
        return sum(self.groups[g] for g in self.layer(name).inputs)

    def hidden_layers(self, network: str) -> list[LayerSpec]:
        """The gated layers of ``network`` (``state``, ``state_action``, ``actor``, ``critic1``, ``critic2``), in
        order."""
        return [layer for layer in self.layers if layer.out is not None and network_of(layer.out) == network]

    def heads(self, network: str) -> list[LayerSpec]:
        """The ungated output layers of ``network`` (``actor``: ``mu`` and ``log_std``; a critic: ``out``)."""
        return [layer for layer in self.layers if layer.out is None and network_of(layer.name) == network]


def build_structure(w: Widths, version: int = 0) -> Structure:
    """The structure of a model of widths ``w`` (``version``: how often that model was pruned)."""
    groups: dict[str, int] = {OBS: w.obs_dim, ACT: w.act_dim}
    layers: list[LayerSpec] = []

    def dense_block(block: str, widths: list[int], head: tuple[str, ...], deploy: bool) -> tuple[str, ...]:
        inputs = head
        for i, width in enumerate(widths):
            g = group_name(block, i)
            groups[g] = width
            layers.append(LayerSpec(g, inputs, g, width, "ofenet", batchnorm=True, deploy=deploy))
            inputs = inputs + (g,)
        return inputs

    def mlp(name: str, widths: list[int], inputs: tuple[str, ...], heads: dict[str, int], deploy: bool) -> None:
        for i, width in enumerate(widths):
            g = group_name(name, i)
            groups[g] = width
            layers.append(LayerSpec(g, inputs, g, width, name if name == ACTOR else "critic", deploy=deploy))
            inputs = (g,)
        for head, dim in heads.items():
            layers.append(LayerSpec(f"{name}.{head}", inputs, None, dim, name if name == ACTOR else "critic",
                                    deploy=deploy))

    z_s = dense_block(STATE, w.state, (OBS,), deploy=True)
    z_sa = dense_block(STATE_ACTION, w.state_action, z_s + (ACT,), deploy=False)
    if w.aux_dim > 0:
        layers.append(LayerSpec(AUX_HEAD, z_sa, None, w.aux_dim, "ofenet"))
    mlp(ACTOR, w.actor, z_s, {"mu": w.act_dim, "log_std": w.act_dim}, deploy=True)
    for critic in CRITICS:
        mlp(critic, getattr(w, critic), z_sa, {"out": 1}, deploy=False)
    return Structure(groups, layers, version)
