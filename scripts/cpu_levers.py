"""Measure the CPU levers that `docs/method.md` ("The CPU step: what is left") records as not paying on this machine.

    python scripts/cpu_levers.py outside  [--rounds 6]   # ms per env step without updates: XiSAC sac vs SB3 SAC
    python scripts/cpu_levers.py compile  [--rounds 8]   # the whole `sac` update compiled (inductor) vs eager
    python scripts/cpu_levers.py relu-mask               # inductor's ReLU kernel with and without its saved bool mask
    python scripts/cpu_levers.py precision               # 256 x 256 x 256 products at each float32 matmul precision

Every comparison is made inside one process, in interleaved rounds, and printed as the median of the per-round
ratios: this machine's speed drifts by tens of percent within minutes, so figures from separate runs do not compare.
``compile`` prints ``xisac train`` (XiSAC's own update), ``eager copy`` (the update below, eager) and ``compiled``
(the same with its two losses under ``torch.compile``; forward and backward are compiled, the optimizer steps are
torch's fused Adam either way); its first line is the compilation time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from xinet_rl.cli.bench import warm_up, xisac

ENV = "HalfCheetah-v4"


def interleaved(variants: dict[str, Callable[[], None]], rounds: int, calls: int, warm: int = 3,
                per_call: int = 1) -> None:
    """Time ``calls`` calls of each variant per round, rounds interleaved; print medians (ms per call, divided by
    ``per_call`` when a call does that many steps) against the first one."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(warm):
                fn()
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - started) / calls / per_call * 1e3)
    base = next(iter(times.values()))
    for name, values in times.items():
        ratio = statistics.median(b / v for b, v in zip(base, values))
        print(f"{name:14s} median {statistics.median(values):8.3f} ms   speed vs {next(iter(times))}: {ratio:.3f}x   "
              f"rounds {[round(v, 2) for v in values]}")


def outside(rounds: int) -> None:
    """Time per environment step with the gradient update switched off: acting, the environment, the replay buffer
    and stable-baselines3's loop, for XiSAC ``sac`` and SB3 SAC."""
    from stable_baselines3 import SAC

    from xinet_rl.envs import make_env

    ours = xisac(ENV, "sac", 1000)
    warm_up(ours, 30, 1000)
    sb3 = SAC("MlpPolicy", make_env(ENV, seed=0), learning_starts=1000, seed=0)
    sb3.learn(1030)
    for model in (ours, sb3):
        model.train = lambda *args, **kwargs: None  # type: ignore[method-assign]
    interleaved({"XiSAC sac": lambda: ours.learn(100, reset_num_timesteps=False),
                 "SB3 SAC": lambda: sb3.learn(100, reset_num_timesteps=False)}, rounds, calls=3, warm=0, per_call=100)
    print("(ms per environment step)")


def compiled_update(rounds: int) -> None:
    model = xisac(ENV, "sac", 1000)
    warm_up(model, 30, 1000)
    p = model.policy
    critic_params = [q for critic in (p.critic1, p.critic2) for q in critic.parameters()]
    actor_params = list(p.actor.parameters())
    batch, act_dim = 256, p.widths.act_dim

    def critic_loss(obs, act, rew, done, next_obs, next_noise, ent_coef):
        with torch.no_grad():
            next_a, next_lp, _ = p.actor.sample(next_obs, None, next_noise)
            next_z = torch.cat([next_obs, next_a], -1)
            next_q = torch.min(p.critic1_target(next_z), p.critic2_target(next_z))
            target = rew.flatten() + (1 - done.flatten()) * model.gamma * (next_q - ent_coef * next_lp)
        z = torch.cat([obs, act], -1)
        return 0.5 * (F.mse_loss(p.critic1(z), target) + F.mse_loss(p.critic2(z), target))

    def actor_loss(obs, noise, ent_coef):
        action, log_prob, _ = p.actor.sample(obs, None, noise)
        z = torch.cat([obs, action], -1)
        return (ent_coef * log_prob - torch.min(p.critic1(z), p.critic2(z))).mean(), log_prob.detach()

    def update(closs, aloss) -> None:
        data = model.replay_buffer.sample(batch)
        ent_coef = p.log_ent_coef.detach().exp()
        next_noise, noise = torch.randn(batch, act_dim), torch.randn(batch, act_dim)
        loss = closs(data.observations, data.actions, data.rewards, data.dones, data.next_observations, next_noise,
                     ent_coef)
        for q, g in zip(critic_params, torch.autograd.grad(loss, critic_params)):
            q.grad = g
        p.critic_optimizer.step()
        for q in critic_params:  # a compiled backward computes every gradient its graph has: leave the critics out
            q.requires_grad_(False)
        loss, log_prob = aloss(data.observations, noise, ent_coef)
        grads = torch.autograd.grad(loss, actor_params)
        for q in critic_params:
            q.requires_grad_(True)
        for q, g in zip(actor_params, grads):
            q.grad = g
        p.actor_optimizer.step()
        p.log_ent_coef.grad = -(log_prob + model.target_entropy).mean().reshape(p.log_ent_coef.shape)
        p.ent_coef_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(*p.polyak_pairs(), model.tau)

    closs_c, aloss_c = torch.compile(critic_loss), torch.compile(actor_loss)
    started = time.perf_counter()
    for _ in range(3):
        update(closs_c, aloss_c)
    print(f"compilation (first 3 updates): {time.perf_counter() - started:.1f} s")
    interleaved({"xisac train": lambda: model.train(1, batch), "eager copy": lambda: update(critic_loss, actor_loss),
                 "compiled": lambda: update(closs_c, aloss_c)}, rounds, calls=40)


def relu_mask(rounds: int) -> None:
    """The kernel inductor generates for ReLU in a training graph stores a bool mask for the backward pass; on this
    CPU that store makes a 256 x 256 ReLU an order of magnitude slower than the same loop without it."""
    x = torch.randn(256, 256)

    def with_mask(t):
        r = torch.relu(t)
        return r, r <= 0

    def without_mask(t):
        return torch.relu(t) * 2

    compiled_mask, compiled_plain = torch.compile(with_mask), torch.compile(without_mask)
    interleaved({"eager, mask": lambda: with_mask(x), "compiled, mask": lambda: compiled_mask(x),
                 "eager, no mask": lambda: without_mask(x), "compiled, none": lambda: compiled_plain(x)},
                rounds, calls=200)


def precision(rounds: int) -> None:
    """``torch.set_float32_matmul_precision``: "medium" lets oneDNN multiply in bfloat16 (AMX on this CPU)."""
    x, w, b = torch.randn(256, 256), torch.randn(256, 256), torch.randn(256)
    exact = x.double() @ w.double().t() + b.double()
    variants = {}
    for level in ("highest", "medium"):
        torch.set_float32_matmul_precision(level)
        error = ((F.linear(x, w, b).double() - exact).abs().max() / exact.abs().max()).item()
        print(f"{level}: max relative error {error:.1e}")

        def run(level: str = level) -> None:
            torch.set_float32_matmul_precision(level)
            F.linear(x, w, b)
        variants[level] = run
    interleaved(variants, rounds, calls=300)
    torch.set_float32_matmul_precision("highest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("outside", "compile", "relu-mask", "precision"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.what == "outside":
        outside(args.rounds)
    elif args.what == "compile":
        compiled_update(args.rounds)
    elif args.what == "relu-mask":
        relu_mask(args.rounds)
    else:
        precision(args.rounds)


if __name__ == "__main__":
    main()
