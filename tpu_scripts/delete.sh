#!/usr/bin/env bash
# Deletes the TPU VM or pod slice. Example: tpu_scripts/delete.sh --name rj
source "$(dirname "$0")/common.sh"
parse_common "$@"
gcloud_tpu delete "$TPU_NAME" --quiet
