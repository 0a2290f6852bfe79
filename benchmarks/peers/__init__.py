"""Peers the benchmarks measure chainfleet against, run from outside chainfleet's own code.

Each module here drives one peer (a tool other people use for the same job) the way its own
documentation says, against the same sim-server as chainfleet in the same benchmark run. None of
them is a dependency of chainfleet or of its tests: ``benchmarks/peers/setup.sh`` installs them
(Bespoke Curator into its own venv, since it pins openai 2.x; LiteLLM into the benchmark's
environment), and a benchmark run without them says how to get them and runs chainfleet alone.
"""
