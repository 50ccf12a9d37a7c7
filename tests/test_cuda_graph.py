"""What the CUDA-graphed update relies on, checked where CI runs (no GPU): the update given replay rows is the sampled
update bit for bit, it never reads the host (capture would fail), and the graphed path is off on the CPU."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from xinet_rl import XiSAC
from xinet_rl.cuda_graph import GraphedUpdate
from xinet_rl.update import LOSS_NAMES
from xinet_rl.envs import make_env
from xinet_rl.guards import TrainingError

SMALL = dict(ofenet_layers=2, ofenet_units=8, actor_widths=[32, 32], critic_widths=[32, 32], learning_starts=200,
             ofenet_pretrain_steps=5, batch_size=32, buffer_size=2000, gate_init=0.9, prune_start=10**9)


def _model(**overrides) -> XiSAC:
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **{**SMALL, **overrides})
    model.learn(250)  # random steps, pre-training, some updates
    return model


def _state(model: XiSAC) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("variant", [dict(), dict(gated=False), dict(ofenet_layers=0), dict(optimize_memory_usage=True)])
def test_update_from_given_rows_is_the_sampled_update(variant):
    """The graph copies SB3's rows in and gathers on the device; ``_update`` sampling them itself gives the same
    losses and the same model, bit for bit, with and without the gate step."""
    sampled, given = _model(**variant), _model(**variant)
    has_ofenet = sampled.policy.has_ofenet
    for step, gate_step in enumerate([True, False, False, True]):
        gate_step = gate_step and sampled.config.gated
        np.random.seed(100 + step)
        torch.manual_seed(step)  # the actor's noise (both models share torch's global generator)
        a = sampled.updater.step(32, gate_step)
        np.random.seed(100 + step)
        torch.manual_seed(step)
        rows = np.stack([given.replay_buffer.draw_rows(32) for _ in range(2 if has_ofenet else 1)])
        b = given.updater.step(32, gate_step, rows=torch.from_numpy(rows))
        assert list(a) == list(b) == list(LOSS_NAMES)
        for name in LOSS_NAMES:
            assert torch.equal(a[name], b[name]), (step, name)
    for (key, x), y in zip(_state(sampled).items(), _state(given).values()):
        assert torch.equal(x, y), key


def test_pretrain_update_from_given_rows_is_the_sampled_one():
    """OFENet's pre-training update (auxiliary and gate step) from given rows is the sampled one, bit for bit."""
    sampled, given = _model(), _model()
    for step in range(3):
        np.random.seed(200 + step)
        a = sampled.updater.pretrain_step(32)
        np.random.seed(200 + step)
        b = given.updater.pretrain_step(32, rows=torch.from_numpy(given.replay_buffer.draw_rows(32)[None]))
        for name in LOSS_NAMES:
            assert torch.equal(a[name], b[name]), (step, name)
    assert int(given.policy.pretrain_done) == SMALL["ofenet_pretrain_steps"] + 3
    for (key, x), y in zip(_state(sampled).items(), _state(given).values()):
        assert torch.equal(x, y), key


class _NoHostReads(TorchDispatchMode):
    """Fails on any operator that reads a tensor's value on the host (``item``, ``bool(t)``, ``nonzero``...)."""

    forbidden = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "repeat_interleave"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.forbidden:
            raise AssertionError(f"host read in the update: {func}")
        return func(*args, **(kwargs or {}))


def test_update_never_reads_the_host(monkeypatch):
    """Capture would fail on a host read. On the CPU the masks come from numpy, so the CUDA mask path (torch's
    generator) is switched on here; ``tolist`` and ``numpy`` do not pass through the dispatcher, so they are
    trapped directly."""
    model = _model()
    model.updater.mask_rng = model.updater.gate_rng
    rows = torch.from_numpy(np.stack([model.replay_buffer.draw_rows(32) for _ in range(2)]))

    def trap(*args, **kwargs):
        raise AssertionError("host read in the update")

    monkeypatch.setattr(torch.Tensor, "tolist", trap)
    monkeypatch.setattr(torch.Tensor, "numpy", trap)
    with _NoHostReads():
        for gate_step in (True, False):
            model.updater.step(32, gate_step, rows=rows)
        model.updater.pretrain_step(32, rows=rows)
    monkeypatch.undo()
    with pytest.raises(AssertionError, match="host read"), _NoHostReads():  # the trap itself works
        float(model.updater.step(32, False, rows=rows)["critic_loss"])


def test_graphed_update_is_off_on_the_cpu():
    model = _model(cuda_graph=True)
    assert model._graphed_update(32) is None and model.graphed is None
    assert model.policy.graphed_act is None
    with pytest.raises(ValueError, match="CUDA"):
        GraphedUpdate(model.updater, 32)


def test_non_finite_loss_between_reads_is_reported():
    """A graphed update reads its losses every ``check_every`` updates; a loss that was non-finite at any update
    in between is still named."""
    model = _model()
    values = {name: 1.0 for name in LOSS_NAMES}
    assert model._check_finite(values, []) == values
    with pytest.raises(TrainingError, match="non-finite actor loss .* or at an update since"):
        model._check_finite(values, ["actor_loss"])


class _FakeGraphed:
    """Stands in for ``GraphedUpdate`` (which needs a GPU), with its timing contract: each update takes 3 ms, a
    gate-step update 7 ms; ``read`` reports the mean time of the timed updates since the last read."""

    def __init__(self):
        self.clock, self.timed, self.started, self.ended = 0.0, 0, 0.0, 0.0
        self.reads = []

    def step(self, gate_step, timed=False):
        if timed and self.timed == 0:
            self.started = self.clock
        self.clock += 7.0 if gate_step else 3.0
        if timed:  # the end event is recorded after each timed update
            self.ended = self.clock
            self.timed += 1

    def read(self):
        self.reads.append(self.clock)
        seconds = (self.ended - self.started) / 1000 / self.timed if self.timed else None
        self.timed = 0
        return {name: 1.0 for name in LOSS_NAMES}, [], seconds


def test_graphed_updates_are_read_and_timed_every_check_every():
    """Losses are read every ``check_every`` updates, and the update time reported (pruning rows, TensorBoard) is
    the GPU time of one whole gate cycle before the read, per update: (7 + 3 + 3 + 3) / 4 ms here."""
    model = _model()
    fake = _FakeGraphed()
    model._n_updates = 0
    model.update_seconds = None
    for _ in range(250):
        gate_step = model._n_updates % model.config.gate_update_every == 0
        model._graphed_step(fake, gate_step)
        model._n_updates += 1
    assert len(fake.reads) == 3  # updates 0, 100 and 200
    assert model.update_seconds == pytest.approx(0.004)  # the first read had no timed cycle before it


def test_pretraining_runs_every_due_update_through_the_graph_and_reads_once():
    """On a GPU the pre-training updates still due are replayed as one graph kind and checked with one read at the
    end; a non-finite auxiliary loss among them stops the run."""
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **{**SMALL, "ofenet_pretrain_steps": 7})
    model.learn(200)  # random steps only: nothing pre-trained yet
    kinds = []

    class Recording(_FakeGraphed):
        def step(self, kind, timed=False):
            kinds.append(kind)
            model.policy.pretrain_done += kind == "pretrain"  # what the replayed update does on the GPU
            super().step(kind is True, timed)

    fake = Recording()
    model.policy.pretrain_done += 2  # as if restored from a checkpoint taken after two of them
    model._graphed_update = lambda batch_size: fake
    model._pretrain(32)
    assert kinds == ["pretrain"] * 5 and len(fake.reads) == 1 and model._pretrained
    model._pretrained = False
    model._pretrain(32)  # nothing due: no update, no read
    assert kinds == ["pretrain"] * 5 and len(fake.reads) == 1

    bad = Recording()
    bad.read = lambda: ({name: 1.0 for name in LOSS_NAMES}, ["aux_loss"], None)
    model.policy.pretrain_done.zero_()
    model._graphed_update = lambda batch_size: bad
    with pytest.raises(TrainingError, match="non-finite .* pre-training"):
        model._pretrain(32)


def test_updates_after_the_first_never_fall_back_to_adams_own_step(monkeypatch):
    """Capture refuses ``torch.optim.Adam.step`` (not capturable): after the eager warm-up every optimizer step of
    every update kind must take ``FusedAdam``'s kernel shortcut, also when only some gates have a gradient (the
    pre-training gate step moves OFENet's gates alone)."""
    model = _model()
    rows = torch.from_numpy(np.stack([model.replay_buffer.draw_rows(32) for _ in range(2)]))
    for gate_step in (True, False):
        model.updater.step(32, gate_step, rows=rows)
    model.updater.pretrain_step(32, rows=rows)

    def refuse(*args, **kwargs):
        raise AssertionError("Adam's own step")

    monkeypatch.setattr(torch.optim.Adam, "step", refuse)
    for _ in range(2):
        model.updater.pretrain_step(32, rows=rows)
        for gate_step in (True, False):
            model.updater.step(32, gate_step, rows=rows)
