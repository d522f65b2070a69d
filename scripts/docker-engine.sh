#!/usr/bin/env bash
# Makes sure a Docker engine answers, for the docker runtime: installs Debian's docker.io when dockerd is
# missing (needs root and apt) and starts dockerd with every address inside 198.18.0.0/15, the range
# reserved for testing, so no lab network lands in 10/8, 172.16/12 or 192.168/16.
set -euo pipefail
if docker info >/dev/null 2>&1; then echo "docker-engine: an engine answers already"; exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker-engine: installing docker.io from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends docker.io >/dev/null || { apt-get update >/dev/null && apt-get install -y --no-install-recommends docker.io >/dev/null; }
fi
log=${MAILLAB_DOCKERD_LOG:-/tmp/maillab-dockerd.log}
echo "docker-engine: starting dockerd (log: $log)"
nohup dockerd --bip 198.18.0.1/24 --default-address-pool base=198.18.0.0/15,size=24 >"$log" 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then echo "docker-engine: ready"; exit 0; fi
  sleep 0.5
done
echo "docker-engine: dockerd did not answer within 30 s; last lines of $log:" >&2
tail -20 "$log" >&2
exit 1
