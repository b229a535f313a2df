#!/usr/bin/env bash
# Copies a run directory back from worker 0 (the process that writes reports).
# Example: tpu_scripts/fetch.sh --name rj runs/alphamath-paper ./runs/
source "$(dirname "$0")/common.sh"
parse_common "$@"
if [[ ${#ARGS[@]} -ne 2 ]]; then
  echo "usage: fetch.sh [settings] <remote run dir> <local dir>" >&2
  exit 2
fi
run mkdir -p "${ARGS[1]}"
gcloud_tpu scp --recurse "$TPU_NAME:$REMOTE_DIR/${ARGS[0]}" "${ARGS[1]}" --worker=0
