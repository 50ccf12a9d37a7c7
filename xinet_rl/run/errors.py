"""The error of a request that cannot be carried out as asked (a run directory that exists, a model file that does
not, CUDA on a machine without it).

It lives in the run layer, not with the command lines, so that the run layer can raise it without importing them;
the commands (:func:`xinet_rl.cli.common.run_main`) turn it into one line on stderr and exit code 2.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad command line (user mistake: exit code 2)."""
