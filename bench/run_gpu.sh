#!/usr/bin/env bash
# The GPU demonstrations of the scale-out issue, in parts that each fit one 10-minute device command:
#   bash bench/run_gpu.sh small report      # 2 GPUs: the 7B shape on 1 GPU, ZeRO-2 and ZeRO-3 on 2 (losses, speed, memory)
#   bash bench/run_gpu.sh fast report       # 2 GPUs: the same with padding-free + varlen + Liger (needs `small` first)
#   bash bench/run_gpu.sh big-fast report   # 2 H200s: the 32B shape with issue 8's levers, 1 GPU against ZeRO-2 on 2
#   bash bench/run_gpu.sh big-fast-zero3 report  # ... and ZeRO-3 on 2
#   bash bench/run_gpu.sh big report        # 2 GPUs: ZeRO-3 LoRA of the 32B architecture, adapter check, merge check
#   bash bench/run_gpu.sh one-gpu report    # 1 GPU (H200): the 32B architecture with ZeRO-3, and with CPU offload
# Needs outputs/bench/assets (bench/prepare.py, on the CPU machine) and .gpu-wheels (../shared/gpu-wheels) carried.
# Results accumulate in outputs/bench/results.jsonl (kept while the machine stays warm); `report` writes RESULTS.md,
# results.jsonl and this run's log into $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
export TORCH_CUDA_ARCH_LIST=9.0  # the image's "9.0a" breaks DeepSpeed's just-in-time op builds
SITE=outputs/bench/site
if [ ! -f "$SITE/.installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu-wheels/*.whl && touch "$SITE/.installed"
fi
export PYTHONPATH="$PWD/$SITE:$PWD"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
B="python3 bench/scale_out.py"
SMALL="${SMALL:-qwen2.5-7b}"  # the shape of `small` and `fast` (SMALL=qwen2.5-1.5b: a quicker comparison)
S="${SMALL#qwen2.5-}"
# issue 8's levers for the 32B shape on a 141 GB H200 (bench/README.md): padding-free + varlen, Liger, 30 % of layers
FAST32="--override compute.padding_free=true --override compute.liger=true --override compute.gradient_checkpointing=true
        --override compute.checkpoint_fraction=0.3"
failed=0
step() { echo "=== $*"; "$@" || { echo "=== FAILED: $*"; failed=1; }; }

for part in "$@"; do
  case "$part" in
    small)
      nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
      step $B make-model --arch "$SMALL"
      step $B train --name "$S-1gpu" --arch "$SMALL" --compute gpu --deepspeed none
      step $B train --name "$S-zero2-2gpu" --arch "$SMALL" --compute gpu2 --deepspeed zero2
      step $B train --name "$S-zero3-2gpu" --arch "$SMALL" --compute gpu2 --deepspeed zero3
      ;;
    fast)  # issue 8's levers (padding-free micro-batches with varlen attention, Liger) on 1 GPU and ZeRO-2 on 2
      fast="--override compute.padding_free=true --override compute.liger=true"
      step $B train --name "$S-fast-1gpu" --arch "$SMALL" --compute gpu --deepspeed none $fast
      step $B train --name "$S-fast-zero2-2gpu" --arch "$SMALL" --compute gpu2 --deepspeed zero2 $fast
      ;;
    big)
      step $B train --name 32b-zero3-2gpu --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed zero3 --steps 4
      step $B merge-check --name 32b-zero3-2gpu
      ;;
    big-fast)  # issue 8's levers on the 32B shape (H200s): one GPU against ZeRO-2 on two, the same settings
      step $B train --name 32b-fast-1gpu --arch qwen2.5-32b --random-init --compute gpu --deepspeed none $FAST32 --steps 6
      step $B train --name 32b-fast-zero2-2gpu --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed zero2 $FAST32 \
        --steps 6
      ;;
    big-fast-long)  # big-fast over 16 steps: step times vary with the sequences drawn, 5 timed steps are noisy
      step $B train --name 32b-fast-1gpu-16 --arch qwen2.5-32b --random-init --compute gpu --deepspeed none $FAST32 --steps 16
      step $B train --name 32b-fast-zero2-2gpu-16 --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed zero2 \
        $FAST32 --steps 16
      ;;
    big-fast-zero3)  # ... and ZeRO-3 on two (after big-fast, for the ratio)
      step $B train --name 32b-fast-zero3-2gpu --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed zero3 $FAST32 \
        --steps 6
      ;;
    big-auto)  # what deepspeed=auto picks for the 32B shape on these two GPUs (ZeRO-2 where 61 GiB + headroom fit)
      step $B train --name 32b-auto-2gpu --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed auto --steps 4
      ;;
    one-gpu)
      step $B train --name 32b-zero3-1gpu --arch qwen2.5-32b --random-init --compute gpu --deepspeed zero3 --steps 3
      step $B train --name 32b-zero3-offload-1gpu --arch qwen2.5-32b --random-init --compute gpu \
        --deepspeed zero3_offload --steps 2
      step $B merge-check --name 32b-zero3-1gpu
      ;;
    report)
      step $B report --out "$OUT"
      ;;
    *) echo "unknown part: $part (small | fast | big-fast | big-fast-long | big-fast-zero3 | big | big-auto | one-gpu | report)"; exit 2 ;;
  esac
done
exit $failed
