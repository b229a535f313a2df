#!/usr/bin/env bash
# Shared settings and helpers for the TPU scripts. Source it; do not run it.
#
# Settings come from flags or the environment:
#   --name / TPU_NAME            TPU VM or pod slice name        (default: reasonjax)
#   --zone / TPU_ZONE            zone                            (default: us-central2-b)
#   --project / TPU_PROJECT      GCP project                     (default: gcloud's current)
#   --type / TPU_TYPE            accelerator type, e.g. v4-32    (default: v4-8)
#   --version / TPU_VERSION      TPU VM software version         (default: tpu-ubuntu2204-base)
#   --spot                       create a spot (preemptible) slice
#   --dry-run                    print every command instead of running it
set -euo pipefail

TPU_NAME=${TPU_NAME:-reasonjax}
TPU_ZONE=${TPU_ZONE:-us-central2-b}
TPU_PROJECT=${TPU_PROJECT:-}
TPU_TYPE=${TPU_TYPE:-v4-8}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
TPU_SPOT=${TPU_SPOT:-0}
DRY_RUN=${DRY_RUN:-0}
REMOTE_DIR=${REMOTE_DIR:-reasonjax}
ARGS=()

parse_common() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) TPU_NAME=$2; shift 2 ;;
      --zone) TPU_ZONE=$2; shift 2 ;;
      --project) TPU_PROJECT=$2; shift 2 ;;
      --type) TPU_TYPE=$2; shift 2 ;;
      --version) TPU_VERSION=$2; shift 2 ;;
      --spot) TPU_SPOT=1; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; ARGS+=("$@"); break ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

# Runs a command, or prints it (shell-quoted) under --dry-run.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local quoted
    quoted=$(printf '%q ' "$@")
    printf '%s\n' "${quoted% }"
  else
    "$@"
  fi
}

gcloud_tpu() {
  local project=()
  if [[ -n "$TPU_PROJECT" ]]; then project=(--project "$TPU_PROJECT"); fi
  run gcloud compute tpus tpu-vm "$@" --zone "$TPU_ZONE" "${project[@]}"
}

# Runs a shell command on every worker of the slice (multi-host: all processes start).
on_all_workers() {
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$1"
}
