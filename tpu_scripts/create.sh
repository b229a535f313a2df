#!/usr/bin/env bash
# Creates a TPU VM or pod slice. Example: tpu_scripts/create.sh --name rj --type v4-32 --spot
source "$(dirname "$0")/common.sh"
parse_common "$@"
spot=()
if [[ "$TPU_SPOT" == 1 ]]; then spot=(--spot); fi
gcloud_tpu create "$TPU_NAME" --accelerator-type "$TPU_TYPE" --version "$TPU_VERSION" "${spot[@]}"
