#!/bin/bash
# The whole test suite (the README's "run every test" command; .ci/run calls it):
# formatting, lints, every crate's tests (the firewall tests run real iptables
# inside network namespaces they create, so this runs as root), the demo script,
# a tiny benchmark run, the Debian package and a short firewall soak.
# Installs what the tests need only when it is missing, so a bare machine works.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in iptables-save:iptables ipset:ipset ip:iproute2 curl:curl setpriv:util-linux; do
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
command -v man >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db; }
command -v systemd-analyze >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Layers point down: no import cycle among envelope/src's top-level modules.
cargo run -q -p xtask -- layers >/dev/null
# Builds every binary the tests run (envelope, envelopectl, envelope-exec,
# envelope-soak) before the first test starts; no test builds one itself.
cargo test --workspace
ENVELOPE_DEMO_PORT=18880 bash scripts/demo.sh
# The benchmark, tiny and on the debug build, so it cannot rot (figures: scripts/bench.sh).
cargo build -q -p envelope -p envelopectl -p envelope-bench
target/debug/envelope-bench --sessions 3 --burst 4 --poisson-secs 1 --crash-held 4 --flood-secs 1 --flood-conns 4 --held 100 \
    --events-sessions 4 --events-block 2 --events-buffer 2000 --heads 200
# The Debian package: built from the debug build above, installed, checked, removed.
bash scripts/package-test.sh
# The firewall soak, short (docs/soak.md): a fixed seed, then a fresh one (printed).
cargo build -q -p envelope-soak
target/debug/envelope-soak --seed 13 --ops 200
target/debug/envelope-soak --ops 60
