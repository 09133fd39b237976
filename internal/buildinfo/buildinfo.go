// Package buildinfo holds the version stamped into the binaries at link
// time: -ldflags "-X github.com/edged/edged/internal/buildinfo.Version=v0.1.0".
package buildinfo

// Set by the linker; constant at run time.
var (
	Version  = "dev"
	Revision = "unknown"
)
