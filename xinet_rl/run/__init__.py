"""The run layer: everything the commands do once their arguments are parsed.

The command lines (:mod:`xinet_rl.cli`) parse, call into this package and print; this package never imports them, and
each of its modules holds one idea, so that scripts, tests and Ray workers use the same code as the commands:

* :mod:`~xinet_rl.run.errors`: :class:`~xinet_rl.run.errors.UsageError`, a request that cannot be carried out as asked
* :mod:`~xinet_rl.run.device`: the torch device a ``--device`` choice names
* :mod:`~xinet_rl.run.paths`: where a run's files are, and what its model file says it was trained on
* :mod:`~xinet_rl.run.resume`: what a run directory needs to be continued (its config, its newest valid checkpoint)
* :mod:`~xinet_rl.run.artifacts`: what every run writes the same way (``config.yaml``, final evaluation,
  ``summary.json``)
* :mod:`~xinet_rl.run.plan`: a training request checked before anything is written
* :mod:`~xinet_rl.run.trainer`: the XiSAC trainer behind ``xinet-train``
* :mod:`~xinet_rl.run.baseline`: stable-baselines3's ``SAC`` as a run directory of the same shape
* :mod:`~xinet_rl.run.latency`: the one batch-1 action latency timer
* :mod:`~xinet_rl.run.evaluation`: a saved policy's return, size and latency (``xinet-eval``)
* :mod:`~xinet_rl.run.video`: the environment with a video recorder, seen from its tracking camera
* :mod:`~xinet_rl.run.export`: a saved policy's deployable part as a standalone file (``xinet-export``)
* :mod:`~xinet_rl.run.bench`: training and inference throughput, timed in interleaved rounds (``xinet-bench``)
* :mod:`~xinet_rl.run.grid`: the ``--grid`` cross product and the run names of its points
* :mod:`~xinet_rl.run.cluster`: joining an existing Ray cluster, with a clear error where it cannot be joined
* :mod:`~xinet_rl.run.compare`: a comparison's runs, planned and trained on Ray (``xinet-compare``)
* :mod:`~xinet_rl.run.compare_report`: a comparison's ``results.json``, ``report.md`` and plots

The package imports none of them itself: the commands import only what they use, which keeps ``--help`` fast.
"""
