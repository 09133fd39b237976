package server

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/network"
	netnssvc "github.com/edged/edged/edged/services/netns"
	"github.com/edged/edged/netns"
	"github.com/edged/edged/netns/cni"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/containers/v1"
	taskapi "github.com/edged/edged/proto/services/tasks/v1"
)

// setupNetwork creates the task network hook and registers the Netns
// service. Named namespaces live in <state>/netns, per-container network
// state in <state>/network.
func (s *Server) setupNetwork(ctx context.Context, reg rpc.Registrar) (*network.Network, error) {
	namedDir := filepath.Join(s.cfg.State, "netns")
	var (
		mu    sync.Mutex
		named *netns.Manager
	)
	// The directory becomes a mount point on first use only.
	namedManager := func() (*netns.Manager, error) {
		mu.Lock()
		defer mu.Unlock()
		if named != nil {
			return named, nil
		}
		m, err := netns.New(namedDir)
		if err != nil {
			return nil, err
		}
		named = m
		return m, nil
	}
	n, err := network.New(ctx, network.Config{
		StateDir: filepath.Join(s.cfg.State, "network"),
		NamedDir: namedDir,
		Named:    namedManager,
		CNI: cni.Config{
			ConfListPath: s.cfg.Network.CNIConfList,
			PluginDirs:   s.cfg.Network.CNIPluginDirs,
			Subnet:       s.cfg.Network.Subnet,
			BridgeName:   s.cfg.Network.Bridge,
		},
		Alive: s.rt.Has,
		Task: func(ctx context.Context, ns, id string) (uint32, bool, error) {
			if !s.rt.Has(ns, id) {
				return 0, false, errdefs.ErrNotFound
			}
			st, err := s.rt.State(ctx, ns, id, "")
			if err != nil {
				return 0, false, err
			}
			return st.Pid, taskapi.Status(st.Status) == taskapi.Status_RUNNING, nil
		},
		Bundle: func(ns, id string) string { return s.rt.BundleDir(ns, id) },
		Spares: s.cfg.Network.Spares,
		Log:    s.log,
	})
	if err != nil {
		return nil, err
	}
	netnssvc.Register(reg, netnssvc.Config{Dir: namedDir, Manager: namedManager, InUse: n.NamedUsers})
	return n, nil
}

// cleanupNetworks tears down the networks of tasks that are gone (edged
// crashed or a shim died); call after the runtime recovered.
func (s *Server) cleanupNetworks(ctx context.Context) {
	if s.network == nil {
		return
	}
	if err := s.network.Cleanup(ctx, s.rt.Has); err != nil {
		s.log.Warn("network cleanup failed", "error", err)
	}
}

// deadTaskTeardownTimeout is the deadline of the network teardown of a
// task whose shim died. The teardown only removes records; the CNI DEL runs
// in the background with a deadline of its own (network.backgroundTimeout).
const deadTaskTeardownTimeout = time.Minute

// taskDead is the runtime's OnDead hook: a task whose shim died is never
// deleted through the API, so its network (namespace, address, iptables
// rules, record) is torn down here rather than left until edged restarts.
// The runtime calls it off any request path (the shim's watcher, or
// Recover), while it still holds the task's ID: no task of the container
// can be created until the teardown is over, so the network torn down is
// the dead task's. The exit events follow (taskGone), so a client
// recreating the task on them finds the network gone and the ID free.
func (s *Server) taskDead(ns, id string) {
	if s.network == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadTaskTeardownTimeout)
	defer cancel()
	if err := s.network.TeardownGone(ctx, ns, id); err != nil {
		s.log.Warn("network teardown of a task whose shim died failed; edged retries at its next start", "namespace", ns, "id", id, "error", err)
	}
}

// closeNetwork releases the spare attachments and waits for background
// releases.
func (s *Server) closeNetwork() {
	if s.network == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.network.Close(ctx); err != nil {
		s.log.Warn("network close failed", "error", err)
	}
}

// networkAnnotations returns the spec annotations recording the network
// mode and published ports of a container created with options o.
func networkAnnotations(o *api.SpecOptions) (map[string]string, error) {
	mode := network.ModeNone
	if o != nil && o.Network != "" {
		mode = o.Network
	}
	a := map[string]string{network.ModeAnnotation: mode}
	if o == nil || len(o.PortMappings) == 0 {
		return a, nil
	}
	ports := make([]cni.PortMapping, 0, len(o.PortMappings))
	for _, p := range o.PortMappings {
		if p == nil {
			return nil, errdefs.InvalidArgument("options.port_mappings", "an entry is empty")
		}
		ports = append(ports, cni.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol, HostIP: p.HostIp})
	}
	enc, err := network.FormatPorts(ports)
	if err != nil {
		return nil, err
	}
	a[network.PortsAnnotation] = enc
	return a, nil
}

// checkNetworkMode validates the syntax of a --net value; whether the
// named namespace or container exists is checked when the task is created.
func checkNetworkMode(mode string) error {
	switch {
	case mode == "" || mode == network.ModeNone || mode == network.ModeHost || mode == network.ModeBridge:
		return nil
	case strings.HasPrefix(mode, network.ModeNSPrefix):
		return identifiers.Validate("options.network netns name", strings.TrimPrefix(mode, network.ModeNSPrefix))
	case strings.HasPrefix(mode, network.ModeContainerPrefix):
		return identifiers.Validate("options.network container id", strings.TrimPrefix(mode, network.ModeContainerPrefix))
	}
	return errdefs.InvalidArgument("options.network", "%q must be host, none, bridge, ns:NAME or container:ID", mode)
}
