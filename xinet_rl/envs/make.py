"""Environments: id validation with close matches, and float32 observations (the replay buffer's storage type).

MuJoCo's own messages are kept off the terminal's raw output and out of the working directory: its default log
handler appends every warning to ``MUJOCO_LOG.TXT`` in the current directory and prints it, so the first
environment made here turns the file log off and routes MuJoCo's warnings into Python's :mod:`warnings` as
:class:`MujocoWarning` (where they can be filtered), unless the program has configured either itself.
"""

from __future__ import annotations

import difflib
import importlib
import warnings

import gymnasium as gym
import numpy as np


class EnvError(ValueError):
    """An unknown or unusable environment id (a user mistake: exit code 2)."""


class MujocoWarning(UserWarning):
    """A warning from the MuJoCo engine (its C log), raised where the engine was called from."""


# Known, harmless messages while an environment is made (message regex, category): the v4 MuJoCo models use the
# ``settotalmass`` compiler attribute that MuJoCo 3.10+ deprecates, and gymnasium 1.x tells that the v4 ids have a
# newer version (they are still the OFENet paper's and this package's reference environments).
MAKE_NOISE = ((r"compiler attribute 'settotalmass' is deprecated", MujocoWarning),
              (r".*The environment \S+ is out of date\. You should consider upgrading", DeprecationWarning))

_mujoco_routed = False
_usable: set[str] = set()


def _route_mujoco_log() -> None:
    """Once per process: no ``MUJOCO_LOG.TXT`` in the working directory, and MuJoCo warnings as Python warnings."""
    global _mujoco_routed
    if _mujoco_routed:
        return
    _mujoco_routed = True
    try:
        import mujoco
    except ImportError:
        return
    if hasattr(mujoco, "MjLogConfig"):  # MuJoCo >= 3.10: the default handler's configuration
        config = mujoco.MjLogConfig.get()
        if config.logto_file and config.logfile == "MUJOCO_LOG.TXT":  # the default, relative to the cwd
            config.logto_file = False
            config.set()
    if hasattr(mujoco, "set_mju_user_warning") and mujoco.get_mju_user_warning() is None:
        # the default handler calls a user warning callback instead of printing and writing the log file
        mujoco.set_mju_user_warning(_warn_from_mujoco)


def _warn_from_mujoco(message: str) -> None:
    warnings.warn(message.strip(), MujocoWarning, stacklevel=2)


def _registered(env_id: str) -> str:
    """The id without its ``module:`` prefix, once it is known (``module:Id``: the module that registers it is
    imported, gymnasium's convention for third-party envs); close matches in the error otherwise."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(f"cannot import module '{module}' for environment '{env_id}': {exc}") from None
    if env_id in gym.envs.registry:
        return env_id
    matches = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
    raise EnvError(f"unknown environment id '{env_id}'{hint}")


def _newer_usable_versions(env_id: str) -> list[str]:
    """The newer versions of a registered environment that can be made here (the hint when it cannot)."""
    spec = gym.envs.registry[env_id]
    if spec.version is None:
        return []
    newer = sorted((other for other in gym.envs.registry.values()
                    if other.namespace == spec.namespace and other.name == spec.name
                    and other.version is not None and other.version > spec.version), key=lambda s: s.version)
    usable = []
    for other in newer:
        try:
            _make_quietly(other.id).close()
            usable.append(other.id)
        except Exception:  # noqa: BLE001 - only a hint: any failure means "not this one"
            pass
    return usable


def _make_quietly(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` with the known, harmless messages of :data:`MAKE_NOISE` filtered."""
    with warnings.catch_warnings():
        for message, category in MAKE_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        return gym.make(env_id, **kwargs)


def check_env_id(env_id: str) -> None:
    """An environment id this machine can use: registered (close matches otherwise), made here (a registered
    environment whose dependencies are missing is named with the reason) and continuous (Box observations and
    actions). The environment is made once per process and closed."""
    if env_id in _usable:
        return
    make_env(env_id).close()
    _usable.add(env_id)


def make_env(env_id: str, seed: int | None = None, **kwargs) -> gym.Env:
    """``gym.make`` with float32 observations; continuous (Box) action spaces only."""
    name = _registered(env_id)
    _route_mujoco_log()
    try:
        env = _make_quietly(env_id, **kwargs)
    except (ImportError, gym.error.Error) as exc:  # DependencyNotInstalled is a gym.error.Error
        reason = " ".join(str(exc).split()) or type(exc).__name__
        newer = _newer_usable_versions(name)
        hint = f" ({', '.join(newer)} can be made here)" if newer else ""
        raise EnvError(f"environment '{env_id}' is registered but cannot be made here: {reason}{hint}") from None
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        kinds = f"{type(env.observation_space).__name__} observations, {type(env.action_space).__name__} actions"
        env.close()
        raise EnvError(f"environment '{env_id}' needs Box observation and action spaces (continuous control); "
                       f"it has {kinds}")
    if env.observation_space.dtype != np.float32:
        env = Float32Observation(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _float32_bounds(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds that contain the given ones: rounded outwards, beyond float32's range infinite."""
    with np.errstate(over="ignore"):
        low32, high32 = np.asarray(low).astype(np.float32), np.asarray(high).astype(np.float32)
    low32 = np.where(low32 > low, np.nextafter(low32, np.float32(-np.inf)), low32).astype(np.float32)
    high32 = np.where(high32 < high, np.nextafter(high32, np.float32(np.inf)), high32).astype(np.float32)
    return low32, high32


class Float32Observation(gym.ObservationWrapper):
    """Observations as float32, the replay buffer's storage type, with a float32 Box built from float32 bounds
    (gymnasium's ``DtypeObservation`` passes the float64 bounds on and warns about the lost precision).

    :param env: an environment with a Box observation space of any float dtype.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box)
        low, high = _float32_bounds(space.low, space.high)
        self.observation_space = gym.spaces.Box(low=low, high=high, shape=space.shape, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)
