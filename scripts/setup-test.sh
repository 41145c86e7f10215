#!/usr/bin/env bash
# Installs what the tests need on top of what running needs (scripts/setup.sh,
# which this runs first), from Debian's packages:
#   - chromium: the tests' WebRTC peer that is not werift (test/camera-whip.test.ts)
#   - openssl: the TLS tests make their CA and certificates at test time (test/helpers/nats-secure.ts)
#   - GStreamer's RTSP server for Python, the tests' stand-in camera (test/fixtures/rtsp-server.py)
#   - python3-requests: the single worker's Python client flow (test/fixtures/legacy-client.py)
#   - opencv-doc: photographs with people and the pedestrian clip vtest.avi (test/object-detector*.test.ts)
#   - zsh: the zsh completion script is loaded and run (test/cli-commands.test.ts)
# Safe to run again: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'camfleet setup-test: %s\n' "$*" >&2; }
# shellcheck source=scripts/apt-install.sh
. scripts/apt-install.sh

# `setup.sh --test` has run it already.
[ "${1:-}" = "--no-run-setup" ] || bash scripts/setup.sh

declare -A APT_FOR=(
  [chromium]=chromium
  [openssl]=openssl
  [zsh]=zsh
)
APT_PKGS=(
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad
  python3-requests
  opencv-doc # OpenCV's sample photographs and the pedestrian clip vtest.avi: the object detector's tests
)
apt_install_missing
