#!/bin/bash
# The firewall soak (docs/soak.md): N random operations (default 10000) against
# the real envelope in network namespaces, checked after every step against the
# admin API, the kernel and packets. Runs as root. SEED=... fixes the seed;
# BACKEND=nftables drives --firewall nftables instead of iptables;
# otherwise a fresh one is printed. Exit status 1 on a mismatch, after printing
# the shortest reproducing prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
ops="${1:-10000}"
cargo build -q -p envelope -p envelope-soak
seed_args=()
[ -n "${SEED:-}" ] && seed_args=(--seed "$SEED")
exec target/debug/envelope-soak --ops "$ops" --backend "${BACKEND:-iptables}" "${seed_args[@]}"
