#!/usr/bin/env bash
# Secrets benchmark (issue 12):
# 1. the per-request cost of TLS interception (secret substitution) against a plain
#    CONNECT tunnel through the same proxy, in one run: a request on a new connection
#    (CONNECT + TLS handshake + GET) and one on an open keep-alive connection, each way;
# 2. the added start-up cost of a tool with one placeholder secret against none (needs the
#    runner's secret delivery: see the TODO below).
#
#   bash bench/secrets.sh                    # 200 requests each way, best of 3
#   bash bench/secrets.sh REQUESTS ROUNDS
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p nanoclaw-egress --example secrets_bench
"$TARGET/release/examples/secrets_bench" "$@"

# TODO(integrator, issue 12): start-up cost of one placeholder secret vs none, once
# `nanoclaw run` delivers secrets: a hyperfine run like bench/egress.sh's, e.g.
#   hyperfine -N --warmup 10 --runs "${RUNS:-100}" \
#     -n none   "$NANOCLAW run --allow 127.0.0.1:9 -- /bin/true" \
#     -n secret "$NANOCLAW run --policy <a policy whose tool has one placeholder secret \
#                from env:BENCH_TOKEN, hosts 127.0.0.1:9> -- /bin/true"
# and print the difference of the medians (and the ratio).
