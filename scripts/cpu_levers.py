"""Measure the CPU levers that `docs/method.md` records as not paying on this machine (seventh and eighth sessions).

    python scripts/cpu_levers.py outside  [--rounds 6]   # ms per env step without updates: XiSAC sac vs SB3 SAC
    python scripts/cpu_levers.py compile  [--rounds 8]   # the whole `sac` update compiled (inductor) vs eager
    python scripts/cpu_levers.py relu-mask               # inductor's ReLU kernel with and without its saved bool mask
    python scripts/cpu_levers.py precision               # 256 x 256 x 256 products at each float32 matmul precision
    python scripts/cpu_levers.py fused-mlp [--rounds 8]  # the ReLU MLPs as one autograd.Function, backward by hand
    python scripts/cpu_levers.py rewrites [--rounds 8]   # fewer operators: joint actor heads, log-prob, twin minimum

Every comparison is made inside one process, in interleaved rounds, and printed as the median of the per-round
ratios: this machine's speed drifts by tens of percent within minutes, so figures from separate runs do not compare.
``compile`` prints ``xisac train`` (XiSAC's own update), ``eager copy`` (the update below, eager) and ``compiled``
(the same with its two losses under ``torch.compile``; forward and backward are compiled, the optimizer steps are
torch's fused Adam either way); its first line is the compilation time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from xinet_rl import heads
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


class ReluMLP(torch.autograd.Function):
    """``relu(W_1 x + b_1)`` ... as one autograd node whose backward is written out (the operators autograd would
    run: ``threshold_backward``, ``mm``, ``sum``; gradients identical bit for bit), so the engine walks one node per
    network instead of three per layer. The last layer is linear when ``last_linear``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, last_linear: bool, *params: torch.Tensor) -> torch.Tensor:  # type: ignore
        inputs, h = [], x
        for i in range(0, len(params), 2):
            inputs.append(h)
            h = torch.addmm(params[i + 1], h, params[i].t())
            if not (last_linear and i == len(params) - 2):
                h.relu_()
        ctx.last_linear = last_linear
        ctx.save_for_backward(h, *inputs, *params[0::2])
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        out, *rest = ctx.saved_tensors
        n = len(rest) // 2
        inputs, weights, need = rest[:n], rest[n:], ctx.needs_input_grad
        grads: list[torch.Tensor | None] = [None] * (2 * n)
        for i in reversed(range(n)):
            if not (ctx.last_linear and i == n - 1):
                grad = torch.ops.aten.threshold_backward(grad, out if i == n - 1 else inputs[i + 1], 0)
            if need[2 + 2 * i]:
                grads[2 * i] = grad.t().mm(inputs[i])
            if need[3 + 2 * i]:
                grads[2 * i + 1] = grad.sum(0)
            if i > 0 or need[0]:
                grad = grad.mm(weights[i])
        return (grad if need[0] else None), None, *grads


def _flat(linears: list[torch.nn.Linear]) -> list[torch.Tensor]:
    return [t for linear in linears for t in (linear.weight, linear.bias)]


@contextlib.contextmanager
def _patched(owner: object, name: str, replacement: Callable, active: Callable[[], bool]) -> Iterator[None]:
    """``owner.name`` (a class's method, or a module's function) runs ``replacement`` while ``active()``, the
    original otherwise."""
    original = getattr(owner, name)

    def method(*args, **kwargs):
        return (replacement if active() else original)(*args, **kwargs)
    setattr(owner, name, method)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _compare_patched(rounds: int, patches: dict[str, list[tuple[object, str, Callable]]]) -> None:
    """XiSAC's ``sac`` update as it is against the same update with each set of replacement methods."""
    model = xisac(ENV, "sac", 1000)
    warm_up(model, 30, 1000)
    on: set[str] = set()
    with contextlib.ExitStack() as stack:
        for name, replacements in patches.items():
            for cls, attr, fn in replacements:
                stack.enter_context(_patched(cls, attr, fn, lambda name=name: name in on))

        def run(name: str | None) -> Callable[[], None]:
            def call() -> None:
                on.clear()
                on.update([name] if name else [])
                model.train(1, 256)
            return call
        interleaved({"as is": run(None), **{name: run(name) for name in patches}}, rounds, calls=40)


def _when_grad(cls: type, name: str, fn: Callable) -> Callable:
    """``fn`` where gradients are recorded; the method as it is in passes without (targets, acting)."""
    original = getattr(cls, name)
    return lambda *args, **kwargs: (fn if torch.is_grad_enabled() else original)(*args, **kwargs)


def fused_mlp(rounds: int) -> None:
    """The ReLU trunks (and a critic's output layer) as one :class:`ReluMLP` node when gradients are recorded; the
    critics' weights go in detached when the input needs a gradient (the actor loss), where autograd computes no
    weight gradients either."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(23, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 1)]
    x = torch.randn(256, 23, requires_grad=True)
    h = x
    for layer in layers[:-1]:
        h = F.relu(layer(h), inplace=True)
    expected = torch.autograd.grad(layers[-1](h).sum(), [x, *_flat(layers)])
    got = torch.autograd.grad(ReluMLP.apply(x, True, *_flat(layers)).sum(), [x, *_flat(layers)])
    print("gradients identical to autograd's:", all(torch.equal(a, b) for a, b in zip(expected, got)))

    def trunk(self, x, tape=None):
        return ReluMLP.apply(x, False, *_flat(list(self.linears)))

    def critic(self, z, tape=None):
        params = _flat([*self.trunk.linears, self.out])
        return ReluMLP.apply(z, True, *(q.detach() for q in params) if z.requires_grad else params).squeeze(-1)

    _compare_patched(rounds, {"one node per MLP": [
        (heads.GatedMLP, "forward", _when_grad(heads.GatedMLP, "forward", trunk)),
        (heads.Critic, "forward", _when_grad(heads.Critic, "forward", critic))]})


def rewrites(rounds: int) -> None:
    """Numerically equivalent forms with fewer operators (forward and backward): the actor's two heads as one product
    over concatenated weights; the log-probability summed once, its noise term without gradient; the minimum of the
    two critics in the actor loss as ``where`` (whose backward is two selections; ``minimum``'s splits ties and
    takes about ten operators)."""
    log_const = -0.5 * math.log(2 * math.pi) - 2 * math.log(2.0)

    def distribution(self, z_s, tape=None):
        out = torch.addmm(torch.cat([self.mu.bias, self.log_std.bias]), self.trunk(z_s, tape),
                          torch.cat([self.mu.weight, self.log_std.weight]).t())
        mu, log_std = out.split(self.mu.out_features, -1)
        return mu, log_std.clamp(heads.LOG_STD_MIN, heads.LOG_STD_MAX)

    def sample(self, z_s, tape=None, noise=None):
        mu, log_std = self.distribution(z_s, tape)
        noise = torch.randn_like(mu) if noise is None else noise
        u = mu + noise * log_std.exp()
        with torch.no_grad():
            const = noise.square().sum(-1).mul_(-0.5).add_(log_const * mu.shape[-1])
        return torch.tanh(u), torch.add(u, F.softplus(-2 * u)).mul_(2).sub_(log_std).sum(-1).add_(const), noise

    torch_min = torch.min

    def twin_min(*args, **kwargs):
        if torch.is_grad_enabled() and len(args) == 2 and not kwargs:
            return torch.where(args[0] <= args[1], args[0], args[1])
        return torch_min(*args, **kwargs)

    _compare_patched(rounds, {"joint heads": [(heads.Actor, "distribution", distribution)],
                              "log-prob": [(heads.Actor, "sample", sample)],
                              "where-min": [(torch, "min", twin_min)],  # type: ignore[list-item]
                              "all three": [(heads.Actor, "distribution", distribution),
                                            (heads.Actor, "sample", sample), (torch, "min", twin_min)]})

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("outside", "compile", "relu-mask", "precision", "fused-mlp", "rewrites"))
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
    elif args.what == "precision":
        precision(args.rounds)
    elif args.what == "fused-mlp":
        fused_mlp(args.rounds)
    else:
        rewrites(args.rounds)


if __name__ == "__main__":
    main()
