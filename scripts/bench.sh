#!/bin/bash
# Builds the release binaries and runs the benchmark (as root: it creates network
# namespaces; it never touches this machine's own firewall). Figures are printed
# as ratios against the Go original's firewall sequence measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v iptables-save >/dev/null && command -v ip >/dev/null && command -v ipset >/dev/null &&
    command -v nft >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables ipset nftables iproute2
}
cargo build -q --release -p envelope -p envelopectl -p envelope-bench
exec target/release/envelope-bench "$@"
