#!/usr/bin/env bash
# The station's HTTPS: its certificate and the nginx site that serves the page over TLS in front of
# the daemon (which listens on 127.0.0.1 only). Run by scripts/install.sh; safe to run again.
#
#   sudo scripts/station-https.sh                          # station CA + server certificate, nginx site
#   sudo scripts/station-https.sh --renew                  # a new server certificate from the same CA
#   sudo scripts/station-https.sh --cert C.pem --key K.pem [--ca CLINIC-CA.pem]   # the clinic's certificate
#   sudo scripts/station-https.sh --station-cert           # back from the clinic's to the station's own
#   sudo scripts/station-https.sh --renew-due              # what smearscope-https-renew.timer runs weekly
#
# Station CA: ECDSA P-256, 10 years, made once and kept (tablets that trust it keep trusting the
# station). Server certificate: 800 days (under Apple's 825-day limit), for the host name, NAME.local,
# localhost and the station's addresses; re-issued by itself when those change or fewer than 60 days
# are left. Keys stay root's (0600); the CA certificate is public (http://STATION/station-ca.crt).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPLATE="$SRC/deploy/nginx/smearscope.conf.template"
PREFIX=""
TLS_DIR=/etc/smearscope/tls
SITE=/etc/nginx/sites-available/smearscope
UPSTREAM=127.0.0.1:8080
HTTP_PORT=80
HTTPS_PORT=443
LISTEN=""
MAX_UPLOAD_MB=20
CA_DAYS=3650
DAYS=800
RENEW_BEFORE_DAYS=60
CLINIC_CERT=""
CLINIC_KEY=""
CLINIC_CA=""
STATION_CERT=0
RENEW=0
RENEW_DUE=0
ISSUED=0
DRY_RUN=0
NAMES=()
IPS=()
AUTO_NAMES=1

usage() {
  cat <<EOF
usage: $0 [options]
  --tls-dir DIR        certificates and keys (default: $TLS_DIR)
  --site FILE          the nginx site to write (default: $SITE)
  --prefix DIR         write under DIR as the root; the site names the target paths
  --upstream HOST:PORT the daemon (default: $UPSTREAM)
  --listen ADDR        listen on this address only (default: every IPv4 and IPv6 address)
  --http-port P        plain HTTP port, redirects to HTTPS (default: 80)
  --https-port P       HTTPS port (default: 443)
  --max-upload-mb N    [web] max_upload_mb of the station (default: 20)
  --name NAME          a host name the certificate is for (repeat; default: \$(hostname), NAME.local, localhost)
  --ip ADDR            an address the certificate is for (repeat; default: hostname -I, 127.0.0.1, ::1)
  --cert FILE --key FILE  use the clinic's certificate (PEM, full chain) and key instead of the station's
  --ca FILE            the clinic CA certificate to offer at /station-ca.crt (with --cert)
  --station-cert       back to the station's own CA and certificate
  --renew              issue a new server certificate now
  --renew-due          only the certificate: issue a new one when it is due (fewer than $RENEW_BEFORE_DAYS days
                       left, or the station's names or addresses changed) and reload nginx; the site
                       and a clinic's certificate are left alone (a clinic's certificate that is due
                       is reported and the command fails, so the timer shows it)
  --days N             server certificate lifetime (default: $DAYS)
  --dry-run            print each action, change nothing
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --tls-dir) TLS_DIR="${2%/}"; shift 2 ;;
    --site) SITE="$2"; shift 2 ;;
    --prefix) PREFIX="${2%/}"; shift 2 ;;
    --upstream) UPSTREAM="$2"; shift 2 ;;
    --listen) LISTEN="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --https-port) HTTPS_PORT="$2"; shift 2 ;;
    --max-upload-mb) MAX_UPLOAD_MB="$2"; shift 2 ;;
    --name) NAMES+=("$2"); AUTO_NAMES=0; shift 2 ;;
    --ip) IPS+=("$2"); AUTO_NAMES=0; shift 2 ;;
    --cert) CLINIC_CERT="$(realpath "$2")"; shift 2 ;;
    --key) CLINIC_KEY="$(realpath "$2")"; shift 2 ;;
    --ca) CLINIC_CA="$(realpath "$2")"; shift 2 ;;
    --station-cert) STATION_CERT=1; shift ;;
    --renew) RENEW=1; shift ;;
    --renew-due) RENEW_DUE=1; shift ;;
    --days) DAYS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "station-https.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "station-https.sh: error: $*" >&2; exit 1; }
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install openssl)"
[ -f "$TEMPLATE" ] || die "no nginx template at $TEMPLATE"
for n in "$HTTP_PORT" "$HTTPS_PORT" "$MAX_UPLOAD_MB" "$DAYS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"
done
[ -n "$CLINIC_CERT" ] && [ -z "$CLINIC_KEY" ] && die "--cert needs --key"
[ -n "$CLINIC_KEY" ] && [ -z "$CLINIC_CERT" ] && die "--key needs --cert"
[ -n "$CLINIC_CA" ] && [ -z "$CLINIC_CERT" ] && die "--ca goes with --cert and --key"
[ "$RENEW_DUE" = 1 ] && { [ -n "$CLINIC_CERT" ] || [ "$RENEW" = 1 ]; } && die "--renew-due goes alone (not with --cert or --renew)"
[ -n "$CLINIC_CERT" ] && [ "$STATION_CERT" = 1 ] && die "--cert and --station-cert exclude each other"
[ -z "$PREFIX" ] || [ "${PREFIX:0:1}" = / ] || PREFIX="$(pwd)/$PREFIX"
R="$PREFIX"
T="$R$TLS_DIR"            # where files are written; the site names "$TLS_DIR/..."

# ------------------------------------------------------------------------------ names and addresses
if [ "$AUTO_NAMES" = 1 ]; then
  host="$(hostname 2>/dev/null || echo localhost)"
  NAMES=("$host")
  case "$host" in *.*|localhost) ;; *) NAMES+=("$host.local") ;; esac
  NAMES+=(localhost)
  # shellcheck disable=SC2207  # one address a word
  IPS=($(hostname -I 2>/dev/null || true) 127.0.0.1 ::1)
fi
SAN=""
for n in "${NAMES[@]}"; do SAN+="${SAN:+,}DNS:$n"; done
for a in "${IPS[@]}"; do SAN+="${SAN:+,}IP:$a"; done
# A certificate issued for names given by hand keeps them when it is renewed; one issued for the
# station's own names follows them (a new DHCP address gets a new certificate).
if [ "$RENEW_DUE" = 1 ] && [ "$(cat "$T/server.auto" 2>/dev/null || echo 1)" = 0 ] && [ -s "$T/server.names" ]; then
  SAN="$(cat "$T/server.names")"
  first="${SAN%%,*}"
  NAMES=("${first#*:}")
fi
[ -n "$SAN" ] || die "the certificate needs at least one --name or --ip"
CN="${NAMES[0]:-${IPS[0]}}"

# ------------------------------------------------------------------------------------ certificates
make_dir() {
  run mkdir -p "$T"
  run chmod 0755 "$T"
}
# new_key FILE: an ECDSA P-256 key, 0600 from the start
new_key() {
  run sh -c 'umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.tmp" && mv -f "$1.tmp" "$1"' _ "$1"
}
pubkey_of_cert() { openssl x509 -noout -pubkey -in "$1"; }
pubkey_of_key() { openssl pkey -pubout -in "$1"; }

make_ca() {
  new_key "$T/ca.key"
  run openssl req -x509 -new -key "$T/ca.key" -sha256 -days "$CA_DAYS" -out "$T/ca.crt.tmp" \
    -subj "/O=smearscope/CN=smearscope station CA ($CN)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  run chmod 0644 "$T/ca.crt.tmp"
  run mv -f "$T/ca.crt.tmp" "$T/ca.crt"
}

make_server_cert() {
  local ext="$T/.server.ext"
  new_key "$T/server.key.new"
  run openssl req -new -key "$T/server.key.new" -subj "/O=smearscope/CN=$CN" -out "$T/server.csr"
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ write $ext (subjectAltName=$SAN, serverAuth)"
  else
    printf '%s\n' "[v3]" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
      "subjectAltName=$SAN" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$ext"
  fi
  run openssl x509 -req -in "$T/server.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 -extfile "$ext" -extensions v3 \
    -out "$T/server.crt.new"
  run chmod 0644 "$T/server.crt.new"
  run mv -f "$T/server.key.new" "$T/server.key"
  run mv -f "$T/server.crt.new" "$T/server.crt"
  run rm -f "$T/server.csr" "$ext"
  if [ "$DRY_RUN" = 1 ]; then echo "+ write $T/server.names"; else
    printf '%s\n' "$SAN" >"$T/server.names"
    echo "$AUTO_NAMES" >"$T/server.auto"
  fi
  ISSUED=1
}

use_clinic_cert() {
  [ -r "$CLINIC_CERT" ] || die "cannot read $CLINIC_CERT"
  [ -r "$CLINIC_KEY" ] || die "cannot read $CLINIC_KEY"
  openssl x509 -noout -in "$CLINIC_CERT" 2>/dev/null || die "$CLINIC_CERT is not a PEM certificate"
  openssl pkey -noout -in "$CLINIC_KEY" 2>/dev/null || die "$CLINIC_KEY is not a PEM private key (without a passphrase)"
  [ "$(pubkey_of_cert "$CLINIC_CERT")" = "$(pubkey_of_key "$CLINIC_KEY")" ] \
    || die "$CLINIC_KEY is not the key of $CLINIC_CERT"
  openssl x509 -noout -checkend 0 -in "$CLINIC_CERT" >/dev/null || die "$CLINIC_CERT has expired"
  if [ -n "$CLINIC_CA" ]; then
    openssl x509 -noout -in "$CLINIC_CA" 2>/dev/null || die "$CLINIC_CA is not a PEM certificate"
  fi
  make_dir
  run install -m 0644 "$CLINIC_CERT" "$T/server.crt.new"
  run sh -c 'umask 077 && cp "$1" "$2"' _ "$CLINIC_KEY" "$T/server.key.new"
  run mv -f "$T/server.key.new" "$T/server.key"
  run mv -f "$T/server.crt.new" "$T/server.crt"
  # the station's own CA (if any) is kept for --station-cert; /station-ca.crt offers the clinic's
  if [ -n "$CLINIC_CA" ]; then
    run install -m 0644 "$CLINIC_CA" "$T/published-ca.crt"
  else
    run rm -f "$T/published-ca.crt"
  fi
  if [ "$DRY_RUN" = 1 ]; then echo "+ write $T/SOURCE (clinic)"; else echo clinic >"$T/SOURCE"; fi
  echo "  the clinic's certificate: $(openssl x509 -noout -subject -enddate -in "$CLINIC_CERT" | tr '\n' ' ')"
}

use_station_cert() {
  make_dir
  if [ ! -s "$T/ca.crt" ] || [ ! -s "$T/ca.key" ]; then
    echo "  making the station CA ($CA_DAYS days)"
    make_ca
    RENEW=1
  fi
  local why=""
  if [ "$RENEW" = 1 ]; then why="asked"
  elif [ "$(cat "$T/SOURCE" 2>/dev/null || echo station)" != station ]; then why="back from the clinic's"
  elif [ ! -s "$T/server.crt" ] || [ ! -s "$T/server.key" ]; then why="none yet"
  elif ! openssl x509 -noout -checkend $((RENEW_BEFORE_DAYS * 86400)) -in "$T/server.crt" >/dev/null; then
    why="fewer than $RENEW_BEFORE_DAYS days left"
  elif [ "$(cat "$T/server.names" 2>/dev/null)" != "$SAN" ]; then why="names or addresses changed"
  fi
  if [ -n "$why" ]; then
    echo "  issuing the server certificate ($why): $SAN, $DAYS days"
    make_server_cert
  else
    echo "  server certificate kept: $(openssl x509 -noout -enddate -in "$T/server.crt")"
  fi
  if [ "$DRY_RUN" = 1 ]; then echo "+ publish $T/ca.crt"; else
    install -m 0644 "$T/ca.crt" "$T/published-ca.crt"
    echo station >"$T/SOURCE"
  fi
}

if [ "$RENEW_DUE" = 1 ]; then
  if [ "$(cat "$T/SOURCE" 2>/dev/null || echo station)" = clinic ]; then
    if ! openssl x509 -noout -checkend $((RENEW_BEFORE_DAYS * 86400)) -in "$T/server.crt" >/dev/null; then
      die "the clinic's certificate $(openssl x509 -noout -enddate -in "$T/server.crt"): install a new one (--cert, --key)"
    fi
    echo "  the clinic's certificate is in use and not due: $(openssl x509 -noout -enddate -in "$T/server.crt")"
    exit 0
  fi
  [ -s "$T/ca.key" ] || die "no station CA in $T: run scripts/station-https.sh once first"
  use_station_cert
  if [ "$ISSUED" = 1 ] && [ "$DRY_RUN" = 0 ] && [ -z "$PREFIX" ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl reload nginx && echo "  nginx reloaded"
  fi
  exit 0
fi

if [ -n "$CLINIC_CERT" ]; then
  use_clinic_cert
elif [ "$STATION_CERT" = 0 ] && [ "$(cat "$T/SOURCE" 2>/dev/null || echo station)" = clinic ]; then
  echo "  the clinic's certificate is in use: kept (--station-cert goes back to the station's own)"
else
  use_station_cert
fi

# ------------------------------------------------------------------------------------ nginx site
listen_lines() {  # listen_lines PORT [ssl]
  local opts="${2:+ $2}"
  if [ -n "$LISTEN" ]; then
    case "$LISTEN" in *:*) printf '    listen [%s]:%s%s;\n' "$LISTEN" "$1" "$opts" ;;
      *) printf '    listen %s:%s%s;\n' "$LISTEN" "$1" "$opts" ;; esac
  else
    printf '    listen %s%s;\n' "$1" "$opts"
    [ -e /proc/net/if_inet6 ] && printf '    listen [::]:%s%s;\n' "$1" "$opts"
  fi
  return 0
}
suffix=""
[ "$HTTPS_PORT" = 443 ] || suffix=":$HTTPS_PORT"
tpl="$(cat "$TEMPLATE")"
tpl="${tpl//@UPSTREAM@/$UPSTREAM}"
tpl="${tpl//@HTTP_LISTEN@/$(listen_lines "$HTTP_PORT")}"
tpl="${tpl//@HTTPS_LISTEN@/$(listen_lines "$HTTPS_PORT" ssl)}"
tpl="${tpl//@HTTPS_PORT_SUFFIX@/$suffix}"
tpl="${tpl//@CA_FILE@/$TLS_DIR/published-ca.crt}"
tpl="${tpl//@CERT_FILE@/$TLS_DIR/server.crt}"
tpl="${tpl//@KEY_FILE@/$TLS_DIR/server.key}"
tpl="${tpl//@MAX_BODY_BYTES@/$((MAX_UPLOAD_MB * 10000000 + 1000000))}"
if grep -qE '@[A-Z_]+@' <<<"$tpl"; then
  die "the template has a placeholder this script does not fill: $(grep -oE '@[A-Z_]+@' <<<"$tpl" | head -1)"
fi
if [ "$DRY_RUN" = 1 ]; then
  echo "+ write $R$SITE (nginx site: HTTPS :$HTTPS_PORT -> $UPSTREAM, HTTP :$HTTP_PORT -> 301)"
else
  mkdir -p "$(dirname "$R$SITE")"
  tmp="$(mktemp "$(dirname "$R$SITE")/.tmp-site.XXXXXX")"
  printf '%s\n' "$tpl" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$R$SITE"
  echo "  nginx site $SITE: https :$HTTPS_PORT -> $UPSTREAM; http :$HTTP_PORT -> https"
fi
if [ "$DRY_RUN" = 0 ] && [ -s "$T/published-ca.crt" ]; then
  hp=""; [ "$HTTP_PORT" = 80 ] || hp=":$HTTP_PORT"
  echo "  CA to trust: http://$CN$hp/station-ca.crt  SHA-256 $(openssl x509 -noout -fingerprint -sha256 -in "$T/published-ca.crt" | cut -d= -f2)"
fi
exit 0
