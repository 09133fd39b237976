package config

import (
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/edged/edged/edged/errdefs"
)

// Network configures container networking (--net bridge).
type Network struct {
	// CNIConfList is a CNI network configuration list file; "" uses the
	// embedded configs/cni/edged-bridge.conflist.
	CNIConfList string `toml:"cni_conflist"`
	// CNIPluginDirs are searched for the CNI plugin binaries.
	CNIPluginDirs []string `toml:"cni_plugin_dirs"`
	// Subnet replaces the bridge's address range ("" keeps the conflist's).
	Subnet string `toml:"subnet"`
	// Bridge replaces the bridge's interface name ("" keeps the conflist's).
	Bridge string `toml:"bridge"`
	// Spares is how many bridge attachments are kept ready so that a
	// bridged container starts without waiting for the CNI plugins.
	Spares int `toml:"bridge_spares"`
}

func (n *Network) validate() error {
	if n.CNIConfList != "" && !filepath.IsAbs(n.CNIConfList) {
		return errdefs.InvalidArgument("network.cni_conflist", "%q must be an absolute path", n.CNIConfList)
	}
	for _, d := range n.CNIPluginDirs {
		if !filepath.IsAbs(d) {
			return errdefs.InvalidArgument("network.cni_plugin_dirs", "%q must be an absolute path", d)
		}
	}
	if n.Subnet != "" {
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil || p.Masked() != p || (p.Addr().Is4() && p.Bits() > 30) {
			return errdefs.InvalidArgument("network.subnet", "%q must be a network in CIDR notation with room for hosts, e.g. 10.213.0.0/16", n.Subnet)
		}
	}
	if n.Bridge != "" && (len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/: \t\n")) {
		return errdefs.InvalidArgument("network.bridge", "%q must be 1 to 15 characters without '/', ':' or spaces", n.Bridge)
	}
	if n.Spares < 0 || n.Spares > 16 {
		return errdefs.InvalidArgument("network.bridge_spares", "%d must be between 0 and 16", n.Spares)
	}
	return nil
}
