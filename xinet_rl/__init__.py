"""XiNet-RL: Soft Actor-Critic with a gated OFENet that learns, and prunes, its own size while it trains."""

__version__ = "0.1.0"

from xinet_rl.agents.xisac import XiSAC  # noqa: E402
from xinet_rl.envs.make import _route_mujoco_log  # noqa: E402

_route_mujoco_log()  # environments made with plain gym.make write no MUJOCO_LOG.TXT into the working directory either

__all__ = ["XiSAC", "__version__"]
