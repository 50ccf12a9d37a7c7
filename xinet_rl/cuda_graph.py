"""The gradient update and the action selection captured as CUDA graphs: one launch each instead of some 900 and 50.

On a GPU the update of these small networks is bound by launching kernels, not by arithmetic: stable-baselines3's SAC
runs about 85 updates/s on an H100, a bare SAC update captured in one graph about 1,000 (``REFERENCE.md``); the gated
HalfCheetah update ran at 33 updates/s eagerly and 333 as a graph on an H200 (``BENCHMARKS.md``).
:class:`GraphedUpdate` captures :meth:`GatedSACUpdate.step <xinet_rl.update.GatedSACUpdate.step>` (OFENet auxiliary step,
critics, actor, temperature, targets, and the gate step with its estimators and cost gradient) once with and once
without the gate step, and OFENet's pre-training update (:meth:`~xinet_rl.update.GatedSACUpdate.pretrain_step`) as a
third kind, and replays them
with fresh replay rows copied in before each replay. It captures again when the
model's structure changes (each pruning event replaces the tensors) or the replay storage is remade (a restored
checkpoint).

What the captured work may not do is read the host. The replay rows come from SB3's random numbers on the host (the
same batches as the eager update) through a pinned buffer; masks, probes and flips come from the update's gate
generator, registered with every graph; loss scales and the cost gradient are branch-free tensor code; and the losses
are copied into a persistent tensor with a sticky non-finite flag, which the agent reads every
``XiSAC.check_every`` updates instead of after each one. This module knows the update and the policy only through
the methods it calls on them. :class:`GraphedAct` does the same for acting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Literal, Union

import torch
from torch import Tensor

from xinet_rl.update import LOSS_NAMES, GatedSACUpdate

if TYPE_CHECKING:
    from xinet_rl.policy import XiPolicy

Kind = Union[bool, Literal["pretrain"]]
"""An update kind, one graph each: ``True``/``False`` a gradient update with/without the gate step, ``"pretrain"``
one of OFENet's pre-training updates."""


class GraphedUpdate:
    """Replays captured CUDA graphs of ``update.step`` and ``update.pretrain_step`` (see the module docstring).

    :param update: a :class:`~xinet_rl.update.GatedSACUpdate` on a CUDA device, without ``VecNormalize``, whose
        ``replay_buffer`` is set.
    :param batch_size: rows per minibatch, fixed in the graphs.
    """

    warmup = 2
    """Eager updates of each kind (see :data:`Kind`) on the capture stream before it is captured, after
    every reset: the libraries' handles and workspaces are made there, outside the capture. Real updates, each run
    once, so capturing changes no training step."""

    def __init__(self, update: GatedSACUpdate, batch_size: int) -> None:
        if update.device.type != "cuda":
            raise ValueError(f"GraphedUpdate needs a CUDA model, got device {update.device}")
        self.update, self.batch_size = update, int(batch_size)
        device = update.device
        self.n_batches = 2 if update.policy.has_ofenet else 1  # auxiliary and SAC minibatches
        self.rows = torch.zeros((self.n_batches, 2, self.batch_size), dtype=torch.long, device=device)
        self._host_rows = torch.zeros(self.rows.shape, dtype=torch.long).pin_memory()
        self._rows_copied = torch.cuda.Event()
        self.losses = torch.zeros(len(LOSS_NAMES), device=device)
        self.nonfinite = torch.zeros(len(LOSS_NAMES), dtype=torch.bool, device=device)
        self._stream = torch.cuda.Stream(device)
        self._timers: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # (start, end) of each timed update
        self._timed = 0  # timed updates since the last read
        self.captures = 0
        self.reset()

    def reset(self) -> None:
        """Drop the graphs (and their memory pool); the next updates run eagerly, then are captured again."""
        self._graphs: dict[Kind, torch.cuda.CUDAGraph] = {}
        self._eager_runs: dict[Kind, int] = {False: 0, True: 0, "pretrain": 0}
        self._pool = None
        self._captured_for: tuple[object, ...] = ()

    def step(self, kind: Kind, timed: bool = False) -> None:
        """One gradient update of this kind (``True``/``False``: with/without the gate step; ``"pretrain"``: one of
        OFENet's pre-training updates): replay its graph, or run eagerly while warming up. ``timed`` updates
        (consecutive ones) are timed on the GPU; :meth:`read` reports their mean."""
        update = self.update
        live = (update.policy.structure_version, update.replay_buffer.tensors())  # pruned, or storage remade
        if not self._captured_for or live[0] != self._captured_for[0] or live[1] is not self._captured_for[1]:
            self.reset()
            self._captured_for = live
        self._rows_copied.synchronize()  # the pinned buffer is free once the previous rows reached the device
        for i in range(1 if kind == "pretrain" else self.n_batches):  # SB3's random numbers, in the eager order
            self._host_rows[i].copy_(torch.from_numpy(update.replay_buffer.draw_rows(self.batch_size)))
        self.rows.copy_(self._host_rows, non_blocking=True)
        self._rows_copied.record()
        graph = self._graphs.get(kind)
        if graph is None and self._eager_runs[kind] >= self.warmup:
            graph = self._capture(kind)
        if timed:  # each update between its own two events: the GPU's gaps between steps (acting, the host) are not
            if self._timed == len(self._timers):  # counted (a window over several steps would count them)
                self._timers.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._timers[self._timed][0].record()
        if graph is None:
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                self._body(kind)
            torch.cuda.current_stream().wait_stream(self._stream)
            self._eager_runs[kind] += 1
        else:
            graph.replay()
        if timed:
            self._timers[self._timed][1].record()
            self._timed += 1

    def read(self) -> tuple[dict[str, float], list[str], float | None]:
        """The latest update's losses, the names of those that were non-finite at any update since the last read,
        and the mean GPU seconds of the timed updates since then (``None`` if none was). One host read."""
        values = torch.cat([self.losses, self.nonfinite.float()]).tolist()  # waits for the GPU
        self.nonfinite.zero_()
        pairs = self._timers[:self._timed]
        seconds = sum(start.elapsed_time(end) for start, end in pairs) / 1000 / len(pairs) if pairs else None
        self._timed = 0
        count = len(LOSS_NAMES)
        return (dict(zip(LOSS_NAMES, values[:count])), [n for n, bad in zip(LOSS_NAMES, values[count:]) if bad],
                seconds)

    def _body(self, kind: Kind) -> None:
        update = self.update
        losses = (update.pretrain_step(self.batch_size, rows=self.rows) if kind == "pretrain"
                  else update.step(self.batch_size, kind, rows=self.rows))
        stacked = torch.stack([losses[name] for name in LOSS_NAMES])
        self.losses.copy_(stacked)
        self.nonfinite.logical_or_(torch.isfinite(stacked).logical_not_())

    def _capture(self, kind: Kind) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.update.gate_rng)  # masks, probes and flips; the default one is implicit
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
            self._body(kind)
        self._pool = graph.pool()  # the kinds share one pool: they never run at the same time
        self._graphs[kind] = graph
        self.captures += 1
        return graph


class GraphedAct:
    """Action selection as CUDA graphs, one per observation shape and mode (stochastic or deterministic): each
    environment step replays one graph (the OFENet state block and the actor, some 50 kernels) instead of launching
    every kernel from Python; the action's copy to the host is the step's only round trip.

    :param policy: the :class:`~xinet_rl.policy.XiPolicy` acting: its structure version and the actor's storage
        tell when the graphs are stale (pruned, or moved).
    :param act: the function captured, ``act(observation, deterministic) -> action`` (the policy's ``_act``).
    """

    warmup = 2
    """Eager calls per shape and mode before its capture (real calls: their actions are returned)."""

    def __init__(self, policy: "XiPolicy", act: Callable[[Tensor, bool], Tensor]) -> None:
        self.policy, self._act = policy, act
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self._eager_runs: dict[tuple, int] = {}
        self._captured_for: tuple[object, int] | None = None
        self._stream: torch.cuda.Stream | None = None

    def __call__(self, obs: Tensor, deterministic: bool) -> Tensor:
        """The action for ``obs`` (no gradient), as ``act(obs, deterministic)`` computes it."""
        live = (self.policy.structure_version, self.policy.actor.mu.weight.data_ptr())  # pruned, or moved
        if live != self._captured_for:
            self._graphs.clear()
            self._eager_runs.clear()
            self._captured_for = live
        key = (tuple(obs.shape), obs.dtype, bool(deterministic))
        entry = self._graphs.get(key)
        if entry is None:
            if self._stream is None:
                self._stream = torch.cuda.Stream(obs.device)
            if self._eager_runs.get(key, 0) < self.warmup:
                self._eager_runs[key] = self._eager_runs.get(key, 0) + 1
                self._stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self._stream):
                    action = self._act(obs, deterministic)
                torch.cuda.current_stream().wait_stream(self._stream)
                return action
            entry = self._capture(obs, deterministic)
            self._graphs[key] = entry
        graph, static_obs, static_action = entry
        static_obs.copy_(obs)
        graph.replay()
        return static_action.clone()

    def _capture(self, obs: Tensor, deterministic: bool) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static_obs = obs.clone()
        graph = torch.cuda.CUDAGraph()  # the actor's noise comes from the default generator, registered implicitly
        with torch.cuda.graph(graph, stream=self._stream):
            static_action = self._act(static_obs, deterministic)
        return graph, static_obs, static_action


__all__ = ["GraphedAct", "GraphedUpdate", "LOSS_NAMES"]
