#!/usr/bin/env bash
# Debian packages the test suite uses: chromium (real-browser test), PostgreSQL (hub tests),
# systemd (systemd-analyze verify of the units), shellcheck (installer scripts) and nginx + openssl (the
# station's HTTPS proxy, tests/test_https_proxy.py).
# Installs them only when missing and when we are root; otherwise those tests skip with a reason.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)  # the PDF report test
command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root or no apt-get; tests needing ${need[*]} will be skipped" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
  for pkg in "${need[@]}"; do  # one at a time, so one missing package does not cost the others
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
      || echo "system-deps: could not install $pkg; the tests that need it will be skipped" >&2
  done
fi
exit 0
