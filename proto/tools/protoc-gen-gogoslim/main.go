// Command protoc-gen-gogoslim generates gogo message types like
// protoc-gen-gogofaster (same structs: no XXX_unrecognized, XXX_sizecache or
// XXX_NoUnkeyedLiteral fields) but without the generated Marshal, Unmarshal
// and Size methods. Encoding then goes through the table-driven code of the
// protobuf runtimes, which edged links anyway; the wire format is the same.
//
// It is used for the daemon's service APIs (proto/services), whose generated
// encoding code cost edged and edgectl about 0.8 MB each. Packages the shim
// links keep protoc-gen-gogofaster: shimd/wire encodes with the generated
// methods to keep the shim's heap small.
package main

import (
	"github.com/gogo/protobuf/vanity"
	"github.com/gogo/protobuf/vanity/command"
)

func main() {
	req := command.Read()
	files := vanity.FilterFiles(req.GetProtoFile(), vanity.NotGoogleProtobufDescriptorProto)
	vanity.ForEachFieldInFilesExcludingExtensions(vanity.OnlyProto2(files), vanity.TurnOffNullableForNativeTypesWithoutDefaultsOnly)
	vanity.ForEachFile(files, vanity.TurnOffGoUnrecognizedAll)
	vanity.ForEachFile(files, vanity.TurnOffGoUnkeyedAll)
	vanity.ForEachFile(files, vanity.TurnOffGoSizecacheAll)
	command.Write(command.Generate(req))
}
