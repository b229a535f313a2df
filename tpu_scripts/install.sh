#!/usr/bin/env bash
# Copies this checkout to every worker and installs reasonjax with the TPU extra there.
# Example: tpu_scripts/install.sh --name rj
source "$(dirname "$0")/common.sh"
parse_common "$@"
repo=$(cd "$(dirname "$0")/.." && pwd)
archive="${TMPDIR:-/tmp}/reasonjax-$$.tar.gz"
run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
gcloud_tpu scp "$archive" "$TPU_NAME:reasonjax.tar.gz" --worker=all
on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf reasonjax.tar.gz -C $REMOTE_DIR && \
cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
run rm -f "$archive"
