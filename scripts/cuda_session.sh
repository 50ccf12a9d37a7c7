#!/usr/bin/env bash
# All GPU checks in one call: the checks of scripts/cuda_check.py, xinet-bench on the
# GPU, and a short training run that is stopped and resumed. Writes everything under ${OUT:-cuda_out}.
#   bash scripts/cuda_session.sh
set -uo pipefail
OUT=${OUT:-cuda_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 170 python scripts/cuda_check.py --json "$OUT/check.json" 2>&1 | grep -v -i "warn" | tee "$OUT/check.log"
if [ -z "${SKIP_BENCH:-}" ]; then
  timeout 170 python -m xinet_rl.cli.bench --device cuda --steps 200 --repeats 3 --json "$OUT/bench_cuda.json" 2>&1 \
      | grep -v -i "warn" | tee "$OUT/bench.log"
fi
RUN="$OUT/halfcheetah_short"
SHORT=(--set learning_starts=2000 --set ofenet_pretrain_steps=2000 --set checkpoint_freq=3000 --set eval_freq=3000)
( time timeout 100 python -m xinet_rl.cli.train --env HalfCheetah-v4 --device cuda --seed 0 --total-steps 7000 \
    --out "$RUN" --no-progress "${SHORT[@]}" ) > "$OUT/train.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/train.log"
( time timeout 50 python -m xinet_rl.cli.train --resume "$RUN" --total-steps 9000 --no-progress ) > "$OUT/resume.log" 2>&1
echo "resume rc=$?" | tee -a "$OUT/resume.log"
ls -R "$RUN" > "$OUT/run_files.txt" 2>&1
cp "$RUN"/*.json "$RUN"/*.csv "$RUN"/*.yaml "$OUT/" 2>/dev/null
rm -rf "$RUN"  # the checkpoints and replay buffer stay on the machine
tail -n 5 "$OUT/train.log" "$OUT/resume.log"
