#!/usr/bin/env bash
# Issue 16's GPU measurements in one command, for a session lent a GPU through the device tool:
# Garg et al.'s model (12 x 256, d = 20, 41 points, batch 64) in bfloat16 with and without
# torch.compile and in float32 (TF32): steps/s and MFU (benchmarks/train_speed.py); then seconds
# of training to in-context learning at paper scale within BUDGET (benchmarks/time_to_icl.py).
# About 8 minutes on an H100 or H200 with the defaults.
#
# The device image has PyTorch with CUDA but not pydantic: carry its wheels. Once, here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5
# then run (device tool): command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout 600.
# Output goes to the terminal and to $OUT/gpu_check.txt. DEVICE=cpu STEPS=3 BUDGET=5 tries the
# plumbing on a machine without a GPU.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-100}
BUDGET=${BUDGET:-240}
LOG=${OUT:-/tmp}/gpu_check.txt
PYTHON=${PYTHON:-python3}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1

{
    echo "== $(date -u +%FT%TZ), device $DEVICE"
    if [ "$DEVICE" = cuda ]; then nvidia-smi -L; fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__)"
    for variant in "--precision bfloat16" "--precision bfloat16 --compile" "--precision float32"; do
        echo "== train_speed.py, garg_linear_regression, $variant"
        # shellcheck disable=SC2086  # the variant is several arguments
        "$PYTHON" benchmarks/train_speed.py --config garg_linear_regression --device "$DEVICE" \
            --steps "$STEPS" --warmup 30 $variant
    done
    echo "== time_to_icl.py, garg_linear_regression, bfloat16, budget $BUDGET s"
    "$PYTHON" benchmarks/time_to_icl.py --preset garg_linear_regression \
        --set "train.device=$DEVICE" --set train.precision=bfloat16 \
        --train-seeds 1 --eval-seeds 1 --budget "$BUDGET" --every 1000
} 2>&1 | tee "$LOG"
