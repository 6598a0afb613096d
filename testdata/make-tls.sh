#!/bin/bash
# Makes the insecure test TLS setup: a throw-away CA (its key is deleted at the
# end) and a localhost server certificate signed by it, both valid for 100 years.
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

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout insecure-test-server.key -out "$work/server.csr" -subj "/CN=localhost"

cat >"$work/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:192.0.2.1,IP:2001:db8::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in "$work/server.csr" -CA insecure-test-ca.pem -CAkey "$work/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 36500 -sha256 \
  -extfile "$work/server.ext" -out insecure-test-server.pem

chmod 0644 insecure-test-ca.pem insecure-test-server.pem insecure-test-server.key
openssl verify -CAfile insecure-test-ca.pem insecure-test-server.pem
