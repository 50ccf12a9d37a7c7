"""Command-line tools: thin wrappers that parse, call the run layer (:mod:`xinet_rl.run`) and report. No command
imports another; what they share is :mod:`xinet_rl.cli.common`."""
