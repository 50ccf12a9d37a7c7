"""XiNet-RL: Soft Actor-Critic with a gated OFENet that learns, and prunes, its own size while it trains."""

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.envs.make import _route_mujoco_log
from xinet_rl.version import __version__

_route_mujoco_log()  # environments made with plain gym.make write no MUJOCO_LOG.TXT into the working directory either

__all__ = ["XiSAC", "__version__"]
