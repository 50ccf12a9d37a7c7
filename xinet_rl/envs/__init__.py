"""Making and checking environments."""

from xinet_rl.envs.make import check_env_id, make_env

__all__ = ["check_env_id", "make_env"]
