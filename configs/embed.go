// Package configs holds edged's default configuration and systemd units,
// embedded so that the binary carries its own defaults.
package configs

import _ "embed"

// DefaultTOML is configs/edged.toml: the defaults of every setting.
//
//go:embed edged.toml
var DefaultTOML string
