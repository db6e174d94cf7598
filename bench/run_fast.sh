#!/usr/bin/env bash
# Issue 18's device runs (one GPU): the product path (compute=auto, the stage worker) against plain TRL padded, and
# EM-eval generation. Each part fits one 10-minute device command; results land in $OUT (bench/results when unset).
#   bash bench/run_fast.sh 7b gen        # 7B shape: EM-like and SGTR-like mixes; generation engines
#   bash bench/run_fast.sh 32b           # 32B shape: both mixes
#   bash bench/run_fast.sh gen gen32     # EM-eval generation engines, 7B and 32B shapes
#   bash bench/run_fast.sh genprof newtf genprof  # the default engine profiled, with the machine's transformers, then
#                                        # with the wheels in .gpu-extra (a newer transformers) for the parts after it
# Needs outputs/bench/assets (bench/prepare.py, on the CPU machine) and .gpu-wheels (../shared/gpu-wheels) carried.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false TORCH_CUDA_ARCH_LIST=9.0
SITE="${SGTR_EM_GPU_SITE:-$(python3 -c "import tempfile; print(tempfile.gettempdir())")/site}"  # the wheels, installed once per machine
if [ ! -f "$SITE/.installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu-wheels/*.whl && touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE:$PWD"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
F="python3 bench/fast_default.py"
# continuous-batching settings tried beside transformers' own choice (the engine's knobs: ContinuousBatchingConfig)
CB_SWEEP='[{"use_cuda_graph": true}, {"max_batch_tokens": 16384, "max_requests_per_batch": 1024},
 {"use_async_batching": true}, {"use_cuda_graph": true, "max_batch_tokens": 16384, "max_requests_per_batch": 1024},
 {"default_compile_level": 1}]'
failed=0
TAG=""  # output-name suffix of the parts run after `newtf`
step() { local t=$1; shift; echo "=== $* ($(date +%T))"; timeout "$t" "$@" || { echo "=== FAILED ($?): $*"; failed=1; }; }
for part in "$@"; do
  case "$part" in
    tiny) step 120 $F --shape tiny --mix em --steps 4 --warmup 1 --skip-baseline --out "$OUT/fast_tiny.json" ;;
    7b)
      step 200 $F --shape qwen2.5-7b --mix em --steps 16 --warmup 3 --out "$OUT/fast_7b_em$TAG.json"
      step 240 $F --shape qwen2.5-7b --mix sgtr --steps 8 --warmup 2 --baseline-micro 4 --out "$OUT/fast_7b_sgtr$TAG.json"
      ;;
    32b|32b-em|32b-sgtr)  # 32b: both mixes
      [ "$part" = 32b-sgtr ] || step 260 $F --shape qwen2.5-32b --mix em --steps 10 --warmup 2 --out "$OUT/fast_32b_em$TAG.json"
      [ "$part" = 32b-em ] || step 300 $F --shape qwen2.5-32b --mix sgtr --steps 5 --warmup 1 --baseline-micro 4 \
        --out "$OUT/fast_32b_sgtr$TAG.json"
      ;;
    noliger)  # the memory model without liger-kernel (no logits: TRL's fused LM head): predicted against measured peaks
      step 200 $F --shape qwen2.5-7b --mix sgtr --steps 4 --warmup 1 --skip-baseline --override compute.liger=false \
        --out "$OUT/fast_7b_sgtr_noliger$TAG.json"
      step 300 $F --shape qwen2.5-32b --mix sgtr --steps 3 --warmup 1 --skip-baseline --override compute.liger=false \
        --out "$OUT/fast_32b_sgtr_noliger$TAG.json"
      ;;
    noliger-check)  # the 7B line above again, at the budget of the memory model calibrated on it (NO_LIGER_ACTIVATIONS)
      step 200 $F --shape qwen2.5-7b --mix sgtr --steps 4 --warmup 1 --skip-baseline --override compute.liger=false \
        --out "$OUT/fast_7b_sgtr_noliger_calibrated$TAG.json"
      ;;
    gen)  # 7B: naive, the old fixed batch of 64, the default engine (batch fitted to memory), continuous batching
      step 300 python3 bench/generation_throughput.py --shape qwen2.5-7b --tokenizer outputs/bench/assets/tokenizer \
        --samples 100 --naive-prompts 2 --framework-prompts 64 --batch-size 64 --max-new-tokens 128 \
        --default-lengths 128,512 --continuous --out "$OUT/gen_7b$TAG.json"
      ;;
    gen32)  # 32B: the default engine at the protocol's 512 new tokens (the memory model's batch on this card)
      step 280 python3 bench/generation_throughput.py --shape qwen2.5-32b --tokenizer outputs/bench/assets/tokenizer \
        --samples 25 --naive-prompts 1 --framework-prompts 64 --batch-size 64 --max-new-tokens 64 \
        --default-lengths 512 --out "$OUT/gen_32b$TAG.json"
      ;;
    genstatic)  # the default engine with transformers' dynamic KV cache (the default) against a static one
      step 420 python3 bench/generation_throughput.py --shape qwen2.5-7b --tokenizer outputs/bench/assets/tokenizer \
        --samples 100 --naive-prompts 1 --framework-prompts 64 --batch-size 64 --max-new-tokens 128 \
        --default-lengths 128,512 --static-cache --out "$OUT/gen_7b_static.json"
      ;;
    genstatic2)  # a static KV cache at the batch the default picks (the memory model counting the allocator's cache)
      step 300 python3 bench/generation_throughput.py --shape qwen2.5-7b --tokenizer outputs/bench/assets/tokenizer \
        --samples 100 --naive-prompts 1 --framework-prompts 64 --batch-size 64 --max-new-tokens 128 \
        --default-lengths 128 --static-lengths 128,512 --out "$OUT/gen_7b_static2.json"
      ;;
    gensweep)  # fixed padded batches; continuous batching's knobs (ContinuousBatchingConfig) beside its own choice
      step 570 python3 bench/generation_throughput.py --shape qwen2.5-7b --tokenizer outputs/bench/assets/tokenizer \
        --samples 100 --naive-prompts 2 --framework-prompts 64 --continuous --max-new-tokens 128 --batch-size 64 \
        --padded-sweep 200,800 --cb-sweep "$CB_SWEEP" --out "$OUT/gen_7b_sweep.json"
      ;;
    genprof)  # the default engine at 128 and 512 new tokens, then one call of 32 under torch.profiler
      step 300 python3 bench/generation_throughput.py --shape qwen2.5-7b --tokenizer outputs/bench/assets/tokenizer \
        --samples 100 --naive-prompts 1 --framework-prompts 64 --batch-size 64 --max-new-tokens 128 \
        --default-lengths 128 --profile 32 --out "$OUT/gen_7b_profile$TAG.json"
      ;;
    varlen)  # padding-free packed rows through sgtr_varlen = each sequence alone (the CUDA kernel, this transformers)
      step 200 python3 bench/varlen_check.py --shape qwen2.5-1.5b --out "$OUT/varlen_check$TAG.json"
      ;;
    newtf)  # the parts after this one import the wheels in .gpu-extra first (a newer transformers than the machine's)
      EXTRA="$SITE-extra"
      [ -f "$EXTRA/.installed" ] || { python3 -m pip install -q --no-index --no-deps --no-compile --target "$EXTRA" \
        .gpu-extra/*.whl && touch "$EXTRA/.installed"; }
      export PYTHONPATH="$EXTRA:$PYTHONPATH"
      TAG="_tf$(python3 -c 'import transformers; print(transformers.__version__)')"
      echo "=== newtf: transformers ${TAG#_tf}"
      ;;
    *) echo "unknown part: $part (tiny | 7b | 32b | gen | gen32 | genstatic | genstatic2 | gensweep | genprof | varlen | noliger | noliger-check | 32b-em | 32b-sgtr | newtf)"; exit 2 ;;
  esac
done
exit $failed
