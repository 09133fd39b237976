// Package cni attaches containers' network namespaces to a CNI network (by
// default the edged0 bridge of configs/cni/edged-bridge.conflist) by running
// the standard CNI plugins through libcni.
//
// Setup runs ADD through the plugin chain (bridge + host-local, portmap,
// firewall) and returns the container's addresses; Teardown runs DEL and is
// idempotent; Check runs CHECK. Everything the plugins remember lives under
// the state directory: libcni's result cache in <state>/cache and host-local's
// address allocations in <state>/networks. Plugins run in a process group
// of their own, killed whole when the context is done, and their output is
// bounded (see pluginExec).
//
// The package also builds the /etc/resolv.conf and /etc/hosts content for a
// container (see ResolvConf and Hosts).
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	cniconf "github.com/edged/edged/configs/cni"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/netns"
)

// DefaultIfName is the interface name inside the container when
// Options.IfName is empty.
const DefaultIfName = "eth0"

// rollbackTimeout bounds the DEL that undoes a failed ADD. It runs even
// when the caller's context is done (so that nothing is left), but a hung
// plugin must not hold the caller forever.
const rollbackTimeout = time.Minute

// maxConfListSize bounds a conflist read from a file.
const maxConfListSize = 1 << 20

// optionalPlugins are dropped from the list, with a warning, when their
// binary is not installed; every other plugin is required.
var optionalPlugins = map[string]bool{"firewall": true, "tuning": true}

// DefaultPluginDirs returns where plugin binaries are looked up when
// Config.PluginDirs is empty: /usr/lib/cni (Debian's containernetworking-plugins)
// and /opt/cni/bin (upstream release tarballs).
func DefaultPluginDirs() []string { return []string{"/usr/lib/cni", "/opt/cni/bin"} }

// Config configures a Network.
type Config struct {
	// StateDir holds libcni's cache (<StateDir>/cache) and host-local's
	// allocations (<StateDir>/networks, unless the conflist sets
	// ipam.dataDir). Required, absolute.
	StateDir string
	// ConfList is the network configuration list (JSON). When empty,
	// ConfListPath is read, and when that is empty too the embedded default
	// (configs/cni/edged-bridge.conflist) is used.
	ConfList []byte
	// ConfListPath is a conflist file, used when ConfList is empty.
	ConfListPath string
	// PluginDirs are searched for plugin binaries; empty means
	// DefaultPluginDirs().
	PluginDirs []string
	// Subnet, when set, replaces the host-local address ranges of the bridge
	// plugin, e.g. "10.213.0.0/16". The gateway is the subnet's first address.
	Subnet string
	// BridgeName, when set, replaces the bridge plugin's bridge name.
	BridgeName string
}

// Options are the per-container settings of Setup, Teardown and Check.
type Options struct {
	// IfName is the interface name inside the container; "" means eth0.
	IfName string
	// PortMappings publish container ports on the host (portmap plugin).
	PortMappings []PortMapping
}

// PortMapping publishes ContainerPort of the container on HostPort of the host.
type PortMapping struct {
	HostPort      uint32
	ContainerPort uint32
	// Protocol is "tcp" (when empty), "udp" or "sctp".
	Protocol string
	// HostIP limits the mapping to one host address; "" means all.
	HostIP string
}

// Result is what Setup attached.
type Result struct {
	// Interfaces are the interfaces the plugins created or used: the bridge
	// and the host end of the veth (Sandbox ""), and the container's
	// interface (Sandbox is the netns path).
	Interfaces []Interface
	// IPs are the container's addresses.
	IPs []IP
	// Gateway is the first IPv4 gateway of the container (the bridge's
	// address), or the zero Addr.
	Gateway netip.Addr
	// DNS is what the plugins suggest (usually empty with the bridge).
	DNS DNS
}

// Interface is one network interface of a Result.
type Interface struct {
	Name    string
	MAC     string
	Sandbox string
}

// IP is one address of a Result.
type IP struct {
	// Address is the address with its subnet's prefix length, e.g. 10.213.0.2/16.
	Address netip.Prefix
	// Gateway is the default gateway for this address, if any.
	Gateway netip.Addr
	// Interface is the name of the interface carrying the address.
	Interface string
}

// DNS holds DNS settings suggested by the plugins.
type DNS struct {
	Nameservers []string
	Domain      string
	Search      []string
	Options     []string
}

// IPv4 returns the container's first IPv4 address, or the zero Addr.
func (r *Result) IPv4() netip.Addr {
	for _, ip := range r.IPs {
		if ip.Address.Addr().Is4() {
			return ip.Address.Addr()
		}
	}
	return netip.Addr{}
}

// Network runs one CNI network configuration list. It is safe for
// concurrent use with different container IDs.
type Network struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// New loads the configuration list, points host-local and the libcni cache at
// cfg.StateDir, drops optional plugins that are not installed and checks that
// every remaining plugin exists and supports the list's CNI version.
// Errors: ErrInvalidArgument for a bad Config or conflist,
// ErrFailedPrecondition when a required plugin is missing.
func New(ctx context.Context, cfg Config) (*Network, error) {
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, errdefs.InvalidArgument("cni state dir", "%q must be an absolute path", cfg.StateDir)
	}
	raw := cfg.ConfList
	if len(raw) == 0 && cfg.ConfListPath != "" {
		var err error
		if raw, err = readConfList(cfg.ConfListPath); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		raw = cniconf.Bridge()
	}
	dirs := cfg.PluginDirs
	if len(dirs) == 0 {
		dirs = DefaultPluginDirs()
	}
	cacheDir := filepath.Join(cfg.StateDir, "cache")
	dataDir := filepath.Join(cfg.StateDir, "networks")
	for _, d := range []string{cacheDir, dataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cni: %w", err)
		}
	}
	conf, err := rewriteConfList(ctx, raw, cfg, dataDir, dirs)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, errdefs.InvalidArgument("cni conflist", "%v", err)
	}
	if list.CNIVersion == "" {
		return nil, errdefs.InvalidArgument("cni conflist", "cniVersion is missing")
	}
	n := &Network{
		cni:  libcni.NewCNIConfigWithCacheDir(dirs, cacheDir, &pluginExec{}),
		list: list,
	}
	if _, err := n.cni.ValidateNetworkList(ctx, list); err != nil {
		return nil, fmt.Errorf("cni: network %q: %v: %w", list.Name, err, errdefs.ErrFailedPrecondition)
	}
	return n, nil
}

// Name returns the network's name from the conflist.
func (n *Network) Name() string { return n.list.Name }

// ConfList returns the effective configuration list (after the rewrites
// New applied), as passed to the plugins.
func (n *Network) ConfList() []byte { return append([]byte(nil), n.list.Bytes...) }

// Setup attaches the network namespace at netnsPath to the network as
// container containerID and returns what was configured. If a plugin fails,
// whatever the earlier plugins did is undone before the error is returned.
// Errors: ErrInvalidArgument for bad arguments, ErrNotFound when netnsPath
// does not exist, ErrAlreadyExists when containerID is already set up on this
// interface, ErrResourceExhausted when the subnet has no free address.
func (n *Network) Setup(ctx context.Context, containerID, netnsPath string, opts Options) (*Result, error) {
	rt, err := runtimeConf(containerID, netnsPath, opts)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(netnsPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cni: network namespace %s: %w", netnsPath, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("cni: %w", err)
	}
	// A second ADD would fail on the existing interface, and the rollback
	// DEL would then tear down the first attachment: refuse up front.
	if prev, err := n.cni.GetNetworkListCachedResult(n.list, rt); err == nil && prev != nil {
		return nil, fmt.Errorf("cni: container %s is already on network %q (interface %s): %w", containerID, n.list.Name, rt.IfName, errdefs.ErrAlreadyExists)
	}
	res, err := n.cni.AddNetworkList(ctx, n.list, rt)
	if err != nil {
		err = n.classify(fmt.Errorf("cni: add container %s to network %q: %w", containerID, n.list.Name, err))
		if derr := n.rollback(ctx, rt); derr != nil {
			err = errors.Join(err, fmt.Errorf("cni: undo failed add of %s: %w", containerID, derr))
		}
		return nil, err
	}
	out, err := convertResult(res)
	if err != nil {
		if derr := n.rollback(ctx, rt); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("cni: container %s: %w", containerID, err)
	}
	return out, nil
}

// rollback runs the DEL undoing a failed ADD: also when ctx is done (the
// usual reason the ADD failed), within rollbackTimeout.
func (n *Network) rollback(ctx context.Context, rt *libcni.RuntimeConf) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	return n.cni.DelNetworkList(ctx, n.list, rt)
}

// Teardown detaches container containerID from the network: removes its
// veth, releases its addresses, removes its port mappings and firewall and
// masquerade rules. It is idempotent and succeeds when the container was never
// set up, when it was already torn down, and when netnsPath no longer exists.
// The options recorded by a completed Setup (cached by libcni) take
// precedence over opts, so opts may be left empty; pass the Setup options
// anyway to clean up after a Setup that crashed before it completed (no
// cache then, and portmap needs the mappings to find its rules).
func (n *Network) Teardown(ctx context.Context, containerID, netnsPath string, opts Options) error {
	rt, err := runtimeConf(containerID, netnsPath, opts)
	if err != nil {
		return err
	}
	if _, cached, err := n.cni.GetNetworkListCachedConfig(n.list, rt); err == nil && cached != nil {
		if cached.IfName != "" {
			rt.IfName = cached.IfName
		}
		if cached.CapabilityArgs != nil {
			rt.CapabilityArgs = cached.CapabilityArgs
		}
	}
	// A path that is missing, or a plain file (a crash between creating
	// the file and mounting the namespace on it), is no namespace: the
	// plugins refuse such a CNI_NETNS ("unknown FS magic").
	if !netns.IsNamespace(netnsPath) {
		return n.teardownWithoutNetns(ctx, rt)
	}
	if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
		return fmt.Errorf("cni: remove container %s from network %q: %w", containerID, n.list.Name, err)
	}
	return nil
}

// Check asks the plugins to verify that container containerID is still
// attached as Setup left it (port mappings are not checked, see checkList).
// ErrNotFound if it was never set up.
func (n *Network) Check(ctx context.Context, containerID, netnsPath string, opts Options) error {
	rt, err := runtimeConf(containerID, netnsPath, opts)
	if err != nil {
		return err
	}
	if res, err := n.cni.GetNetworkListCachedResult(n.list, rt); err != nil || res == nil {
		return fmt.Errorf("cni: container %s on network %q: %w", containerID, n.list.Name, errdefs.ErrNotFound)
	}
	if _, cached, err := n.cni.GetNetworkListCachedConfig(n.list, rt); err == nil && cached != nil && cached.CapabilityArgs != nil {
		rt.CapabilityArgs = cached.CapabilityArgs
	}
	if err := n.cni.CheckNetworkList(ctx, n.checkList(), rt); err != nil {
		return fmt.Errorf("cni: check container %s on network %q: %w", containerID, n.list.Name, err)
	}
	return nil
}

// checkList returns the list Check runs: the configured one without the
// portmap plugin, whose CHECK in containernetworking-plugins v1.1 fails
// whenever ip6tables is installed and an IPv4 port is mapped (it looks for
// the IPv4 DNAT chain in the IPv6 nat table too). Name and version stay, so
// libcni still finds the cached result.
func (n *Network) checkList() *libcni.NetworkConfigList {
	l := *n.list
	l.Plugins = nil
	for _, p := range n.list.Plugins {
		if p.Network.Type != "portmap" {
			l.Plugins = append(l.Plugins, p)
		}
	}
	return &l
}

// classify adds an errdefs kind to plugin errors that have one.
func (n *Network) classify(err error) error {
	if strings.Contains(err.Error(), "no IP addresses available") {
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	}
	return err
}

func runtimeConf(containerID, netnsPath string, opts Options) (*libcni.RuntimeConf, error) {
	if err := identifiers.Validate("container id", containerID); err != nil {
		return nil, err
	}
	if netnsPath == "" || !filepath.IsAbs(netnsPath) {
		return nil, errdefs.InvalidArgument("netns path", "%q must be an absolute path", netnsPath)
	}
	ifName := opts.IfName
	if ifName == "" {
		ifName = DefaultIfName
	}
	if len(ifName) > 15 || strings.ContainsAny(ifName, "/: \t\n") || ifName == "." || ifName == ".." {
		return nil, errdefs.InvalidArgument("interface name", "%q must be 1 to 15 characters without '/', ':' or spaces", ifName)
	}
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netnsPath,
		IfName:      ifName,
	}
	if len(opts.PortMappings) > 0 {
		pms := make([]map[string]any, 0, len(opts.PortMappings))
		for i, pm := range opts.PortMappings {
			field := fmt.Sprintf("port mapping %d", i)
			if pm.HostPort == 0 || pm.HostPort > 65535 {
				return nil, errdefs.InvalidArgument(field, "host port %d must be 1 to 65535", pm.HostPort)
			}
			if pm.ContainerPort == 0 || pm.ContainerPort > 65535 {
				return nil, errdefs.InvalidArgument(field, "container port %d must be 1 to 65535", pm.ContainerPort)
			}
			proto := strings.ToLower(pm.Protocol)
			switch proto {
			case "":
				proto = "tcp"
			case "tcp", "udp", "sctp":
			default:
				return nil, errdefs.InvalidArgument(field, "protocol %q must be tcp, udp or sctp", pm.Protocol)
			}
			m := map[string]any{
				"hostPort":      pm.HostPort,
				"containerPort": pm.ContainerPort,
				"protocol":      proto,
			}
			if pm.HostIP != "" {
				ip, err := netip.ParseAddr(pm.HostIP)
				if err != nil || ip.Zone() != "" {
					return nil, errdefs.InvalidArgument(field, "host IP %q is not an IP address", pm.HostIP)
				}
				m["hostIP"] = ip.String()
			}
			pms = append(pms, m)
		}
		rt.CapabilityArgs = map[string]any{"portMappings": pms}
	}
	return rt, nil
}

func readConfList(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cni conflist %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("cni: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfListSize+1))
	if err != nil {
		return nil, fmt.Errorf("cni: read %s: %w", path, err)
	}
	if len(b) > maxConfListSize {
		return nil, errdefs.InvalidArgument("cni conflist", "%s is larger than %d bytes", path, maxConfListSize)
	}
	return b, nil
}

// rewriteConfList applies cfg's overrides and the state dir to the raw list
// and drops optional plugins that are not installed.
func rewriteConfList(ctx context.Context, raw []byte, cfg Config, dataDir string, dirs []string) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errdefs.InvalidArgument("cni conflist", "not valid JSON: %v", err)
	}
	plugins, ok := list["plugins"].([]any)
	if !ok || len(plugins) == 0 {
		return nil, errdefs.InvalidArgument("cni conflist", "no \"plugins\" list")
	}
	var subnet netip.Prefix
	if cfg.Subnet != "" {
		p, err := netip.ParsePrefix(cfg.Subnet)
		if err != nil || p.Masked() != p || p.Bits() > 30 && p.Addr().Is4() {
			return nil, errdefs.InvalidArgument("cni subnet", "%q must be a network address in CIDR notation with room for hosts, e.g. 10.213.0.0/16", cfg.Subnet)
		}
		subnet = p
	}
	if cfg.BridgeName != "" && (len(cfg.BridgeName) > 15 || strings.ContainsAny(cfg.BridgeName, "/: \t\n")) {
		return nil, errdefs.InvalidArgument("cni bridge name", "%q must be 1 to 15 characters without '/', ':' or spaces", cfg.BridgeName)
	}
	kept := plugins[:0]
	for i, p := range plugins {
		plugin, ok := p.(map[string]any)
		if !ok {
			return nil, errdefs.InvalidArgument("cni conflist", "plugin %d is not an object", i)
		}
		typ, _ := plugin["type"].(string)
		if typ == "" || strings.ContainsAny(typ, `/\`) {
			return nil, errdefs.InvalidArgument("cni conflist", "plugin %d has no valid \"type\"", i)
		}
		if _, err := invoke.FindInPath(typ, dirs); err != nil {
			if optionalPlugins[typ] {
				slog.WarnContext(ctx, "cni: optional plugin not installed, leaving it out", "plugin", typ, "dirs", dirs)
				continue
			}
			return nil, fmt.Errorf("cni: plugin %q not found in %v (install containernetworking-plugins): %w", typ, dirs, errdefs.ErrFailedPrecondition)
		}
		if typ == "bridge" && cfg.BridgeName != "" {
			plugin["bridge"] = cfg.BridgeName
		}
		if ipam, ok := plugin["ipam"].(map[string]any); ok && ipam["type"] == "host-local" {
			if _, set := ipam["dataDir"]; !set {
				ipam["dataDir"] = dataDir
			}
			if subnet.IsValid() && typ == "bridge" {
				ipam["ranges"] = []any{[]any{map[string]any{"subnet": subnet.String()}}}
				delete(ipam, "subnet")
				delete(ipam, "rangeStart")
				delete(ipam, "rangeEnd")
				delete(ipam, "gateway")
			}
		}
		kept = append(kept, plugin)
	}
	list["plugins"] = kept
	out, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("cni: %w", err)
	}
	return out, nil
}

func convertResult(res types.Result) (*Result, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert plugin result: %w", err)
	}
	out := &Result{
		DNS: DNS{
			Nameservers: r.DNS.Nameservers,
			Domain:      r.DNS.Domain,
			Search:      r.DNS.Search,
			Options:     r.DNS.Options,
		},
	}
	for _, i := range r.Interfaces {
		out.Interfaces = append(out.Interfaces, Interface{Name: i.Name, MAC: i.Mac, Sandbox: i.Sandbox})
	}
	for _, ipc := range r.IPs {
		addr, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, fmt.Errorf("plugin returned a bad address %v", ipc.Address)
		}
		ones, _ := ipc.Address.Mask.Size()
		ip := IP{Address: netip.PrefixFrom(addr.Unmap(), ones)}
		if gw, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			ip.Gateway = gw.Unmap()
		}
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(r.Interfaces) {
			ip.Interface = r.Interfaces[*ipc.Interface].Name
		}
		if !out.Gateway.IsValid() && ip.Gateway.Is4() {
			out.Gateway = ip.Gateway
		}
		out.IPs = append(out.IPs, ip)
	}
	return out, nil
}

// teardownWithoutNetns runs DEL for a container whose network namespace is
// gone, or never was mounted, with an empty CNI_NETNS (which the spec
// allows for DEL). The kernel removed the veth with the namespace, but the bridge
// plugin (v1.1) learns which masquerade rules to remove only from the
// addresses it finds on the container's interface, so without the namespace
// it leaves its per-container NAT chain behind. Remove it after DEL.
func (n *Network) teardownWithoutNetns(ctx context.Context, rt *libcni.RuntimeConf) error {
	nsless := *rt
	nsless.NetNS = ""
	rt = &nsless
	if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
		return fmt.Errorf("cni: remove container %s from network %q: %w", rt.ContainerID, n.list.Name, err)
	}
	if !n.masquerades() {
		return nil
	}
	return removeMasquerade(ctx, n.list.Name, rt.ContainerID)
}

// masquerades reports whether the list has a bridge plugin with ipMasq.
func (n *Network) masquerades() bool {
	for _, p := range n.list.Plugins {
		if p.Network.Type != "bridge" {
			continue
		}
		var c struct {
			IPMasq bool `json:"ipMasq"`
		}
		if json.Unmarshal(p.Bytes, &c) == nil && c.IPMasq {
			return true
		}
	}
	return false
}
