#!/usr/bin/env bash
# The peers of issue 23's benchmarks, outside chainfleet's dependencies (CI never runs this):
#
# - Bespoke Curator in its own venv, $CHAINFLEET_PEER_VENVS/curator (default /work/peer-venvs):
#   it pins openai 2.x, which chainfleet's openai>=3 excludes. benchmarks/rate_limits.py
#   --peer curator runs benchmarks/peers/curator_job.py with that venv's Python.
# - LiteLLM (its Router) into the Python running the benchmarks (PYTHON, default python3):
#   litellm accepts openai<4, so it sits beside chainfleet. benchmarks/routes.py --peer litellm.
#
# Both run offline in the benchmarks (LITELLM_LOCAL_MODEL_COST_MAP=True, Curator's telemetry
# and cache off, tiktoken's cache at the cl100k_base file LiteLLM bundles); nothing here is
# committed and no peer's code is copied into the repository.
#
#   benchmarks/peers/setup.sh            # both
#   benchmarks/peers/setup.sh curator    # or litellm
set -euo pipefail

VENVS="${CHAINFLEET_PEER_VENVS:-/work/peer-venvs}"
PYTHON="${PYTHON:-python3}"
what="${1:-all}"

if [[ "$what" == all || "$what" == curator ]]; then
    mkdir -p "$VENVS"
    if [[ ! -x "$VENVS/curator/bin/python" ]]; then
        python3 -m venv "$VENVS/curator"
    fi
    "$VENVS/curator/bin/pip" install -q bespokelabs-curator
    "$VENVS/curator/bin/python" -c \
        "from importlib.metadata import version as v; print('curator venv:', v('bespokelabs-curator'), 'openai', v('openai'))"
fi

if [[ "$what" == all || "$what" == litellm ]]; then
    "$PYTHON" -m pip install -q litellm
    "$PYTHON" -c "from importlib.metadata import version as v; print('litellm', v('litellm'), 'openai', v('openai'))"
fi
