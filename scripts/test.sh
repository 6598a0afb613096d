#!/bin/bash
# The whole test suite (the README's "run every test" command; .ci/run calls it):
# formatting, the dependency policy, lints, every crate's tests (the firewall
# tests run real iptables inside network namespaces they create, so this runs
# as root), 10 s of fuzzing per parser, the demo script, a tiny benchmark run,
# the Debian package, its licence listing and a short firewall soak.
# Installs what the tests need only when it is missing, so a bare machine works.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in iptables-save:iptables ipset:ipset nft:nftables ip:iproute2 curl:curl setpriv:util-linux; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
command -v websocat >/dev/null || cargo install -q --locked --root /usr/local websocat@1.14.1
command -v node >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; }
# envelope/tests/integration/browser.rs drives Debian's headless Chromium.
[ -x /usr/bin/chromium ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
# The Debian package (scripts/package-test.sh): cargo-deb (3.8.0 builds with rustc
# 1.85+), man for `man -l` of its pages, systemd-analyze to verify its unit.
command -v cargo-deb >/dev/null || cargo install -q --locked cargo-deb@3.8.0
# The dependency policy (deny.toml): cargo-deny, at the version it was written
# for. (The licence listing is regenerated with cargo-about by whoever changes
# the dependencies; CI only checks it covers them, with cargo tree.)
[ "$(cargo deny --version 2>/dev/null)" = "cargo-deny 0.20.2" ] \
    || cargo install -q --locked --force cargo-deny@0.20.2
command -v man >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db; }
command -v systemd-analyze >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }
# The fuzz targets (scripts/fuzz.sh, the same pin): cargo-fuzz runs libFuzzer on stable.
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz@0.13.2

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# Licences, duplicate versions and sources of every dependency (deny.toml). The
# advisory check needs its database from GitHub, which CI cannot reach.
cargo deny --locked check licenses bans sources
cargo clippy --workspace --all-targets -- -D warnings
# Layers point down: no import cycle among envelope/src's top-level modules.
cargo run -q -p xtask -- layers >/dev/null
# Builds every binary the tests run (envelope, envelopectl, envelope-exec,
# envelope-soak) before the first test starts; no test builds one itself.
cargo test --workspace
# Every parser that meets untrusted bytes, fuzzed briefly so that a regression
# shows here (the long runs and their figures: docs/security.md, "Fuzzing").
bash scripts/fuzz.sh 10
ENVELOPE_DEMO_PORT=18880 bash scripts/demo.sh
# The benchmark, tiny and on the debug build, so it cannot rot (figures: scripts/bench.sh).
cargo build -q -p envelope -p envelopectl -p envelope-bench
target/debug/envelope-bench --sessions 3 --burst 4 --poisson-secs 1 --crash-held 4 --flood-secs 1 --flood-conns 4 --held 100 \
    --events-sessions 4 --events-block 2 --events-buffer 4000 --heads 200
# The Debian package: built from the debug build above, installed, checked, removed.
bash scripts/package-test.sh
# The committed licence listing names exactly the crates the binaries compile
# in now (the package test built the checker).
target/debug/xtask licenses --check
# The firewall soak, short (docs/soak.md): a fixed seed, then a fresh one (printed).
cargo build -q -p envelope-soak
target/debug/envelope-soak --seed 13 --ops 200
target/debug/envelope-soak --ops 60
# The same against --firewall nftables (nft delete element/table, foreign tables).
target/debug/envelope-soak --seed 13 --ops 120 --backend nftables
