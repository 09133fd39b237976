#!/usr/bin/env bash
# Regenerates every *.pb.go under proto/ from the .proto files, with the
# pinned tools: protoc 3.21.12 (Debian protobuf-compiler), gogofaster and our
# copy of ttrpc's service generator (versions pinned by go.mod `tool` lines).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin/tools
mkdir -p "$bin"
go build -o "$bin/protoc-gen-gogofaster" github.com/gogo/protobuf/protoc-gen-gogofaster
go build -o "$bin/protoc-gen-go-ttrpc" ./proto/tools/protoc-gen-go-ttrpc
gogo=$(go list -m -f '{{.Dir}}' github.com/gogo/protobuf)
M=""
for f in any empty timestamp field_mask duration; do
	M="${M}Mgoogle/protobuf/$f.proto=github.com/gogo/protobuf/types,"
done
# Directories to generate: the arguments, or every directory with .proto files.
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
	mapfile -t dirs < <(find proto -name '*.proto' -not -path 'proto/tools/*' -printf '%h\n' | sort -u)
fi
# One protoc call per directory: the generators want one Go package per call.
for dir in "${dirs[@]}"; do
	rm -f "$dir"/*.pb.go
	protoc -I proto -I "$gogo/protobuf" \
		--plugin=protoc-gen-gogofaster="$bin/protoc-gen-gogofaster" \
		--plugin=protoc-gen-go-ttrpc="$bin/protoc-gen-go-ttrpc" \
		--gogofaster_out="${M}paths=source_relative:proto" \
		--go-ttrpc_out="${M}paths=source_relative:proto" \
		"$dir"/*.proto
	gofmt -w "$dir"/*.pb.go
done
