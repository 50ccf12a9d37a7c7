from xinet_rl.agents.xisac import XiSAC

__all__ = ["XiSAC"]
