#!/usr/bin/env bash
# Egress proxy benchmark (issue 6): a large download and many small requests through the
# proxy against direct loopback TCP, in the same run. Targets: >= 1 Gbit/s through the
# proxy, < 2 ms added per request.
#
#   bash bench/egress.sh                      # 1 GiB download, 1000 requests, best of 3
#   bash bench/egress.sh BYTES REQUESTS ROUNDS
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p nanoclaw-egress --example egress_bench
exec target/release/examples/egress_bench "$@"
