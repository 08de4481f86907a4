#!/bin/sh
# Install the test's host key and authorized key, start the agent (as user mesh, if /agent/agent.py is
# mounted) and run sshd in the foreground.
set -eu
install -m 0600 /keys/host /etc/ssh/ssh_host_ed25519_key
install -d -m 0700 -o mesh -g mesh /home/mesh/.ssh
install -m 0600 -o mesh -g mesh /keys/client.pub /home/mesh/.ssh/authorized_keys
if [ -f /agent/agent.py ]; then
    setpriv --reuid=mesh --regid=mesh --init-groups -- python3 -u /agent/agent.py &
fi
exec /usr/sbin/sshd -D -e \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key \
    -o PasswordAuthentication=no \
    -o AllowTcpForwarding=yes \
    -o ClientAliveInterval=10
