"""XiNet-RL: Soft Actor-Critic with a gated OFENet that learns, and prunes, its own size while it trains."""

__version__ = "0.1.0"

from xinet_rl.agents.xisac import XiSAC  # noqa: E402

__all__ = ["XiSAC", "__version__"]
