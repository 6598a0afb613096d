#!/bin/bash
# A self-contained run of the envelope on localhost: makes a key pair, starts the
# daemon (TLS with the insecure test certificate, no firewall changes), mints a
# token, holds a WebSocket with curl, shows the grant with envelopectl, revokes it,
# then stops the daemon with SIGTERM and checks it exited cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }

port=${ENVELOPE_DEMO_PORT:-8880}
cargo build -q -p envelope -p envelopectl -p example-signer
bin=target/debug
work=$(mktemp -d /tmp/envelope-demo.XXXXXX)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A signing key for the demo (private $work/demo.jwk, public $work/demo.jwk.pub)"
"$bin/example-signer" keygen --alg EdDSA --kid demo --out "$work/demo.jwk"

step "2. The envelope on https://localhost:$port (--firewall none: no rules are changed)"
"$bin/envelope" --listen-address "127.0.0.1:$port" \
    --cert testdata/insecure-test-server.pem --key testdata/insecure-test-server.key \
    --verify-key "$work/demo.jwk.pub" --machine localhost --subject ndt \
    --firewall none --max-clients 2 --timeout 30s \
    --admin-socket "$work/admin.sock" --metrics-address 127.0.0.1:0 2>"$work/envelope.log" &
daemon=$!
for _ in $(seq 100); do grep -q "listen-address listening" "$work/envelope.log" && break; sleep 0.1; done
grep -q "listen-address listening" "$work/envelope.log" || { cat "$work/envelope.log"; exit 1; }
sed 's/^/   envelope| /' "$work/envelope.log"

step "3. A token for this machine, as the locate service would issue"
url=$("$bin/example-signer" --private "$work/demo.jwk" --machine localhost --subject ndt --expiry 2m \
    --url "wss://localhost:$port/v0/envelope/access" 2>/dev/null)
token=${url#*access_token=}
echo "   ${url%%\?*}?access_token=<a ${#token}-byte JWT>"

step "4. A client holds the WebSocket (curl, offering the envelope subprotocol)"
# curl treats 101 as an interim answer, so its headers show only with -v.
curl -sS -v -N --http1.1 --cacert testdata/insecure-test-ca.pem --max-time 20 \
    -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13" \
    -H "Sec-WebSocket-Key: $(head -c 16 /dev/urandom | base64)" \
    -H "Sec-WebSocket-Protocol: net.measurementlab.envelope" \
    "${url/wss:/https:}" >"$work/client.out" 2>&1 &
client=$!
for _ in $(seq 100); do grep -q "^< HTTP/1.1 101" "$work/client.out" 2>/dev/null && break; sleep 0.1; done
grep '^< [A-Za-z]' "$work/client.out" | tr -d '\r' | sed 's/^/   client| /'
grep -q "^< HTTP/1.1 101" "$work/client.out"

step "5. The operator's view: envelopectl list"
"$bin/envelopectl" --socket "$work/admin.sock" list

step "6. The operator revokes it: the client gets a Close frame and its grant is gone"
"$bin/envelopectl" --socket "$work/admin.sock" revoke 127.0.0.1
wait "$client" || true
"$bin/envelopectl" --socket "$work/admin.sock" list

step "7. SIGTERM: sessions closed, grants revoked, clean exit"
kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
daemon=""
tail -n 3 "$work/envelope.log" | sed 's/^/   envelope| /'
echo "   envelope exited with status $status"
[ "$status" -eq 0 ]
echo
echo "Demo complete."
