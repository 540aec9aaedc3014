#!/usr/bin/env bash
# Installs the system programs the test suite runs for real (it never fakes them):
#   nix-bin    Debian's Nix 2.8, the real client the end-to-end tests push and substitute with
#   zstd, xz   to check the uploader's compressed NARs with the reference tools
#   chromium   a real headless browser that renders the landing page (test/e2e/landing.test.ts)
#   python3-yaml  the YAML parser the workflow lint reads .github/workflows with
#   mmdebstrap    builds the Debian chroots of the Nix version matrix (test/e2e/nix-versions.ts:
#                 Nix 2.8, 2.26 and 2.34 from bookworm, trixie and forky)
#   nginx      serves a binary cache directory over HTTP for `uploader import` (test/e2e/import.test.ts),
#              as an anonymous S3/MinIO bucket would; never started as a system service
#   sudo       the GitHub Action's path for a runner user the Nix daemon does not trust: it edits
#              the system's nix.conf with `sudo -n` (test/e2e/action-daemon.test.ts)
# Runs before `npm test`; does nothing when everything is already there.
set -euo pipefail

missing=()
command -v nix-store >/dev/null 2>&1 || missing+=(nix-bin)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
[ -x /usr/bin/mmdebstrap ] || missing+=(mmdebstrap)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/sudo ] || missing+=(sudo)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} (needed by the end-to-end tests)" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "error: ${missing[*]} missing and not root: install them with apt-get (Debian/Ubuntu) and rerun" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's nginx package would start a system nginx on port 80: a policy-rc.d that forbids
# starting services is put in place for the install (unless one exists) and removed after.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && own_policy=1
  trap '[ -n "$own_policy" ] && $sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -q
$sudo apt-get install -y -q "${missing[@]}"
