// Package cniconf holds the default CNI network configuration list of edged,
// embedded in the binary, so that a device needs no file in /etc/cni to run
// containers on the bridge network.
package cniconf

import (
	_ "embed"
	"slices"
)

//go:embed edged-bridge.conflist
var bridge []byte

// Bridge returns a copy of edged-bridge.conflist: a bridge "edged0" acting as
// gateway with IP masquerade and hairpin mode, host-local addresses from
// 10.213.0.0/16, port mappings (portmap) and the firewall plugin.
func Bridge() []byte { return slices.Clone(bridge) }
