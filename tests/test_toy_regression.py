"""Learning on a problem with a known answer: a gated student with 16 hidden units and a teacher that needs 3.

The gates of the surplus units must reach exactly 0 and the rest exactly 1 (a deterministic network), and the
mean-mode error must be as low as that of the same student trained without gates.
"""

import torch
import torch.nn.functional as F
from torch import nn

from xinet_rl.cost import LossScale
from xinet_rl.gates import MaskTape, curvature_corrected
from xinet_rl.heads import GatedMLP

D, HIDDEN, STEPS = 4, 16, 3000


def teacher_fn(seed):
    g = torch.Generator().manual_seed(seed)
    w, b, v = torch.randn(3, D, generator=g), torch.randn(3, generator=g) * 0.3, torch.randn(3, generator=g)
    return lambda x: F.relu(x @ w.T + b) @ v


def train_student(seed: int, gated: bool, alpha: float = 0.3):
    torch.manual_seed(seed)
    teacher = teacher_fn(seed)
    net, head = GatedMLP(D, [HIDDEN], gated, 1.0), nn.Linear(HIDDEN, 1)
    weights = list(net.linears.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(weights, lr=3e-3)
    if gated:
        gate = net.gates[0]
        gate_opt = torch.optim.Adam([gate.keep_prob], lr=1e-2)
        scale = LossScale(0.99)
        cost0 = (D + 1) * HIDDEN + HIDDEN + 1  # expected parameters: (D+1)Σπ + (Σπ+1)
        cost_grad = alpha * (D + 2) / cost0
    for _ in range(STEPS):
        x = torch.randn(256, D)
        y = teacher(x) + 0.1 * torch.randn(256)
        tape = MaskTape() if gated else None
        out = head(net(x, tape)).squeeze(-1)
        loss = F.mse_loss(out, y)
        grads = torch.autograd.grad(loss, weights + (tape.masks if gated else []), retain_graph=gated)
        if gated:
            keep_prob_grad = curvature_corrected(tape.masks, grads[len(weights):], out, gn_coef=2.0)[0]
            gate.keep_prob.grad = keep_prob_grad / scale.update(loss) + cost_grad
            gate_opt.step()
            gate.project_()
        for p, g in zip(weights, grads):
            p.grad = g
        opt.step()
    x = torch.randn(8192, D)
    with torch.no_grad():
        mse = F.mse_loss(head(net(x)).squeeze(-1), teacher(x)).item()
    return (net.gates[0].keep_prob.detach() if gated else None), mse


def test_surplus_units_reach_zero_and_the_rest_one():
    keep_prob, gated_mse = train_student(seed=0, gated=True)
    _, plain_mse = train_student(seed=0, gated=False)
    assert set(keep_prob.unique().tolist()) <= {0.0, 1.0}, keep_prob  # deterministic network
    kept = int(keep_prob.sum())
    assert 3 <= kept <= 8, keep_prob  # the teacher needs 3 ReLUs; most of the 16 are removed
    assert gated_mse <= plain_mse + 1e-3, (gated_mse, plain_mse)  # noise variance is 1e-2
