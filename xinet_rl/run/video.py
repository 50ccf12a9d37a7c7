"""The environment with gymnasium's video recorder, seen from the camera that follows the body where the MuJoCo
model has one, and a clear user error where rendering (or writing MP4) cannot work on this machine."""

from __future__ import annotations

import os

import gymnasium as gym

from xinet_rl.envs import make_env
from xinet_rl.run.errors import UsageError


def tracking_camera(env_id: str) -> dict[str, str]:
    """``{"camera_name": "track"}`` for a MuJoCo environment whose model has a camera of that name, the one that
    follows the body (HalfCheetah, Hopper, Walker2d, Ant, Humanoid, Swimmer); ``{}`` (the environment's default
    camera) otherwise. Without a camera named, gymnasium 1.x renders from a free camera that stays where it is.

    :param env_id: the environment id
    :return: keyword arguments of the environment
    """
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


def make_video_env(env_id: str, seed: int, folder: str, episodes: int) -> gym.Env:
    """The environment with gymnasium's video recorder, seen from its tracking camera where it has one; a clear
    error where MuJoCo cannot render.

    :param env_id: the environment id
    :param seed: the environment's seed
    :param folder: where the MP4 files go
    :param episodes: the first this many episodes are recorded
    :return: the wrapped environment
    """
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
