#!/usr/bin/env bash
# Set up and run the main job: the demo pipeline on the embedded default store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/casegraph demo "$@"
# the store the demo wrote (its --store / -s, else the default)
store=casegraph-demo
while [ $# -gt 0 ]; do
  case "$1" in
    --store|-s) store=$2; shift 2 ;;
    --store=*) store=${1#--store=}; shift ;;
    *) shift ;;
  esac
done
bash scripts/demo_cypher.sh "$store"
