#!/usr/bin/env bash
# Issue 22: the CPU default (`python -m sgtr_em.train`, no arguments) quiet, then beside N busy processes (default 4),
# each run in a fresh output folder (nothing reused but the converted model). Needs the machine to itself.
# SGTR_EM_DATA_DIR: the data (../shared/data when unset, as the README runs it).
#   bash bench/cpu_load.sh [N]    -> bench/results/cpu_load.json (wall times, the ratio, the machine)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-4}"
PY="${PY:-.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
MODELS="${SGTR_EM_CACHE_DIR:-outputs/cache}/models"
[ -d "$MODELS" ] || { echo "no converted model in $MODELS: run the default once first (make run)"; exit 2; }
MODELS="$(cd "$MODELS" && pwd)"
export SGTR_EM_DATA_DIR="$(cd "${SGTR_EM_DATA_DIR:-../shared/data}" && pwd)"  # as the README runs it
one() {  # $1: a label; prints the wall seconds of one default run in its own output folder
  mkdir -p "$WORK/$1/cache" && ln -s "$MODELS" "$WORK/$1/cache/models"
  local start=$SECONDS
  SGTR_EM_OUTPUT_DIR="$WORK/$1" SGTR_EM_CACHE_DIR="$WORK/$1/cache" "$PY" -m sgtr_em.train > "$WORK/$1.log" 2>&1 \
    || { tail -20 "$WORK/$1.log" >&2; exit 1; }
  echo $((SECONDS - start))
}
quiet=$(one quiet)
echo "quiet: ${quiet}s"
for _ in $(seq "$N"); do python3 -c "while True: pass" & done
loaded=$(one loaded)
kill $(jobs -p)
echo "beside $N busy processes: ${loaded}s"
mkdir -p bench/results
python3 - "$quiet" "$loaded" "$N" <<'EOF'
import json, os, platform, sys, time
quiet, loaded, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = {"command": "bash bench/cpu_load.sh %d" % n, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
       "machine": platform.processor() or platform.machine(), "busy_processes": n,
       "quiet_s": quiet, "loaded_s": loaded, "ratio": round(loaded / quiet, 2)}
json.dump(out, open("bench/results/cpu_load.json", "w"), indent=2)
print(json.dumps(out))
EOF
