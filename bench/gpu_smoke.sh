#!/usr/bin/env bash
# One inversion job on CUDA, end to end (c3 serve, a worker with C3_DEVICE=cuda, a c3 job on
# paper-cnn at 28x28), printing its step rate: for the day a GPU machine is available.
#
#   bench/gpu_smoke.sh [--steps 500] [--per-class 20] [--epochs 8]     (PYTHON=... to choose)
#
# Without a CUDA device that torch can see it stops at once, with one line on stderr and exit
# status 1: a worker asked for CUDA without one runs on the CPU and would measure that instead.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}

if [[ ! -x $python ]]; then
    echo "gpu_smoke: no Python at $python (make install, or set PYTHON)" >&2
    exit 1
fi
probe='import sys, torch; print(torch.__version__); sys.exit(0 if torch.cuda.is_available() else 3)'
if ! torch_version=$("$python" -c "$probe" 2>/dev/null); then
    echo "gpu_smoke: no CUDA device visible to torch (${torch_version:-torch not importable}):" \
        "nothing run" >&2
    exit 1
fi

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/bench/gpu_smoke.py" --device cuda "$@"
