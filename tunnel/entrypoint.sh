#!/bin/sh
# mcs-tunnel: keep one SSH connection with its forwards up, with autossh.
#
# Environment:
#   TUNNEL_TARGET            user@host[:port] to connect to (required; port 22 by default)
#   TUNNEL_FORWARDS          the forwards, as ssh takes them, whitespace-separated (required), e.g.
#                              "-L 0.0.0.0:8765:127.0.0.1:8765 -R 127.0.0.1:8080:api:8080"
#                            -L host:port:dest:port  listen here (in this container), reach dest from the far host
#                            -R host:port:dest:port  listen on the far host, reach dest from here (e.g. api:8080)
#   TUNNEL_KEY_FILE          the private key (default /run/secrets/tunnel_key)
#   TUNNEL_KNOWN_HOSTS_FILE  the far host's public key line(s) (default /run/secrets/tunnel_known_hosts)
#   TUNNEL_STRICT_HOST_KEY   yes (default): the host key must be in the known_hosts file;
#                            accept-new: trust whatever key the first connection shows (explicitly relaxed)
#
# Keepalive: ServerAliveInterval=30, ServerAliveCountMax=3 (a dead link is noticed within ~90 s and ssh
# exits), ExitOnForwardFailure=yes (no half-working tunnel), AUTOSSH_GATETIME=0 (retry even when the very
# first connection fails), AUTOSSH_POLL=60 (after a long outage autossh's retries back off to at most a
# minute apart, not its default ten). `mcs-tunnel check` exits 0 while the SSH connection is up (the
# HEALTHCHECK): it asks the connection's control socket. ControlMaster=auto, not yes: an ssh that died
# without cleaning up (a crash) leaves its socket behind, and `auto` clears such a stale socket and
# becomes the master, where `yes` would run without one and the check would fail for good.
# A bad setting exits 78 with one line saying which.
set -eu

CONTROL=/tmp/mcs-tunnel/control.sock

if [ "${1:-}" = "check" ]; then
    exec ssh -o ControlPath="$CONTROL" -O check tunnel 2>/dev/null
fi

die() { echo "mcs-tunnel: $*" >&2; exit 78; }

target=${TUNNEL_TARGET:-}
forwards=${TUNNEL_FORWARDS:-}
key_file=${TUNNEL_KEY_FILE:-/run/secrets/tunnel_key}
known_hosts_file=${TUNNEL_KNOWN_HOSTS_FILE:-/run/secrets/tunnel_known_hosts}
strict=${TUNNEL_STRICT_HOST_KEY:-yes}

[ -n "$target" ] || die "set TUNNEL_TARGET to user@host[:port]"
[ -n "$forwards" ] || die "set TUNNEL_FORWARDS, e.g. \"-L 0.0.0.0:8765:127.0.0.1:8765 -R 127.0.0.1:8080:api:8080\""
case "$strict" in
    yes|accept-new) ;;
    *) die "TUNNEL_STRICT_HOST_KEY must be yes or accept-new, not '$strict'" ;;
esac

userhost=${target%:*}
port=22
if [ "$userhost" != "$target" ]; then
    port=${target##*:}
fi
case "$userhost" in
    *@*) ;;
    *) die "TUNNEL_TARGET must look like user@host[:port], not '$target'" ;;
esac
case "$port" in
    ''|*[!0-9]*) die "TUNNEL_TARGET port must be a number, not '$port'" ;;
esac

# Check the forwards: pairs of -L/-R and a spec.
set -f  # no globbing of the specs
set -- $forwards
forward_args=""
while [ $# -gt 0 ]; do
    flag=$1
    case "$flag" in
        -L|-R) ;;
        *) die "TUNNEL_FORWARDS: expected -L or -R, got '$flag'" ;;
    esac
    [ $# -ge 2 ] || die "TUNNEL_FORWARDS: $flag needs a spec like [bind:]port:host:hostport"
    spec=$2
    case "$spec" in
        *:*:*) ;;
        *) die "TUNNEL_FORWARDS: '$flag $spec' is not [bind:]port:host:hostport" ;;
    esac
    forward_args="$forward_args $flag $spec"
    shift 2
done
set +f

[ -r "$key_file" ] || die "cannot read the private key $key_file (a compose secret: TUNNEL_KEY_FILE in .env)"
if [ "$strict" = yes ]; then
    [ -s "$known_hosts_file" ] || die "no host key in $known_hosts_file: pin the far host's key (ssh-keyscan -p PORT HOST), or set TUNNEL_STRICT_HOST_KEY=accept-new"
fi

# Private copies owned by the unprivileged user: ssh refuses a key others can read, and a secret mounted
# from the host has the host's owner and mode.
run_as=""
if [ "$(id -u)" = 0 ]; then
    home=/home/tunnel
    run_as="setpriv --reuid=tunnel --regid=tunnel --init-groups --"
else
    home=${HOME:-/tmp}
fi
mkdir -p "$home/.ssh" /tmp/mcs-tunnel
rm -f "$CONTROL"  # left over if ssh was killed (a container restart keeps /tmp)
cp "$key_file" "$home/.ssh/id"
if [ -s "$known_hosts_file" ]; then cp "$known_hosts_file" "$home/.ssh/known_hosts"; else : > "$home/.ssh/known_hosts"; fi
chmod 0700 "$home/.ssh" && chmod 0600 "$home/.ssh/id" "$home/.ssh/known_hosts"
if [ -n "$run_as" ]; then chown -R tunnel:tunnel "$home/.ssh" /tmp/mcs-tunnel; fi

export AUTOSSH_GATETIME=0
export AUTOSSH_POLL=60
export AUTOSSH_PORT=0  # no monitor port: ServerAlive* notices a dead link
export HOME="$home"

echo "mcs-tunnel: ssh -p $port $userhost$forward_args (host key check: $strict)" >&2
# shellcheck disable=SC2086  # forward_args is a checked list of words
exec $run_as autossh -M 0 -N -T \
    -p "$port" \
    -i "$home/.ssh/id" \
    -o IdentitiesOnly=yes \
    -o UserKnownHostsFile="$home/.ssh/known_hosts" \
    -o StrictHostKeyChecking="$strict" \
    -o BatchMode=yes \
    -o ServerAliveInterval=30 \
    -o ServerAliveCountMax=3 \
    -o ExitOnForwardFailure=yes \
    -o ConnectTimeout=15 \
    -o ControlMaster=auto \
    -o ControlPath="$CONTROL" \
    -o LogLevel=ERROR \
    $forward_args \
    "$userhost"
