"""``xinet-eval``: run a saved policy on a fresh environment and report its return, size and inference latency."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.cli.common import Parser, UsageError, int_at_least, run_main
from xinet_rl.config import read_yaml
from xinet_rl.envs import check_env_id, make_env

PROG = "xinet-eval"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Evaluate a saved XiSAC policy (a run directory or a model file): return "
                    "over fresh episodes, size and inference latency.")
    parser.add_argument("path", help="run directory (its model.safetensors) or model file")
    parser.add_argument("--episodes", type=int_at_least(1), default=10, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the environment and of sampled actions")
    parser.add_argument("--env", help="environment id (default: the one the model was trained on)")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions instead of the mean action (default: the deterministic mean action)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: one line of text)")
    parser.add_argument("--video", metavar="DIR", help="record MP4 videos of the episodes into DIR (default: none)")
    return parser


def resolve_model_path(path: Path) -> Path:
    if path.is_dir():
        model = path / "model.safetensors"
        if not model.is_file():
            raise UsageError(f"run directory {path} has no model.safetensors (unfinished run? resume it first)")
        return model
    if not path.exists():
        raise UsageError(f"no such run directory or model file: {path}")
    return path


def resolve_env_id(path: Path, model: XiSAC, given: str | None) -> str:
    if given:
        return given
    if model.env_id:
        return model.env_id
    config = path / "config.yaml" if path.is_dir() else path.parent / "config.yaml"
    if config.is_file() and "env" in read_yaml(config):
        return str(read_yaml(config)["env"])
    raise UsageError("the model does not record its environment: pass --env")


def inference_latency_ms(model: XiSAC, obs: np.ndarray, deterministic: bool, calls: int = 300) -> float:
    """Median wall time of one ``predict`` call on a single observation (what acting costs per step)."""
    for _ in range(20):
        model.predict(obs, deterministic=deterministic)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict(obs, deterministic=deterministic)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def tracking_camera(env_id: str) -> dict[str, str]:
    """``{"camera_name": "track"}`` for a MuJoCo environment whose model has a camera of that name, the one that
    follows the body (HalfCheetah, Hopper, Walker2d, Ant, Humanoid, Swimmer); ``{}`` (the environment's default
    camera) otherwise. Without a camera named, gymnasium 1.x renders from a free camera that stays where it is."""
    probe = make_env(env_id)
    try:
        model = getattr(probe.unwrapped, "model", None)
        if type(model).__module__.split(".")[0] == "mujoco":
            import mujoco

            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0:
                return {"camera_name": "track"}
        return {}
    finally:
        probe.close()


def make_video_env(env_id: str, seed: int, folder: str, episodes: int):
    """The environment with gymnasium's video recorder, seen from its tracking camera where it has one; a clear
    error where MuJoCo cannot render."""
    from gymnasium.wrappers import RecordVideo

    camera = tracking_camera(env_id)
    try:
        env = make_env(env_id, seed=seed, render_mode="rgb_array", **camera)
        env.render()
    except Exception as exc:  # noqa: BLE001 - any rendering back-end failure means the same to the user
        gl = os.environ.get("MUJOCO_GL", "unset")
        raise UsageError(f"cannot record video: MuJoCo could not render (MUJOCO_GL={gl}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}). It needs OSMesa (apt install libosmesa6; "
                         f"MUJOCO_GL=osmesa) or EGL with a GPU driver (MUJOCO_GL=egl)") from None
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise UsageError("cannot record video: install moviepy (pip install moviepy)") from None
    return RecordVideo(env, folder, episode_trigger=lambda episode: episode < episodes, disable_logger=True)


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        path = Path(args.path)
        model = XiSAC.load(resolve_model_path(path), device="cpu")
        env_id = resolve_env_id(path, model, args.env)
        check_env_id(env_id)
        deterministic = not args.stochastic
        env = (make_video_env(env_id, args.seed, args.video, args.episodes) if args.video
               else make_env(env_id, seed=args.seed))
        env.action_space.seed(args.seed)
        torch.manual_seed(args.seed)
        returns, lengths = evaluate_policy(model, Monitor(env), n_eval_episodes=args.episodes,
                                           deterministic=deterministic, return_episode_rewards=True)
        obs, _ = make_env(env_id, seed=args.seed).reset(seed=args.seed)
        result = {"env": env_id, "model": str(resolve_model_path(path)), "episodes": args.episodes,
                  "deterministic": deterministic, "return_mean": float(np.mean(returns)),
                  "return_std": float(np.std(returns)), "returns": [float(r) for r in returns],
                  "episode_lengths": [int(n) for n in lengths],
                  "params_deploy": model.policy.param_counts()["deploy"],
                  "params_train": model.policy.param_counts()["train"],
                  "latency_ms": round(inference_latency_ms(model, obs, deterministic), 4),
                  "torch_threads": torch.get_num_threads()}
        env.close()
        if args.video:
            result["video_dir"] = str(Path(args.video).resolve())
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{env_id}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {args.episodes} "
                  f"episodes (lengths {min(lengths)}-{max(lengths)}), {result['params_deploy']} deployable "
                  f"parameters, {result['latency_ms']:.3f} ms per action")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
