#!/bin/sh
# Certificates for deploy/compose/: a CA, one server certificate for nats-1,
# nats-2 and nats-3 (also used by the routes between them, so it allows
# clientAuth too), and one client certificate every camfleet process
# presents (the servers say `verify: true`). P-256, valid for 90 days.
# Written to ./tls, which is mounted read-only into the containers.
# EXTRA_SANS adds names to the server certificate, e.g. for deploy/k8s/:
#   EXTRA_SANS=DNS:nats.camfleet.svc,DNS:*.nats-headless.camfleet.svc.cluster.local ./make-certs.sh
#
# The keys are made readable by the containers' user (uid 10001) through
# mode 0644, since a plain user cannot chown to another uid: keep this
# directory on a host no one else logs into, or run as root to get 0600 files
# owned by 10001. In production, use your own CA and files owned by the
# service user (deploy/nats/cluster.conf, deploy/k8s/).
set -eu
cd "$(dirname "$0")"
mkdir -p tls
cd tls
days=90
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086 # $ec is several words on purpose
openssl req -x509 $ec -keyout ca-key.pem -out ca.pem -days "$days" -subj "/CN=camfleet compose CA" 2>/dev/null
printf 'subjectAltName=DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1%s\nextendedKeyUsage=serverAuth,clientAuth\n' "${EXTRA_SANS:+,$EXTRA_SANS}" > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  # shellcheck disable=SC2086
  openssl req $ec -keyout "$who-key.pem" -out "$who.csr" -subj "/CN=camfleet compose $who" 2>/dev/null
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$who.pem" -days "$days" -extfile "$who.ext" 2>/dev/null
  rm -f "$who.csr" "$who.ext"
done
rm -f ca.srl
openssl verify -CAfile ca.pem server.pem client.pem
chmod 0600 ca-key.pem
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 server-key.pem client-key.pem
  chmod 0600 server-key.pem client-key.pem
else
  chmod 0644 server-key.pem client-key.pem
fi
echo "make-certs: wrote $(pwd): ca.pem, server.pem, server-key.pem, client.pem, client-key.pem (ca-key.pem: keep it, or delete it)"
