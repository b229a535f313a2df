#!/usr/bin/env bash
# Runs one reasonjax command on all workers at once (jax.distributed.initialize on each).
# Example: tpu_scripts/run.sh --name rj -- replicate alphamath --preset paper \
#            model.checkpoint=/data/Qwen2.5-Math-1.5B task.data_file=/data/gsm8k.jsonl
source "$(dirname "$0")/common.sh"
parse_common "$@"
if [[ ${#ARGS[@]} -eq 0 ]]; then
  echo "usage: run.sh [settings] -- <reasonjax arguments>" >&2
  exit 2
fi
command=$(printf '%q ' "${ARGS[@]}")
on_all_workers "cd $REMOTE_DIR && REASONJAX_DISTRIBUTED=1 .venv/bin/reasonjax $command"
