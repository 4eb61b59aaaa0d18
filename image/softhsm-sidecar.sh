#!/bin/sh
# softhsm-sidecar: a SoftHSM2 token served to the operator over a unix socket by
# `p11-kit server`, for development clusters (the Helm chart's hsm.mode=softhsm). The operator
# container loads p11-kit-client.so with P11_KIT_SERVER_ADDRESS=unix:path=$P11_KIT_SOCKET and
# sees exactly this one token.
#
# Environment (the chart sets these):
#   SOFTHSM_TOKEN_LABEL   required: the token's label (at most 32 bytes)
#   SOFTHSM_PIN_FILE      required: a file holding the user PIN (a mounted Secret); one
#                         trailing newline is not part of the PIN, as for the operator
#   SOFTHSM_SO_PIN_FILE   optional: a file holding the security officer PIN; without it a random
#                         SO PIN is used once, at initialisation, and kept nowhere
#   SOFTHSM_TOKEN_DIR     the token directory, a volume (default /var/lib/softhsm/tokens)
#   P11_KIT_SOCKET        the socket, in a directory shared with the operator
#                         (default /run/p11-kit/pkcs11.sock)
#   SOFTHSM2_CONF         where to write SoftHSM's configuration (default: softhsm2.conf in
#                         $TMPDIR or /tmp, or else next to the socket, whichever is writable)
#   SOFTHSM_MODULE        the SoftHSM2 module (default: the Debian package's)
#
# The token is initialised only when no token with that label exists in SOFTHSM_TOKEN_DIR,
# so a restart keeps its keys. PINs never appear in the output or on a command line (they
# reach pkcs11-tool through its environment, `--pin env:NAME`).
set -eu

log() { echo "softhsm-sidecar: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

label=${SOFTHSM_TOKEN_LABEL:-}
pin_file=${SOFTHSM_PIN_FILE:-}
so_pin_file=${SOFTHSM_SO_PIN_FILE:-}
token_dir=${SOFTHSM_TOKEN_DIR:-/var/lib/softhsm/tokens}
socket=${P11_KIT_SOCKET:-/run/p11-kit/pkcs11.sock}

[ -n "$label" ] || die "SOFTHSM_TOKEN_LABEL is not set: the label of the token to serve"
[ "$(printf '%s' "$label" | wc -c)" -le 32 ] || die "SOFTHSM_TOKEN_LABEL is longer than 32 bytes"
[ -n "$pin_file" ] || die "SOFTHSM_PIN_FILE is not set: a file holding the user PIN"

module=${SOFTHSM_MODULE:-}
if [ -z "$module" ]; then
    for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
        if [ -f "$candidate" ]; then
            module=$candidate
            break
        fi
    done
fi
if [ -z "$module" ] || [ ! -f "$module" ]; then
    die "no SoftHSM2 module found${module:+ at $module}: set SOFTHSM_MODULE"
fi

# A PIN file's content, less one trailing newline (and a carriage return before it).
read_pin() {
    [ -r "$1" ] || die "cannot read $2 ($1)"
    value=$(cat "$1" && printf x) || die "cannot read $2 ($1)"
    value=${value%x}
    value=${value%"
"}
    value=${value%"$(printf '\r')"}
    [ -n "$value" ] || die "$2 ($1) is empty"
    printf '%s' "$value"
}

# RFC 7512 path attribute value: everything but unreserved characters percent-encoded.
uri_encode() {
    rest=$1
    out=
    while [ -n "$rest" ]; do
        tail=${rest#?}
        char=${rest%"$tail"}
        rest=$tail
        case $char in
            [A-Za-z0-9._~-]) out=$out$char ;;
            *) out=$out$(printf '%s' "$char" | od -An -tx1 | tr -d ' \n' | tr a-f A-F \
                | sed 's/../%&/g') ;;
        esac
    done
    printf '%s' "$out"
}

umask 077
mkdir -p "$token_dir" || die "cannot create SOFTHSM_TOKEN_DIR ($token_dir)"
[ -w "$token_dir" ] || die "SOFTHSM_TOKEN_DIR ($token_dir) is not writable by uid $(id -u)"
mkdir -p "$(dirname "$socket")" || die "cannot create the directory of P11_KIT_SOCKET ($socket)"

# SoftHSM's configuration names the token directory. With a read-only root filesystem /tmp may
# not be writable, but the socket's directory always is.
conf=${SOFTHSM2_CONF:-}
if [ -z "$conf" ]; then
    for dir in "${TMPDIR:-/tmp}" "$(dirname "$socket")"; do
        if (: >"$dir/softhsm2.conf") 2>/dev/null; then
            conf=$dir/softhsm2.conf
            break
        fi
    done
    [ -n "$conf" ] || die "no writable directory for softhsm2.conf: set SOFTHSM2_CONF"
fi
printf '%s\n' \
    "directories.tokendir = $token_dir" \
    "objectstore.backend = file" \
    "log.level = ERROR" \
    "slots.removable = false" >"$conf" || die "cannot write $conf"
export SOFTHSM2_CONF="$conf"

# Which slot holds a token with our label, and which one is free (SoftHSM always offers one
# uninitialised slot). Labels are compared as pkcs11-tool prints them.
slots=$(pkcs11-tool --module "$module" --list-slots 2>&1) || die "pkcs11-tool --list-slots: $slots"
state=$(printf '%s\n' "$slots" | awk '
    /^Slot [0-9]+ \(0x[0-9a-fA-F]+\)/ { id = $3; gsub(/[():]/, "", id) }
    /^  token label *: / {
        found = $0
        sub(/^  token label *: /, "", found)
        if (found == ENVIRON["SOFTHSM_TOKEN_LABEL"]) have = 1
    }
    /^  token state: *uninitialized/ { if (free == "") free = id }
    END { if (have) print "have"; else print "free " free }')

if [ "$state" = have ]; then
    log "token '$label' exists in $token_dir: keeping it"
else
    free=${state#free }
    [ -n "$free" ] || die "SoftHSM offers no uninitialised slot in $token_dir:
$slots"
    user_pin=$(read_pin "$pin_file" SOFTHSM_PIN_FILE) || exit 1
    if [ -n "$so_pin_file" ]; then
        so_pin=$(read_pin "$so_pin_file" SOFTHSM_SO_PIN_FILE) || exit 1
    else
        so_pin=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    fi
    log "initialising token '$label' in $token_dir"
    output=$(SOFTHSM_SIDECAR_SO_PIN=$so_pin pkcs11-tool --module "$module" --slot "$free" \
        --init-token --label "$label" --so-pin env:SOFTHSM_SIDECAR_SO_PIN 2>&1) \
        || die "initialising the token failed: $output"
    output=$(SOFTHSM_SIDECAR_SO_PIN=$so_pin SOFTHSM_SIDECAR_PIN=$user_pin pkcs11-tool \
        --module "$module" --token-label "$label" --login --login-type so \
        --so-pin env:SOFTHSM_SIDECAR_SO_PIN --init-pin --pin env:SOFTHSM_SIDECAR_PIN 2>&1) \
        || die "setting the user PIN failed: $output"
    unset user_pin so_pin output
fi

# A socket left by the previous run of this container would be in the way.
rm -f "$socket"
log "serving token '$label' ($module) on $socket"
exec p11-kit server --foreground --name "$socket" --provider "$module" \
    "pkcs11:token=$(uri_encode "$label")"
