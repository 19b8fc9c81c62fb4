#!/usr/bin/env bash
# The CUDA paths in one go: every task for one epoch on a tiny head of ../shared/data, a 2-GPU DDP run when
# there are 2+ GPUs, a QLoRA run (needs `pip install -e '.[gpu]'`), and the plan's predicted peak (the same
# arithmetic as `tunesmith plan`, kept in metrics.json `memory`) against the CUDA allocator's measured peak.
#   benchmarks/gpu_check.sh [ROWS]     # ROWS per training file, default 200
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU on this machine; nothing to check"
  exit 0
fi
ROWS=${1:-200}
DATA=../shared/data
W=$(mktemp -d)
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
csv() { head -n $((ROWS + 1)) "$DATA/$1" > "$W/$2"; echo "$W/$2"; }   # header + ROWS rows
jsonl() { head -n "$ROWS" "$DATA/$1" > "$W/$2"; echo "$W/$2"; }

run() {  # run NAME ARGS...: one `tunesmith train`, its exit code kept beside its log
  local name=$1; shift
  "$PY" -m tunesmith.cli train "$@" --epochs 1 --out "$W/$name" --overwrite > "$W/$name.log" 2>&1
  echo $? > "$W/$name.rc"
  echo "$name: exit $(cat "$W/$name.rc")"
}

INTENTS=$(csv intents/train.csv intents.csv)
run single_label "$INTENTS"
run multilabel "$(csv multilabel/train.csv multilabel.csv)" --task multilabel
run token "$(jsonl ner/train.jsonl ner.jsonl)" --task token
run embedding "$(csv sts/train.csv sts.csv)" --task embedding
run seq2seq "$(csv pairs/deu_eng_train.csv pairs.csv)" --task seq2seq --max-new-tokens 16
SFT=$(jsonl instructions/dolly_3k.jsonl dolly.jsonl)
run sft "$SFT" --task sft --max-length 256 --eval-generations 8
run qlora "$SFT" --task sft --strategy qlora --max-length 256 --eval-generations 8
if [ "$NGPU" -ge 2 ]; then
  run ddp_2gpu "$INTENTS" --nproc 2
  run fsdp_2gpu "$SFT" --task sft --strategy full --max-length 256 --eval-generations 8 --nproc 2 --shard full
fi

"$PY" - "$W" <<'PY'
import json, sys
from pathlib import Path

w = Path(sys.argv[1])
print(f"\n{'run':<13}{'exit':>5}{'train s':>9}{'plan MiB':>10}{'peak MiB':>10}{'peak/plan':>10}  test")
for rc in sorted(w.glob("*.rc")):
    name, m = rc.stem, w / rc.stem / "metrics.json"
    d = json.loads(m.read_text()) if m.exists() else {}
    mem, test = d.get("memory", {}), d.get("test", {})
    plan, peak = mem.get("predicted_peak_mib"), mem.get("peak_device_mib")
    ratio = f"{peak / plan:.2f}" if plan and peak else "-"
    shown = "  ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float))[:60]
    log = w / f"{name}.log"
    if not d and log.exists():  # the failure's last line
        shown = (log.read_text().strip().splitlines() or [""])[-1][:60]
    print(f"{name:<13}{rc.read_text().strip():>5}{d.get('train_seconds', 0):>9.1f}{plan or '-':>10}{peak or '-':>10}"
          f"{ratio:>10}  {shown}")
print(f"\nlogs and run folders: {w}")
PY
