#!/bin/bash
# Makes the insecure test TLS setup: a throw-away CA (its key is deleted at the
# end) and two localhost server certificates signed by it, each with a key of
# its own — `insecure-test-server` and its renewal `insecure-test-server-renewed`
# (for the certificate-reload tests) — all valid for 100 years.
# Usage: bash testdata/make-tls.sh
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/ca.key" -out insecure-test-ca.pem -days 36500 \
  -subj "/CN=Envelope INSECURE test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"

cat >"$work/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:192.0.2.1,IP:2001:db8::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
for name in insecure-test-server insecure-test-server-renewed; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$work/$name.csr" -subj "/CN=localhost"
  openssl x509 -req -in "$work/$name.csr" -CA insecure-test-ca.pem -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 36500 -sha256 \
    -extfile "$work/server.ext" -out "$name.pem"
done

chmod 0644 insecure-test-ca.pem insecure-test-server*.pem insecure-test-server*.key
openssl verify -CAfile insecure-test-ca.pem insecure-test-server.pem insecure-test-server-renewed.pem
