#!/bin/sh
# The laptop side of the MCS tunnel: keep an SSH connection from this laptop to a host it can reach (the
# home server itself, or a rendezvous host such as a VPS or bastion) with autossh.
#
#   -L 127.0.0.1:8080:API_HOST:API_PORT    always: the laptop's 127.0.0.1:8080 reaches the api, which
#                                          that host has on its own loopback (published there by compose,
#                                          or brought there by the sidecar's -R); on a home server with
#                                          MCS_BIND set, the api is on that address instead
#   -R 127.0.0.1:PORT:127.0.0.1:PORT       with MCS_TUNNEL_WEBHOOK_PORT=PORT: that host's 127.0.0.1:PORT
#                                          reaches the agent listening on the laptop's 127.0.0.1:PORT, so
#                                          the sidecar's -L can carry webhooks to it (README, "Tunnel for
#                                          off-mesh agents"); without it the agent polls for its work
#
# Settings: MCS_TUNNEL_HOST (user@host, required), MCS_TUNNEL_PORT (its sshd port, 22),
# MCS_TUNNEL_API_HOST and MCS_TUNNEL_API_PORT (where that host has the api: 127.0.0.1 and 8080),
# MCS_TUNNEL_WEBHOOK_PORT (empty: no webhooks). The agent then uses MCS_URL=http://127.0.0.1:8080. BatchMode=yes: the key must load without
# a prompt (an unencrypted key kept for this, or one already in a running ssh-agent).
set -eu
: "${MCS_TUNNEL_HOST:?set MCS_TUNNEL_HOST to user@host (the home server or the rendezvous host)}"
webhook=${MCS_TUNNEL_WEBHOOK_PORT:-}
case "$webhook" in
    *[!0-9]*) echo "mcs-tunnel: MCS_TUNNEL_WEBHOOK_PORT must be a port number, not '$webhook'" >&2; exit 64 ;;
esac
export AUTOSSH_GATETIME=0   # retry even if the very first connection fails (laptop just woke up)
export AUTOSSH_POLL=60      # after a long outage, retry at least once a minute (autossh's default: 10 min)
set -- -L "127.0.0.1:8080:${MCS_TUNNEL_API_HOST:-127.0.0.1}:${MCS_TUNNEL_API_PORT:-8080}"
if [ -n "$webhook" ]; then
    set -- "$@" -R "127.0.0.1:$webhook:127.0.0.1:$webhook"
fi
exec autossh -M 0 -N \
    -p "${MCS_TUNNEL_PORT:-22}" \
    -o ServerAliveInterval=30 \
    -o ServerAliveCountMax=3 \
    -o ExitOnForwardFailure=yes \
    -o BatchMode=yes \
    "$@" \
    "$MCS_TUNNEL_HOST"
