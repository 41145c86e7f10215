#!/usr/bin/env bash
# Installs what camfleet needs on a Debian machine, and nothing when all is there.
#   - nats-server and ffmpeg from Debian's packages (needs root, or sudo)
#   - GStreamer's RTSP server for Python, the tests' stand-in camera
#     (test/fixtures/rtsp-server.py), also from Debian's packages
#   - the npm dependencies, from package-lock.json
# Safe to run again: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'camfleet setup: %s\n' "$*" >&2; }

# Debian packages, by the command each one provides.
declare -A APT_FOR=(
  [nats-server]=nats-server
  [ffmpeg]=ffmpeg
  [ffprobe]=ffmpeg
  [setpriv]=util-linux
  [chromium]=chromium # the tests' WebRTC peer that is not werift (test/camera-whip.test.ts)
  [openssl]=openssl # the TLS tests make their CA and certificates at test time (test/helpers/nats-secure.ts)
)
# Debian packages that provide no command of their own (libraries, plugins,
# introspection data): checked by their dpkg status.
APT_PKGS=(
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad
  python3-requests # the single worker's Python client flow (test/fixtures/legacy-client.py)
  opencv-doc # OpenCV's sample photographs and pedestrian clip vtest.avi: the object detector's tests (test/object-detector.test.ts)
)
missing=()
for pkg in "${APT_PKGS[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
for cmd in "${!APT_FOR[@]}"; do
  # nats-server lives in /usr/sbin, which is not on every user's PATH.
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${APT_FOR[$cmd]}")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  # Deduplicate: ffmpeg provides two commands.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    SUDO="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  # sudo resets the environment: pass the non-interactive settings through env.
  APT=($SUDO env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get)
  "${APT[@]}" update -qq
  "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

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
