# Sourced by setup.sh and setup-test.sh: installs the Debian packages that are
# missing. The caller sets APT_FOR (command -> package providing it) and
# APT_PKGS (packages without a command of their own, checked by dpkg status).
apt_install_missing() {
  local missing=() pkg cmd
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
  [ "${#missing[@]}" -gt 0 ] || return 0
  # Deduplicate: ffmpeg provides two commands.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    SUDO="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  # sudo resets the environment: pass the non-interactive settings through env.
  local APT=($SUDO env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get)
  "${APT[@]}" update -qq
  "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
