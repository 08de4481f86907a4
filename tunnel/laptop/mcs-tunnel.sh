#!/bin/sh
# The laptop side of the MCS tunnel: keep an SSH connection to the home server that forwards the laptop's
# 127.0.0.1:8080 to the MCS api (published on the server's 127.0.0.1:8080). The agent then uses
# MCS_URL=http://127.0.0.1:8080 and polls for work (`POST /v1/tasks/claim {"wait": 30}`), so nothing on
# the server needs to reach the laptop. Set MCS_TUNNEL_HOST (user@server) and, if they differ,
# MCS_TUNNEL_PORT (the server's sshd port) and MCS_TUNNEL_API_PORT (the api port on the server).
set -eu
: "${MCS_TUNNEL_HOST:?set MCS_TUNNEL_HOST to user@your-home-server}"
export AUTOSSH_GATETIME=0   # retry even if the very first connection fails (laptop just woke up)
exec autossh -M 0 -N \
    -p "${MCS_TUNNEL_PORT:-22}" \
    -o ServerAliveInterval=30 \
    -o ServerAliveCountMax=3 \
    -o ExitOnForwardFailure=yes \
    -o BatchMode=yes \
    -L "127.0.0.1:8080:127.0.0.1:${MCS_TUNNEL_API_PORT:-8080}" \
    "$MCS_TUNNEL_HOST"
