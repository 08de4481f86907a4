#!/bin/sh
# Install the test's client key and the rendezvous host's pinned key where ssh looks by default, start
# the laptop script (its settings come from the environment: MCS_TUNNEL_HOST, MCS_TUNNEL_WEBHOOK_PORT)
# in the background and run the agent, which registers once the tunnel carries its calls.
set -eu
install -d -m 0700 "$HOME/.ssh"
install -m 0600 /keys/client "$HOME/.ssh/id_ed25519"
install -m 0600 /keys/known_hosts_rendezvous "$HOME/.ssh/known_hosts"
sh /tunnel/mcs-tunnel.sh &
exec python3 -u /agent/agent.py
