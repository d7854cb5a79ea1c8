#!/usr/bin/env bash
# The main job on a new machine, offline, CPU only, a few minutes on 2 cores:
#   1. set up .venv (scripts/setup.sh),
#   2. build the tiny random mega2bart preset (MEGA encoder + BART decoder, offline tokenizer),
#   3. fine-tune it a few steps on the offline ACLSum papers (configs/tiny-aclsum.yaml),
#   4. evaluate it on 5 test papers (ROUGE-1/2/L/Lsum with bootstrap intervals),
#   5. summarise a whole ACLSum paper longer than the context (windows, then a summary of summaries).
# The tiny model is random-init and trained for seconds: its summaries are noise. The demo shows the
# pipeline end to end; real summaries need `--preset large` (Hub) and a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN="${RUN:-runs/demo}"

bash scripts/setup.sh
M2B=.venv/bin/mega2bart

echo "== 1/4 build the tiny preset -> $RUN/model"
$M2B build "$RUN/model" --preset tiny --overwrite --quiet

echo "== 2/4 train (configs/tiny-aclsum.yaml) -> $RUN/train"
rm -rf "$RUN/train"
$M2B train --config configs/tiny-aclsum.yaml --model "$RUN/model" --output-dir "$RUN/train" --quiet

echo "== 3/4 evaluate on 5 ACLSum test papers -> $RUN/eval"
$M2B eval "$RUN/train" --dataset aclsum --split test --limit 5 --output-dir "$RUN/eval" \
  --max-input-tokens 1024 --num-beams 2 --max-new-tokens 64 --min-new-tokens 16 --quiet

echo "== 4/4 summarise a long paper (1024-token windows, then a summary of summaries) -> $RUN/summaries.jsonl"
.venv/bin/python - "$RUN/paper.txt" <<'PY'
import sys
import datasets
from mega2bart.data import load_summarization_dataset
datasets.disable_progress_bars()
test = load_summarization_dataset("aclsum")[0]["test"]
longest = max(range(len(test)), key=lambda i: len(test[i]["document"]))
open(sys.argv[1], "w", encoding="utf-8").write(test[longest]["document"])
print(f"wrote {sys.argv[1]}: ACLSum paper {test[longest]['id']}, {len(test[longest]['document'].split()):,} words")
PY
rm -f "$RUN/summaries.jsonl"
$M2B summarize "$RUN/train" "$RUN/paper.txt" --output "$RUN/summaries.jsonl" \
  --max-input-tokens 1024 --window-overlap 128 --num-beams 2 --max-new-tokens 64 --min-new-tokens 16 --quiet
.venv/bin/python - "$RUN/summaries.jsonl" <<'PY'
import json, sys
record = json.loads(open(sys.argv[1], encoding="utf-8").readline())
windows = record["windows"]
print(f"{record['num_tokens']:,} tokens -> {sum(w['level'] == 0 for w in windows)} windows, {record['levels']} levels; "
      f"final summary ({len(record['summary'].split())} words) from windows {windows[-1]['sources']} of the level below")
PY

echo
echo "outputs:"
echo "  model          $RUN/model          (mega2bart info $RUN/model)"
echo "  trained model  $RUN/train          (train_config.yaml, metrics.json, checkpoint-*)"
echo "  evaluation     $RUN/eval           (eval_results.json, predictions.jsonl)"
echo "  summaries      $RUN/summaries.jsonl (one record per document, windows with token spans and sources)"
