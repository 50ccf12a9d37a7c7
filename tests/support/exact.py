"""The brute-force exact differences that every ``π``-gradient estimator is tested against."""

import torch


def exact_differences(loss_of_masks, masks, per_sample_coupled):
    """Σ_b [L(ξ_bj=1) − L(ξ_bj=0)] for every unit j of every layer, given the other masks (brute force)."""
    out = []
    with torch.no_grad():
        for k, m in enumerate(masks):
            diff = torch.zeros(m.shape[1])
            for j in range(m.shape[1]):
                rows = range(m.shape[0]) if per_sample_coupled else [slice(None)]
                for b in rows:
                    hi = [x.detach().clone() for x in masks]
                    lo = [x.detach().clone() for x in masks]
                    hi[k][b, j], lo[k][b, j] = 1.0, 0.0
                    diff[j] += loss_of_masks(hi) - loss_of_masks(lo)
            out.append(diff)
    return out


def relative_errors(estimates, exact):
    return [((e - x).norm() / x.norm()).item() for e, x in zip(estimates, exact)]


def accumulate(total, new):
    return new if total is None else [a + b for a, b in zip(total, new)]
