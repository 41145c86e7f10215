#!/usr/bin/env bash
# Installs what running camfleet needs on a Debian machine, and nothing when all is there:
#   - nats-server, ffmpeg and setpriv (util-linux) from Debian's packages (needs root, or sudo)
#   - the npm dependencies, from package-lock.json
# What only the tests need (Chromium, openssl, GStreamer's RTSP server,
# python3-requests) is scripts/setup-test.sh, or `setup.sh --test`.
# Safe to run again: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'camfleet setup: %s\n' "$*" >&2; }
# shellcheck source=scripts/apt-install.sh
. scripts/apt-install.sh

# Debian packages, by the command each one provides.
declare -A APT_FOR=(
  [nats-server]=nats-server
  [ffmpeg]=ffmpeg
  [ffprobe]=ffmpeg
  [setpriv]=util-linux # children get a parent-death signal (runtime/infra/child-process.ts)
)
APT_PKGS=()
apt_install_missing

# npm dependencies: reinstall only when the lock file changed since the last install.
stamp=node_modules/.camfleet-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

# The compiled build bin/camfleet.js runs (dist/); skipped when already fresh.
node scripts/build.mjs || say "build failed: camfleet will run its sources through tsx"

if [ "${1:-}" = "--test" ]; then
  exec bash scripts/setup-test.sh --no-run-setup
fi
