#!/usr/bin/env bash
# smearscope installer: one command from a fresh Raspberry Pi OS (Bookworm, 64-bit), a Jetson
# (JetPack) or a Debian/Ubuntu machine to a running station that comes back by itself after a power cut.
# A screening aid for trained staff, not a diagnosis.
#
#   sudo scripts/install.sh                      # the device (camera station)
#   sudo scripts/install.sh --role hub           # the central sync hub (gunicorn; PostgreSQL)
#   scripts/install.sh --dry-run                 # print every action, change nothing
#   scripts/install.sh --prefix /tmp/root ...    # act under a root prefix (tests, image builds)
#
# The device's page is served over HTTPS by nginx (scripts/station-https.sh: the station's own CA and
# certificate, or the clinic's with --tls-cert/--tls-key); the daemon listens on 127.0.0.1 behind it.
#
# Safe to run twice: an existing user, venv, config (and its secret key), admin account and models
# are kept; the code and the unit files are updated and the service restarted.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROLE=device
PLATFORM=auto
PREFIX=""
DRY_RUN=0
APP_DIR=/opt/smearscope
VENV=""
PYTHON=python3
PIP_ARGS=""
WHEELHOUSE=""
ADMIN_USER="admin"
ADMIN_PASSWORD_FILE=""
CAMERA=""
WEB_HOST=""
WEB_PORT=8080
HTTPS=1
HTTPS_PORT=443
HTTP_PORT=80
TLS_CERT=""
TLS_KEY=""
TLS_CA=""
TLS_RENEW=0
APT=1
START=1
USER_NAME=smearscope
CONF_DIR=/etc/smearscope
STATE_DIR=/var/lib/smearscope
UNIT_DIR=/etc/systemd/system
BIN_DIR=/usr/local/bin
REUSE_VENV=0
MODELS_FROM=""
NOTES=()

usage() {
  cat <<EOF
usage: $0 [options]
  --role device|hub        what to install (default: device)
  --platform auto|pi|jetson|generic
                           auto: Raspberry Pi from /proc/device-tree/model, Jetson from /etc/nv_tegra_release
  --dry-run                print each action, change nothing
  --prefix DIR             act under DIR as the root (no apt, users, chown or systemctl start)
  --venv DIR               use this existing virtualenv as is (no venv creation, no pip)
  --python PY              interpreter for the new venv (default: python3; needs 3.11+)
  --pip-args "ARGS"        extra pip arguments
  --wheelhouse DIR         install offline from wheels in DIR, made by scripts/wheelhouse.sh
  --admin-user NAME        first admin account (default: admin)
  --admin-password-file F  its password (default: \$SMEARSCOPE_ADMIN_PASSWORD, else generated and shown once)
  --camera SOURCE          replay|opencv|picamera2|jetson (default: from the platform)
  --models-from DIR        install the bundles in DIR (its DEFAULT, else all; default: the repo's models/)
  --host H --port P        the daemon's address (default: 127.0.0.1:8080 behind HTTPS; 0.0.0.0:8080 with --no-https)
  --no-https               no nginx: the daemon serves plain HTTP on the network itself
  --https-port P --http-port P
                           nginx ports (default: 443, and 80 redirecting to HTTPS)
  --tls-cert F --tls-key F the clinic's certificate (PEM, full chain) and key instead of the station's own
  --tls-ca F               the clinic CA certificate tablets download from http://STATION/station-ca.crt
  --tls-renew              issue a new station server certificate now (the station CA is kept)
  --no-apt                 do not install Debian packages
  --no-start               enable the service but do not (re)start it
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE="$2"; shift 2 ;;
    --platform) PLATFORM="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --prefix) PREFIX="${2%/}"; shift 2 ;;
    --venv) VENV="$2"; REUSE_VENV=1; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --pip-args) PIP_ARGS="$2"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --admin-user) ADMIN_USER="$2"; shift 2 ;;
    --admin-password-file) ADMIN_PASSWORD_FILE="$2"; shift 2 ;;
    --camera) CAMERA="$2"; shift 2 ;;
    --models-from) MODELS_FROM="$(cd "$2" && pwd)"; shift 2 ;;
    --host) WEB_HOST="$2"; shift 2 ;;
    --port) WEB_PORT="$2"; shift 2 ;;
    --no-apt) APT=0; shift ;;
    --no-start) START=0; shift ;;
    --no-https) HTTPS=0; shift ;;
    --https-port) HTTPS_PORT="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --tls-cert) TLS_CERT="$(realpath "$2")"; shift 2 ;;
    --tls-key) TLS_KEY="$(realpath "$2")"; shift 2 ;;
    --tls-ca) TLS_CA="$(realpath "$2")"; shift 2 ;;
    --tls-renew) TLS_RENEW=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
# Run a command, or show it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# A step that needs the real system (not a --prefix tree): show why it is skipped.
host_only() {
  if [ -n "$PREFIX" ]; then printf '  skip (--prefix): %s\n' "$*"; return 1; fi
  return 0
}
# write_file PATH MODE < content  (atomic: temp file + rename)
write_file() {
  local dest="$1" mode="$2"
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ write %s (mode %s)\n' "$dest" "$mode"
    cat >/dev/null
    return
  fi
  local tmp
  tmp="$(mktemp "$(dirname "$dest")/.tmp-install.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
}
set_owner() {  # set_owner OWNER PATH...
  local owner="$1"; shift
  if [ -n "$PREFIX" ]; then printf '  skip (--prefix): chown %s %s\n' "$owner" "$*"; return; fi
  run chown "$owner" "$@"
}

case "$ROLE" in device|hub) ;; *) die "--role must be device or hub" ;; esac
case "$PLATFORM" in auto|pi|jetson|generic) ;; *) die "--platform must be auto, pi, jetson or generic" ;; esac
[ -z "$PREFIX" ] || [ "${PREFIX:0:1}" = / ] || PREFIX="$(pwd)/$PREFIX"
if [ "$ROLE" = hub ]; then USER_NAME=smearscope-hub; STATE_DIR=/var/lib/smearscope-hub; HTTPS=0; fi
if [ -z "$WEB_HOST" ]; then
  # behind nginx only the proxy on this machine reaches the daemon
  if [ "$HTTPS" = 1 ]; then WEB_HOST=127.0.0.1; else WEB_HOST=0.0.0.0; fi
fi
if [ "$HTTPS" = 0 ] && [ -n "$TLS_CERT$TLS_KEY$TLS_CA" ]; then die "--tls-cert/--tls-key/--tls-ca need HTTPS (drop --no-https)"; fi
R="$PREFIX"  # every path this script writes is "$R$path"; file contents name the target paths

if [ "$DRY_RUN" = 0 ] && [ -z "$PREFIX" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0), or use --dry-run / --prefix DIR"
fi
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/device" ]; then
  die "$SRC does not look like the smearscope source tree"
fi

# --------------------------------------------------------------------------------------- platform
if [ "$PLATFORM" = auto ]; then
  if grep -qs "Raspberry Pi" /proc/device-tree/model; then PLATFORM=pi
  elif [ -f /etc/nv_tegra_release ]; then PLATFORM=jetson
  else PLATFORM=generic
  fi
fi
if [ -z "$CAMERA" ]; then
  case "$PLATFORM" in pi) CAMERA=picamera2 ;; jetson) CAMERA=jetson ;; *) CAMERA=opencv ;; esac
fi
case "$CAMERA" in replay|opencv|picamera2|jetson) ;; *) die "--camera must be replay, opencv, picamera2 or jetson" ;; esac
if [ "$REUSE_VENV" = 1 ]; then
  VENV_RUN="$VENV"              # an existing venv is named by its real path
else
  VENV="$APP_DIR/venv"
  VENV_RUN="$R$VENV"
fi
say "smearscope $ROLE on $PLATFORM (camera $CAMERA); source $SRC${PREFIX:+; prefix $PREFIX}$([ "$DRY_RUN" = 1 ] && echo '; DRY RUN')"

# ------------------------------------------------------------------------------------ 1. packages
say "1. system packages"
PKGS=(python3-venv python3-pip ca-certificates sqlite3 fonts-dejavu-core)  # DejaVu: the PDF report's font
case "$PLATFORM" in
  pi) PKGS+=(python3-picamera2) ;;                       # libcamera + picamera2, built for this kernel
  jetson) PKGS+=(python3-opencv gstreamer1.0-tools) ;;   # JetPack's OpenCV has GStreamer (CSI camera)
esac
[ "$ROLE" = hub ] && PKGS+=(postgresql)
[ "$HTTPS" = 1 ] && PKGS+=(nginx openssl)
if [ "$APT" = 0 ]; then
  echo "  skip (--no-apt): apt-get install ${PKGS[*]}"
elif host_only "apt-get install ${PKGS[*]}"; then
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ apt-get update && apt-get install -y --no-install-recommends %s\n' "${PKGS[*]}"
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PKGS[@]}"
  fi
fi

# ----------------------------------------------------------------------------------- 2. the user
say "2. system user $USER_NAME"
if id -u "$USER_NAME" >/dev/null 2>&1; then
  echo "  $USER_NAME exists"
elif host_only "useradd --system $USER_NAME"; then
  run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "smearscope service" "$USER_NAME"
fi
if [ "$ROLE" = device ] && host_only "usermod -aG video $USER_NAME"; then
  getent group video >/dev/null 2>&1 && run usermod -aG video "$USER_NAME"  # for `runuser` shells; the unit adds it too
fi

# ---------------------------------------------------------------------------------- 3. directories
say "3. directories"
run mkdir -p "$R$APP_DIR" "$R$CONF_DIR" "$R$STATE_DIR" "$R$UNIT_DIR" "$R$BIN_DIR"
# /etc/smearscope stays root's and open (device and hub may share a machine); each file in it
# carries its own group and mode 0640
run chmod 0755 "$R$APP_DIR" "$R$CONF_DIR"
run chmod 0750 "$R$STATE_DIR"
set_owner "$USER_NAME:$USER_NAME" "$R$STATE_DIR"
if [ "$ROLE" = device ]; then
  # models are written by root (`smearscope models install`) and only read by the daemon
  run mkdir -p "$R$STATE_DIR/models"
  run chmod 0755 "$R$STATE_DIR/models"
fi

# ------------------------------------------------------------------------------------- 4. the code
say "4. source copy in $APP_DIR/src"
if [ "$DRY_RUN" = 1 ]; then
  echo "+ copy $SRC -> $R$APP_DIR/src (without .git, .venv, runs, var, caches)"
else
  rm -rf "$R$APP_DIR/src.new"
  mkdir -p "$R$APP_DIR/src.new"
  tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./runs --exclude=./var \
    --exclude='__pycache__' --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache \
    --exclude=./node_modules -cf - . | tar -C "$R$APP_DIR/src.new" -xf -
  rm -rf "$R$APP_DIR/src.old"
  [ -d "$R$APP_DIR/src" ] && mv "$R$APP_DIR/src" "$R$APP_DIR/src.old"
  mv "$R$APP_DIR/src.new" "$R$APP_DIR/src"
  rm -rf "$R$APP_DIR/src.old"
fi

# -------------------------------------------------------------------------------------- 5. the venv
say "5. Python environment $VENV"
EXTRA=device
[ "$ROLE" = hub ] && EXTRA=hub
if [ "$REUSE_VENV" = 1 ]; then
  [ -x "$VENV_RUN/bin/python" ] || die "--venv $VENV has no bin/python"
  echo "  using the existing venv as is (--venv): no pip"
else
  "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null || die \
    "$PYTHON is not Python 3.11-3.13 ($("$PYTHON" -V 2>&1)). Raspberry Pi OS Bookworm/Trixie and Ubuntu 24.04 \
(JetPack 7) ship 3.11/3.13/3.12; JetPack 6 ships 3.10: install python3.11 and pass --python python3.11 \
(then the apt OpenCV is not visible: use a USB camera with --camera opencv)"
  SITE=()
  # picamera2/libcamera (Pi) and GStreamer-enabled OpenCV (Jetson) come from apt: the venv must see them
  [ "$PLATFORM" != generic ] && SITE=(--system-site-packages)
  if [ -x "$VENV_RUN/bin/python" ]; then
    echo "  $VENV exists"
  else
    run "$PYTHON" -m venv "${SITE[@]}" "$VENV_RUN"
  fi
  PIP=("$VENV_RUN/bin/python" -m pip install --disable-pip-version-check)
  [ -n "$WHEELHOUSE" ] && PIP+=(--no-index --find-links "$WHEELHOUSE")
  # shellcheck disable=SC2206  # PIP_ARGS is a list of words on purpose
  [ -n "$PIP_ARGS" ] && PIP+=($PIP_ARGS)
  if [ -n "$WHEELHOUSE" ]; then
    # offline: smearscope's own wheel from the wheelhouse (scripts/wheelhouse.sh), no build step
    run "${PIP[@]}" "smearscope[$EXTRA]"
    run "${PIP[@]}" --no-deps --force-reinstall smearscope   # the same version number may hold new code
  else
    run "${PIP[@]}" "$R$APP_DIR/src[$EXTRA]"
  fi
  if [ "$ROLE" = device ] && [ "$PLATFORM" = pi ]; then
    # apt's simplejpeg (used by picamera2) is built for numpy 1.x; the venv has numpy 2 (picamera2#1211)
    run "${PIP[@]}" --ignore-installed simplejpeg
  fi
  if [ "$ROLE" = device ] && [ "$PLATFORM" = jetson ]; then
    # the pip OpenCV has no GStreamer: drop it so JetPack's cv2 (built for numpy 1.x) is used
    run "$VENV_RUN/bin/python" -m pip uninstall -y opencv-python-headless
    run "${PIP[@]}" "numpy<2"
  fi
fi

# ----------------------------------------------------------------------------------- 6. config
if [ "$ROLE" = device ]; then
  CONFIG="$CONF_DIR/config.toml"
  say "6. configuration $CONFIG"
  if [ -f "$R$CONFIG" ]; then
    echo "  $CONFIG exists: kept (its secret key too)"
  else
    SECRET="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' 2>/dev/null \
      || head -c 32 /dev/urandom | base64 | tr -d '/+=\n')"
    write_file "$R$CONFIG" 0640 <<EOF
# smearscope station configuration, written by scripts/install.sh on $(date -u +%Y-%m-%d).
# Only the keys that differ from the defaults are here; every key is described in
# $APP_DIR/src/device/default_config.toml. Check it with: smearscope doctor
# Then: sudo systemctl restart smearscope

[device]
id = ""                        # empty: made once and kept in the store
data_dir = "$STATE_DIR"

[camera]
source = "$CAMERA"

[web]
host = "$WEB_HOST"
port = $WEB_PORT
secret_key = "$SECRET"
open_live_view = false

[sync]
enabled = false                # set hub_url, put the device token in /etc/smearscope/environment
hub_url = ""                   # (SMEARSCOPE_SYNC_TOKEN=...), then enabled = true
EOF
    set_owner "root:$USER_NAME" "$R$CONFIG"
  fi
  if [ "$DRY_RUN" = 0 ]; then
    "$VENV_RUN/bin/python" -c 'import sys; from device.config import load_config; load_config(sys.argv[1])' \
      "$R$CONFIG" || die "$CONFIG is not valid (see above)"
  fi
else
  say "6. hub database settings $CONF_DIR/hub.env"
  if [ -f "$R$CONF_DIR/hub.env" ]; then
    echo "  $CONF_DIR/hub.env exists: kept"
  else
    write_file "$R$CONF_DIR/hub.env" 0640 <<EOF
# smearscope hub database. PostgreSQL for several gunicorn workers:
#   sudo -u postgres createuser -P smearscope && sudo -u postgres createdb -O smearscope smearscope
# SMEARSCOPE_HUB_DB=postgresql+psycopg://smearscope:PASSWORD@localhost/smearscope
SMEARSCOPE_HUB_DB=sqlite:///$STATE_DIR/hub.db
EOF
    set_owner "root:$USER_NAME" "$R$CONF_DIR/hub.env"
  fi
fi

# ------------------------------------------------------------------------- 7. the admin command
WRAPPER=smearscope
[ "$ROLE" = hub ] && WRAPPER=smearscope-hub
say "7. command wrapper $BIN_DIR/$WRAPPER"
if [ "$ROLE" = device ]; then
  write_file "$R$BIN_DIR/smearscope" 0755 <<EOF
#!/bin/sh
# smearscope for admins, with the service's models directory and config (scripts/install.sh).
export SMEARSCOPE_MODELS_DIR="\${SMEARSCOPE_MODELS_DIR:-$STATE_DIR/models}"
case "\$1" in
  users|sync|run|backup|calibrate)  # these open the store or its profiles: as the service user, so its files stay the service's
    if [ "\$(id -u)" = 0 ]; then exec runuser -u $USER_NAME -- "$VENV/bin/smearscope" "\$@"; fi ;;
esac
exec "$VENV/bin/smearscope" "\$@"
EOF
else
  write_file "$R$BIN_DIR/smearscope-hub" 0755 <<EOF
#!/bin/sh
# smearscope-hub for admins, with the service's database settings (scripts/install.sh).
set -a; [ -r $CONF_DIR/hub.env ] && . $CONF_DIR/hub.env; set +a
if [ "\$(id -u)" = 0 ]; then cd $STATE_DIR && exec runuser -u $USER_NAME -- "$VENV/bin/smearscope-hub" "\$@"; fi
exec "$VENV/bin/smearscope-hub" "\$@"
EOF
fi

# ------------------------------------------------------------------ 8. models and the first admin
if [ "$ROLE" = device ]; then
  say "8. model bundles in $STATE_DIR/models"
  MODELS_SRC="${MODELS_FROM:-$SRC/models}"
  SHIPPED=()
  if [ -f "$MODELS_SRC/DEFAULT" ]; then
    while read -r n; do
      case "$n" in ''|'#'*) continue ;; esac
      SHIPPED+=("$n")
    done <"$MODELS_SRC/DEFAULT"
  else
    for d in "$MODELS_SRC"/*/; do [ -f "$d/manifest.json" ] && SHIPPED+=("$(basename "$d")"); done
  fi
  [ ${#SHIPPED[@]} -gt 0 ] || NOTES+=("no model bundle in $MODELS_SRC: smearscope models install BUNDLE.tar.gz")
  if [ ${#SHIPPED[@]} -gt 0 ] && [ ! -f "$R$STATE_DIR/models/DEFAULT" ]; then
    # the ensemble is what models/DEFAULT lists; installing each adds it
    printf '%s\n' "# bundles forming the ensemble, one per line (smearscope models install adds them)" \
      | write_file "$R$STATE_DIR/models/DEFAULT" 0644
  fi
  for n in "${SHIPPED[@]}"; do
    # `models install` is idempotent: an identical active bundle is left alone
    run env SMEARSCOPE_MODELS_DIR="$R$STATE_DIR/models" "$VENV_RUN/bin/smearscope" models install "$MODELS_SRC/$n"
  done

  say "9. first admin account '$ADMIN_USER'"
  DB="$R$STATE_DIR/smearscope.db"
  HAVE_ADMIN=0
  if [ -f "$DB" ] && "$VENV_RUN/bin/python" - "$DB" "$ADMIN_USER" <<'PY'
import os, sqlite3, sys
# immutable when the daemon has no -wal open: a read-only open would otherwise create root-owned
# -wal/-shm files that lock the daemon out
flags = "mode=ro" if os.path.exists(sys.argv[1] + "-wal") else "mode=ro&immutable=1"
conn = sqlite3.connect(f"file:{sys.argv[1]}?{flags}", uri=True)
try:
    row = conn.execute("SELECT 1 FROM users WHERE name = ?", (sys.argv[2],)).fetchone()
except sqlite3.Error:
    row = None
sys.exit(0 if row else 1)
PY
  then HAVE_ADMIN=1; fi
  if [ "$HAVE_ADMIN" = 1 ]; then
    echo "  $ADMIN_USER exists: kept (change its password with: smearscope users passwd $ADMIN_USER)"
  else
    GENERATED=0
    if [ -n "$ADMIN_PASSWORD_FILE" ]; then
      PASSWORD="$(head -n1 "$ADMIN_PASSWORD_FILE")"
    elif [ -n "${SMEARSCOPE_ADMIN_PASSWORD:-}" ]; then
      PASSWORD="$SMEARSCOPE_ADMIN_PASSWORD"
    else
      PASSWORD="$(head -c 12 /dev/urandom | base64 | tr -d '/+=\n')"; GENERATED=1
    fi
    USERS_CMD=("$VENV_RUN/bin/smearscope" users add "$ADMIN_USER" --role admin
      --config "$R$CONFIG" --data-dir "$R$STATE_DIR")
    [ -z "$PREFIX" ] && USERS_CMD=(runuser -u "$USER_NAME" -- "${USERS_CMD[@]}")
    if [ "$DRY_RUN" = 1 ]; then
      printf '+ %s  (password on stdin)\n' "${USERS_CMD[*]}"
    else
      printf '%s\n' "$PASSWORD" | (cd "$R$STATE_DIR" && "${USERS_CMD[@]}") \
        || die "could not create the admin account (smearscope users add)"
      if [ "$GENERATED" = 1 ]; then
        NOTES+=("admin account '$ADMIN_USER', password: $PASSWORD  (shown once; change it after logging in)")
      fi
    fi
  fi
fi

# --------------------------------------------------------------------------------------- 10. systemd
UNIT=smearscope.service
UNIT_FILES=(smearscope.service smearscope-backup.service smearscope-backup.timer)
ENABLE=(smearscope.service smearscope-backup.timer)
if [ "$ROLE" = hub ]; then
  UNIT=smearscope-hub.service; UNIT_FILES=("$UNIT"); ENABLE=("$UNIT")
elif [ "$HTTPS" = 1 ]; then
  # the weekly certificate check (station-https.sh --renew-due; step 11 makes the certificate)
  UNIT_FILES+=(smearscope-https-renew.service smearscope-https-renew.timer)
  ENABLE+=(smearscope-https-renew.timer)
fi
say "10. systemd units ${UNIT_FILES[*]}"
for u in "${UNIT_FILES[@]}"; do
  sed -e "s#/opt/smearscope/venv#$VENV#g" -e "s#/opt/smearscope/src#$APP_DIR/src#g" \
    "$SRC/systemd/$u" | write_file "$R$UNIT_DIR/$u" 0644
done
if [ "$ROLE" = device ]; then
  # the daily backup's destination (smearscope-backup.service; keeps 7, images hard-linked)
  run mkdir -p "$R/var/backups/smearscope"
  run chmod 0750 "$R/var/backups/smearscope"
  set_owner "$USER_NAME:$USER_NAME" "$R/var/backups/smearscope"
fi
if [ -n "$PREFIX" ]; then
  run systemctl --root="$R" enable "${ENABLE[@]}" 2>&1 | sed 's/^/  /' || true
  echo "  skip (--prefix): systemctl daemon-reload, start $UNIT"
elif [ "$DRY_RUN" = 0 ] && ! [ -d /run/systemd/system ]; then
  echo "  systemd is not running here: enable by hand (systemctl enable --now ${ENABLE[*]})"
else
  run systemctl daemon-reload
  run systemctl enable "${ENABLE[@]}"
  [ "$ROLE" = device ] && run systemctl start smearscope-backup.timer
  [ "$ROLE" = device ] && [ "$HTTPS" = 1 ] && run systemctl start smearscope-https-renew.timer
  if [ "$START" = 1 ]; then
    # restart, so a second run picks up new code and units; Type=notify: this waits for READY=1
    run systemctl restart "$UNIT" || die "$UNIT did not start: journalctl -u $UNIT -e ; smearscope doctor"
    if [ "$DRY_RUN" = 0 ]; then
      for _ in $(seq 1 30); do
        systemctl is-active --quiet "$UNIT" && break
        sleep 2
      done
      systemctl is-active --quiet "$UNIT" \
        || die "$UNIT did not stay up: journalctl -u $UNIT -e ; smearscope doctor"
      echo "  $UNIT is active"
    fi
  fi
fi

# ------------------------------------------------------------------------------------ 11. HTTPS
if [ "$ROLE" = device ]; then
  if [ "$HTTPS" = 0 ]; then
    say "11. HTTPS: not set up (--no-https); the page is plain HTTP on $WEB_HOST:$WEB_PORT"
  else
    say "11. HTTPS: nginx on :$HTTPS_PORT (and :$HTTP_PORT -> HTTPS) in front of 127.0.0.1:$WEB_PORT"
    MAX_UPLOAD_MB=20
    if [ "$DRY_RUN" = 0 ]; then
      MAX_UPLOAD_MB="$("$VENV_RUN/bin/python" -c 'import sys; from device.config import load_config
print(load_config(sys.argv[1], data_dir="/").web.max_upload_mb)' "$R$CONFIG")" || die "cannot read $CONFIG"
      DAEMON_HOST="$("$VENV_RUN/bin/python" -c 'import sys; from device.config import load_config
print(load_config(sys.argv[1], data_dir="/").web.host)' "$R$CONFIG")"
      case "$DAEMON_HOST" in
        127.*|localhost|::1) ;;
        *) NOTES+=("$CONFIG has [web] host = \"$DAEMON_HOST\": the page is also plain HTTP on the network; set host = \"127.0.0.1\" and restart smearscope") ;;
      esac
    fi
    TLS_ARGS=(--upstream "127.0.0.1:$WEB_PORT" --http-port "$HTTP_PORT" --https-port "$HTTPS_PORT"
      --max-upload-mb "$MAX_UPLOAD_MB" --tls-dir "$CONF_DIR/tls" --site /etc/nginx/sites-available/smearscope)
    [ -n "$PREFIX" ] && TLS_ARGS+=(--prefix "$PREFIX")
    [ "$DRY_RUN" = 1 ] && TLS_ARGS+=(--dry-run)
    [ "$TLS_RENEW" = 1 ] && TLS_ARGS+=(--renew)
    [ -n "$TLS_CERT" ] && TLS_ARGS+=(--cert "$TLS_CERT")
    [ -n "$TLS_KEY" ] && TLS_ARGS+=(--key "$TLS_KEY")
    [ -n "$TLS_CA" ] && TLS_ARGS+=(--ca "$TLS_CA")
    bash "$SRC/scripts/station-https.sh" "${TLS_ARGS[@]}" || die "HTTPS set-up failed (see above)"
    run mkdir -p "$R/etc/nginx/sites-enabled"
    run ln -sfn ../sites-available/smearscope "$R/etc/nginx/sites-enabled/smearscope"
    # Debian's example site is the default server on :80 and would answer instead of the redirect
    if [ -L "$R/etc/nginx/sites-enabled/default" ]; then run rm -f "$R/etc/nginx/sites-enabled/default"; fi
    if host_only "nginx -t; systemctl enable nginx; systemctl reload-or-restart nginx"; then
      if [ "$DRY_RUN" = 1 ] || command -v nginx >/dev/null 2>&1; then
        run nginx -t -q || die "nginx refused its configuration: nginx -t"
        if [ "$DRY_RUN" = 1 ] || [ -d /run/systemd/system ]; then
          run systemctl enable nginx
          run systemctl reload-or-restart nginx
        else
          echo "  systemd is not running here: start nginx by hand (nginx)"
        fi
      else
        NOTES+=("nginx is not installed (--no-apt?): apt-get install nginx, then run this installer again")
      fi
    fi
  fi
fi

say "done"
if [ "$ROLE" = device ]; then
  if [ "$HTTPS" = 1 ]; then
    PAGE_HOST="$(hostname 2>/dev/null || echo localhost)"
    echo "  page:   https://$PAGE_HOST$([ "$HTTPS_PORT" = 443 ] || echo ":$HTTPS_PORT")/  (tablets first trust the station: docs/technician-guide.md)"
  else
    echo "  page:   http://$(hostname -I 2>/dev/null | awk '{print $1}' || echo localhost):$WEB_PORT/"
  fi
  echo "  check:  sudo smearscope doctor      logs: journalctl -u smearscope -f"
else
  echo "  hub on 127.0.0.1:8090 behind your TLS proxy; register devices: sudo smearscope-hub devices add NAME"
fi
for n in "${NOTES[@]}"; do echo "  NOTE: $n"; done
exit 0
