#!/usr/bin/env bash
# Generates the Python stubs for proto/hotpot/v1/*.proto into clients/python/hotpot_gen (gitignored) with
# Debian's protoc + grpc_python_plugin (apt: protobuf-compiler protobuf-compiler-grpc; runtime: python3-grpcio
# python3-protobuf). The wrapper package `hotpot` adds hotpot_gen/hotpot to its path, so the stubs import as
# hotpot.v1.data_pb2 and friends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/hotpot_gen"
plugin=$(command -v grpc_python_plugin || true)
if [ -z "$plugin" ] || ! command -v protoc >/dev/null; then
  echo "gen.sh: protoc and grpc_python_plugin are required (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$out"
(cd "$root/proto" && protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" hotpot/v1/*.proto)
echo "gen.sh: stubs in $out"
