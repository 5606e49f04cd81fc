#!/usr/bin/env bash
# Remove what scripts/install.sh installed. The results (database, images), the models, the config
# and the service user are KEPT unless --purge is given: screening records must not vanish with
# the software. Back them up first (docs/admin-guide.md, "Backup and restore").
#
#   sudo scripts/uninstall.sh [--role device|hub] [--purge] [--dry-run] [--prefix DIR]
set -euo pipefail

ROLE=device
PREFIX=""
DRY_RUN=0
PURGE=0
APP_DIR=/opt/smearscope

while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE="$2"; shift 2 ;;
    --prefix) PREFIX="${2%/}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
case "$ROLE" in device|hub) ;; *) die "--role must be device or hub" ;; esac
[ -z "$PREFIX" ] || [ "${PREFIX:0:1}" = / ] || PREFIX="$(pwd)/$PREFIX"
if [ "$DRY_RUN" = 0 ] && [ -z "$PREFIX" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0), or use --dry-run / --prefix DIR"
fi
R="$PREFIX"
if [ "$ROLE" = device ]; then
  USER_NAME=smearscope STATE_DIR=/var/lib/smearscope WRAPPER=smearscope
  UNITS=(smearscope.service smearscope-backup.timer smearscope-backup.service smearscope-https-renew.timer smearscope-https-renew.service)
  CONF_FILES=(/etc/smearscope/config.toml /etc/smearscope/environment)
else
  USER_NAME=smearscope-hub STATE_DIR=/var/lib/smearscope-hub WRAPPER=smearscope-hub
  UNITS=(smearscope-hub.service)
  CONF_FILES=(/etc/smearscope/hub.env)
fi

say "1. stop and disable ${UNITS[*]}"
for u in "${UNITS[@]}"; do
  if [ -n "$PREFIX" ]; then
    if [ -e "$R/etc/systemd/system/$u" ]; then
      run systemctl --root="$R" disable "$u" 2>&1 | sed 's/^/  /' || true
    fi
  elif [ -d /run/systemd/system ] || [ "$DRY_RUN" = 1 ]; then
    run systemctl disable --now "$u" || true
  fi
done

say "2. unit files, command wrapper"
for u in "${UNITS[@]}"; do run rm -f "$R/etc/systemd/system/$u"; done
run rm -f "$R/usr/local/bin/$WRAPPER"
[ -z "$PREFIX" ] && [ -d /run/systemd/system ] && run systemctl daemon-reload
if [ "$ROLE" = device ] && [ -e "$R/etc/nginx/sites-available/smearscope" ]; then
  # the HTTPS proxy's site (scripts/station-https.sh); nginx itself stays, the certificates stay in /etc/smearscope/tls
  run rm -f "$R/etc/nginx/sites-enabled/smearscope" "$R/etc/nginx/sites-available/smearscope"
  if [ -z "$PREFIX" ] && [ -d /run/systemd/system ] && systemctl is-active --quiet nginx; then
    run systemctl reload nginx || true
  fi
fi

say "3. code and virtualenv in $APP_DIR"
OTHER=smearscope-hub.service
[ "$ROLE" = hub ] && OTHER=smearscope.service
if [ -e "$R/etc/systemd/system/$OTHER" ]; then
  echo "  kept: $OTHER is still installed and uses $APP_DIR"
else
  run rm -rf "$R$APP_DIR"
fi

if [ "$PURGE" = 1 ]; then
  say "4. --purge: data, config and the $USER_NAME user"
  run rm -rf "$R$STATE_DIR"
  [ "$ROLE" = device ] && run rm -rf "$R/var/backups/smearscope"
  for f in "${CONF_FILES[@]}"; do run rm -f "$R$f"; done
  [ "$ROLE" = device ] && run rm -rf "$R/etc/smearscope/tls"
  run rmdir --ignore-fail-on-non-empty "$R/etc/smearscope" 2>/dev/null || true
  if [ -z "$PREFIX" ] && id -u "$USER_NAME" >/dev/null 2>&1; then run userdel "$USER_NAME"; fi
else
  say "4. kept: $STATE_DIR (results, images, models), /var/backups/smearscope, /etc/smearscope, user $USER_NAME (--purge removes them)"
fi
say "done"
