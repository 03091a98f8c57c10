#!/usr/bin/env bash
# Build the lab's container images (OCI archives, cached) and print their directory last.
#   DIR=$(tests/images/build.sh | tail -1)          # all: pause agnhost testpod cni-installer stockade
#   DIR=$(tests/images/build.sh pause testpod | tail -1)
# Env: STOCKADE_IMAGES_DIR (default /var/cache/stockade/images). See README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$HERE/build.py" "$@"
