#!/bin/sh
# `ssh` for load hosts that are network namespaces on this machine:
#
#   scale/netns-ssh.sh NAMESPACE COMMAND_STRING
#
# runs COMMAND_STRING with sh inside NAMESPACE, as `ssh HOST COMMAND_STRING`
# runs it with the login shell on HOST. scale/netns.sh passes it to
# scale/multi-host.sh as `--ssh-cmd`. Needs root and `ip` (iproute2).
[ $# -eq 2 ] || { echo "usage: netns-ssh.sh NAMESPACE COMMAND_STRING" >&2; exit 2; }
exec ip netns exec "$1" sh -c "$2"
