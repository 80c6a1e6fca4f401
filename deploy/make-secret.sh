#!/bin/sh
# Makes a cluster secret: 32 random bytes in hex, written as an environment file (HOTPOT_CLUSTER_SECRET=...) with
# mode 0600. Both systemd units read it (EnvironmentFile=); the dispatcher signs MRSW lease certificates with it and
# every node checks them, so every machine of a cluster needs the same file (docs/deploy.md).
#   deploy/make-secret.sh /etc/hotpot/secret.env           refuses to replace an existing file
#   deploy/make-secret.sh --force /etc/hotpot/secret.env   a new secret (then restart every process of the cluster)
set -eu
force=0
if [ "${1:-}" = --force ]; then
  force=1
  shift
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 [--force] FILE   (e.g. /etc/hotpot/secret.env)" >&2
  exit 2
fi
out=$1
if [ -e "$out" ] && [ "$force" -eq 0 ]; then
  echo "$0: $out exists; keeping it (--force makes a new secret, which every machine then needs)" >&2
  exit 1
fi
umask 077
dir=$(dirname -- "$out")
mkdir -p -- "$dir"
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
if [ "${#secret}" -ne 64 ]; then
  echo "$0: could not read 32 random bytes from /dev/urandom" >&2
  exit 1
fi
# Written beside the target and renamed over it: a reader never sees half a file.
tmp=$(mktemp -- "$dir/.hotpot-secret.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
printf 'HOTPOT_CLUSTER_SECRET=%s\n' "$secret" >"$tmp"
chmod 0600 -- "$tmp"
mv -f -- "$tmp" "$out"
trap - EXIT
echo "wrote $out (mode 0600): copy it to every machine of the cluster (docs/deploy.md)"
