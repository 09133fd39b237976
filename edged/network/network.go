// Package network gives tasks their network: it implements the tasks
// service's Network hook for the modes of `edgectl run --net`:
//
//   - none (the default): the private network namespace runc creates, with
//     loopback only, and an /etc/hosts naming localhost only;
//   - host: the host's namespace, with the host's /etc/resolv.conf and
//     /etc/hosts bind mounted read-only;
//   - bridge: a namespace of its own (bind mounted under the state
//     directory) attached to the CNI network (netns/cni), with published
//     ports (portmap), a generated /etc/resolv.conf and /etc/hosts;
//   - ns:NAME: a named namespace of the netns service;
//   - container:ID: the namespace of another container's running task
//     (pod-like). When that container is bridged its namespace and address
//     are kept until the last container that joined it is torn down.
//
// What was set up for a container is recorded in
// <state>/network/containers/<ns>/<id>/state.json before anything is
// created, so that Teardown, and Cleanup after a crash of edged, can undo it.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/internal/atomicfile"
	"github.com/edged/edged/netns"
	"github.com/edged/edged/netns/cni"
)

// ModeAnnotation is the spec annotation holding the network mode a
// container was created with: none, host, bridge, ns:NAME or container:ID.
// Containers without it (created with a raw spec) are left alone.
const ModeAnnotation = "io.edged.network"

// PortsAnnotation is the spec annotation holding the container's published
// ports as a JSON array of cni.PortMapping (bridge mode only).
const PortsAnnotation = "io.edged.network.ports"

// Network modes.
const (
	ModeNone   = "none"
	ModeHost   = "host"
	ModeBridge = "bridge"
	// ModeNSPrefix prefixes the name of a named namespace: "ns:NAME".
	ModeNSPrefix = "ns:"
	// ModeContainerPrefix prefixes a container ID: "container:ID".
	ModeContainerPrefix = "container:"
)

// Files bind mounted into containers.
const (
	resolvConfPath = "/etc/resolv.conf"
	hostsPath      = "/etc/hosts"
	// bundleHosts is the hosts file of mode none in the task's bundle.
	bundleHosts = "hosts"
)

// TaskInfo reports the pid of a container's task and whether it runs.
// It returns an error wrapping ErrNotFound when the container has no task.
type TaskInfo func(ctx context.Context, ns, id string) (pid uint32, running bool, err error)

// Config configures a Network.
type Config struct {
	// StateDir is <state>/network: per-container records and namespaces
	// (containers/), CNI cache and address allocations (cni/). Required.
	StateDir string
	// NamedDir holds the named namespaces joined with ns:NAME
	// (<state>/netns). Required.
	NamedDir string
	// Named returns the manager of NamedDir, creating it on first use.
	// Required.
	Named func() (*netns.Manager, error)
	// CNI configures the bridge network; its StateDir is set by New.
	CNI cni.Config
	// Task looks up the task of a container joined with container:ID.
	// Required.
	Task TaskInfo
	// Alive reports whether the runtime holds a task of the container,
	// without asking its shim (the runtime's Has). NamedUsers uses it; nil
	// means Task is asked instead, a shim call per live task.
	Alive func(ns, id string) bool
	// Spares is how many bridge attachments are kept ready ahead of time
	// (see attach.go); 0 attaches every container on demand.
	Spares int
	// Bundle returns the bundle directory of a task: where the hosts file
	// of a container of mode none is, which a container joining its
	// network shares. Nil: joiners of such containers get no hosts file.
	Bundle func(ns, id string) string
	// Log receives warnings; nil means slog.Default().
	Log *slog.Logger
}

// Network implements the tasks service's Network hook. It is safe for
// concurrent use.
type Network struct {
	cfg        Config
	containers string // <StateDir>/containers: per-container records
	netnsDir   string // <StateDir>/netns: attachments' namespaces, a shared mount point
	sparesDir  string // <StateDir>/spares: spare attachments' records

	spareMu sync.Mutex // spare records
	wg      sync.WaitGroup

	// cniLoading is held (a send) while the CNI network is loaded, which
	// runs every plugin's VERSION: outside mu, so that a slow plugin holds
	// up only the containers that need the CNI network.
	cniLoading chan struct{}

	mu    sync.Mutex
	locks map[string]*keyLock
	cni   *cni.Network // created on first use of bridge
	// mountReady: netnsDir is a shared mount point.
	mountReady bool
	refilling  bool
	closed     bool
	hurry      chan struct{} // closed by waitBackground: delayed work starts at once

	bgDelay time.Duration // backgroundDelay; tests change it
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// state is what was set up for one container, as recorded on disk.
type state struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	Mode      string `json:"mode"`
	// CNIID is the container ID given to the CNI plugins (bridge).
	CNIID string `json:"cni_id,omitempty"`
	// Netns is the namespace file edged created (bridge).
	Netns string            `json:"netns,omitempty"`
	Ports []cni.PortMapping `json:"ports,omitempty"`
	IPs   []string          `json:"ips,omitempty"`
	// Result is what the CNI plugins attached (bridge).
	Result *cni.Result `json:"result,omitempty"`
	// Target is the bridged container whose namespace this one joined.
	Target string `json:"target,omitempty"`
	// Joiners are the containers ("ns/id") that joined this one's namespace.
	Joiners []string `json:"joiners,omitempty"`
	// Released is set when this container's task was deleted while
	// joiners still use its namespace; the last joiner's Teardown finishes it.
	Released bool `json:"released,omitempty"`
}

// New prepares the state directory. The CNI network is loaded on the first
// bridged container, so that edged runs without the CNI plugins installed as
// long as bridge mode is not used.
func New(ctx context.Context, cfg Config) (*Network, error) {
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, errdefs.InvalidArgument("network state dir", "%q must be an absolute path", cfg.StateDir)
	}
	if cfg.Named == nil || cfg.Task == nil || cfg.NamedDir == "" {
		return nil, errdefs.InvalidArgument("network config", "NamedDir, Named and Task are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Spares < 0 {
		return nil, errdefs.InvalidArgument("network spares", "%d must not be negative", cfg.Spares)
	}
	cfg.CNI.StateDir = filepath.Join(cfg.StateDir, "cni")
	return &Network{cfg: cfg, containers: filepath.Join(cfg.StateDir, "containers"),
		netnsDir: filepath.Join(cfg.StateDir, "netns"), sparesDir: filepath.Join(cfg.StateDir, "spares"),
		locks: map[string]*keyLock{}, cniLoading: make(chan struct{}, 1),
		hurry: make(chan struct{}), bgDelay: backgroundDelay}, nil
}

// NetnsDir is where the bridge attachments' namespace files are bind
// mounted. It becomes a shared mount point (see package netns) when the
// first bridged container is set up, and stays one.
func (n *Network) NetnsDir() string { return n.netnsDir }

// prepareMountDir makes the netns directory a shared mount point, as
// the namespace files bind mounted in it need, on first use: edged only
// adds a mount to the host when bridge mode is used.
func (n *Network) prepareMountDir() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mountReady {
		return nil
	}
	if _, err := netns.New(n.netnsDir); err != nil {
		return err
	}
	n.mountReady = true
	return nil
}

// cniNetwork returns the CNI network, loading it on first use. One caller
// loads it at a time; the others wait for it, or for their ctx.
func (n *Network) cniNetwork(ctx context.Context) (*cni.Network, error) {
	if c := n.loadedCNI(); c != nil {
		return c, nil
	}
	select {
	case n.cniLoading <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("bridge network: waiting for the CNI network to load: %w", ctx.Err())
	}
	defer func() { <-n.cniLoading }()
	if c := n.loadedCNI(); c != nil {
		return c, nil
	}
	c, err := cni.New(ctx, n.cfg.CNI)
	if err != nil {
		return nil, fmt.Errorf("bridge network: %w", err)
	}
	n.mu.Lock()
	n.cni = c
	n.mu.Unlock()
	return c, nil
}

// loadedCNI returns the CNI network if it was loaded, or nil.
func (n *Network) loadedCNI() *cni.Network {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cni
}

// lock serialises work on one container's network.
func (n *Network) lock(ns, id string) func() {
	k := ns + "/" + id
	n.mu.Lock()
	l := n.locks[k]
	if l == nil {
		l = &keyLock{}
		n.locks[k] = l
	}
	l.refs++
	n.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		n.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(n.locks, k)
		}
		n.mu.Unlock()
	}
}

func (n *Network) dir(ns, id string) string { return filepath.Join(n.containers, ns, id) }

func (n *Network) readState(ns, id string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(n.dir(ns, id), "state.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network of %s/%s: %w", ns, id, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("network state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("network state of %s/%s: %v: %w", ns, id, err, errdefs.ErrDataLoss)
	}
	return &st, nil
}

func (n *Network) writeState(st *state) error {
	d := n.dir(st.Namespace, st.ID)
	if err := os.MkdirAll(d, 0o711); err != nil {
		return fmt.Errorf("network state: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("network state: %w", err)
	}
	// Runtime state (the state dir): replaced atomically, not fsynced.
	if err := atomicfile.Replace(filepath.Join(d, "state.json"), b, 0o600); err != nil {
		return fmt.Errorf("network state: %w", err)
	}
	return nil
}

// Setup prepares the network of container c for its task according to its
// ModeAnnotation and changes spec accordingly. On failure nothing is left.
func (n *Network) Setup(ctx context.Context, ns string, c metadata.Container, spec *specs.Spec, bundle string) (err error) {
	mode, ok := spec.Annotations[ModeAnnotation]
	if !ok {
		return nil
	}
	if err := identifiers.Validate("container id", c.ID); err != nil {
		return err
	}
	if spec.Linux == nil {
		return errdefs.InvalidArgument("spec", "container %q: networking needs a Linux spec", c.ID)
	}
	ports, err := parsePorts(spec.Annotations[PortsAnnotation])
	if err != nil {
		return err
	}
	if len(ports) > 0 && mode != ModeBridge {
		return errdefs.InvalidArgument("ports", "container %q: publishing ports needs the bridge network, not %q", c.ID, mode)
	}
	// Checked before anything is set up: with bridge, the hosts file is
	// written only after the CNI ADD.
	if spec.Hostname != "" && !hasMount(spec, hostsPath) && writesHosts(mode) {
		if err := cni.ValidateHostname(spec.Hostname); err != nil {
			return fmt.Errorf("network %q of container %q: %w", mode, c.ID, err)
		}
	}
	start := time.Now()
	unlock := n.lock(ns, c.ID)
	defer unlock()
	// A record left by a task whose shim died (no Delete, so no Teardown)
	// is undone first.
	if _, err := n.readState(ns, c.ID); err == nil {
		n.cfg.Log.WarnContext(ctx, "network: removing the stale network of a previous task", "namespace", ns, "id", c.ID)
		if err := n.teardownLocked(ctx, ns, c.ID); err != nil {
			return err
		}
		if st, err := n.readState(ns, c.ID); err == nil {
			return fmt.Errorf("container %q: its previous network is still used by %s: %w", c.ID, strings.Join(st.Joiners, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	st := &state{Namespace: ns, ID: c.ID, Mode: mode}
	defer func() {
		if err != nil {
			if terr := n.teardownState(context.WithoutCancel(ctx), st); terr != nil {
				err = errors.Join(err, terr)
			}
		}
	}()
	switch {
	case mode == ModeNone:
		st = nil // no record: the hosts file goes with the bundle
		err = n.setupNone(spec, bundle)
	case mode == ModeHost:
		err = setupHost(spec)
		st = nil // nothing to undo
	case mode == ModeBridge:
		st.Ports = ports
		err = n.setupBridge(ctx, st, spec)
	case strings.HasPrefix(mode, ModeNSPrefix):
		err = n.setupNamed(ctx, st, strings.TrimPrefix(mode, ModeNSPrefix), spec)
	case strings.HasPrefix(mode, ModeContainerPrefix):
		err = n.setupJoin(ctx, st, strings.TrimPrefix(mode, ModeContainerPrefix), spec)
	default:
		err = errdefs.InvalidArgument("network", "%q must be host, none, bridge, ns:NAME or container:ID", mode)
	}
	if err != nil {
		return fmt.Errorf("network %q of container %q: %w", mode, c.ID, err)
	}
	n.cfg.Log.DebugContext(ctx, "network set up", "namespace", ns, "id", c.ID, "mode", mode, "duration", time.Since(start))
	return nil
}

// writesHosts reports whether mode generates an /etc/hosts naming the
// container's hostname (host shares the host's, container:ID the joined
// container's).
func writesHosts(mode string) bool {
	return mode == ModeNone || mode == ModeBridge || strings.HasPrefix(mode, ModeNSPrefix)
}

// setupNone gives the container a network namespace of its own with only
// a loopback device, and an /etc/hosts naming it. Nothing needs undoing, so
// there is no record: the hosts file lives in the task's bundle, which the
// runtime removes with the task, and Teardown finds nothing to do. (A record
// and a directory of its own cost about a dozen file system operations per
// container lifecycle, a noticeable part of a short run on flash.)
func (n *Network) setupNone(spec *specs.Spec, bundle string) error {
	if bundle == "" {
		return errdefs.InvalidArgument("bundle", "network %q needs the task's bundle directory", ModeNone)
	}
	if err := setNetNS(spec, ""); err != nil {
		return err
	}
	if hasMount(spec, hostsPath) {
		return nil
	}
	hosts, err := cni.Hosts(spec.Hostname, nil)
	if err != nil {
		return err
	}
	// In place, as the runtime writes the bundle's config.json: a bundle
	// whose task was not created completely is removed, never used.
	p := filepath.Join(bundle, bundleHosts)
	if err := writeReadable(p, hosts); err != nil {
		return fmt.Errorf("network: write hosts: %w", err)
	}
	addBind(spec, p, hostsPath)
	return nil
}

func setupHost(spec *specs.Spec) error {
	removeNetNS(spec)
	for _, p := range []string{resolvConfPath, hostsPath} {
		if _, err := os.Stat(p); err == nil {
			addBind(spec, p, p)
		}
	}
	return nil
}

func (n *Network) setupBridge(ctx context.Context, st *state, spec *specs.Spec) error {
	res, ok := (*cni.Result)(nil), false
	if len(st.Ports) == 0 {
		// portmap needs the mappings when attaching: only containers
		// without published ports take a spare.
		res, ok = n.claimSpare(st)
	}
	if !ok {
		st.CNIID = newCNIID()
		st.Netns = filepath.Join(n.netnsDir, st.CNIID)
		// Record before creating anything, so a crash in between is undone.
		if err := n.writeState(st); err != nil {
			return err
		}
		var err error
		if res, err = n.attach(ctx, st.CNIID, st.Netns, st.Ports); err != nil {
			return err
		}
		st.Result = res
	}
	n.refill()
	for _, ip := range res.IPs {
		st.IPs = append(st.IPs, ip.Address.Addr().String())
	}
	if err := n.writeState(st); err != nil {
		return err
	}
	if err := setNetNS(spec, st.Netns); err != nil {
		return err
	}
	host, err := cni.HostResolvConf()
	if err != nil {
		return err
	}
	hosts, err := cni.Hosts(spec.Hostname, res)
	if err != nil {
		return err
	}
	return n.bindFiles(st, spec, cni.ResolvConf(host, res, nil), hosts)
}

func (n *Network) setupNamed(ctx context.Context, st *state, name string, spec *specs.Spec) error {
	if err := identifiers.Validate("netns name", name); err != nil {
		return err
	}
	notFound := func() error {
		return fmt.Errorf("netns %q does not exist (create it with `edgectl netns create %s`): %w", name, name, errdefs.ErrNotFound)
	}
	if _, err := os.Lstat(filepath.Join(n.cfg.NamedDir, name)); errors.Is(err, os.ErrNotExist) {
		return notFound() // without creating the directory's mount
	}
	m, err := n.cfg.Named()
	if err != nil {
		return err
	}
	ns, err := m.Get(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return notFound()
		}
		return err
	}
	if err := n.writeState(st); err != nil {
		return err
	}
	if err := setNetNS(spec, ns.Path); err != nil {
		return err
	}
	host, err := cni.HostResolvConf()
	if err != nil {
		return err
	}
	hosts, err := cni.Hosts(spec.Hostname, nil)
	if err != nil {
		return err
	}
	return n.bindFiles(st, spec, cni.ResolvConf(host, nil, nil), hosts)
}

// setupJoin joins the namespace of container target's running task.
func (n *Network) setupJoin(ctx context.Context, st *state, target string, spec *specs.Spec) error {
	if err := identifiers.Validate("container id", target); err != nil {
		return err
	}
	if target == st.ID {
		return errdefs.InvalidArgument("network", "container %q cannot join its own network", target)
	}
	pid, running, err := n.cfg.Task(ctx, st.Namespace, target)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("container %q has no running task to share its network: %w", target, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	if !running {
		return fmt.Errorf("container %q is not running; its network can only be joined while its task runs: %w", target, errdefs.ErrFailedPrecondition)
	}
	// The joined container's record, if any: its mode decides how to join.
	// Lock order: joiner, then target (a target never locks its joiners).
	unlock := n.lock(st.Namespace, target)
	defer unlock()
	tst, err := n.readState(st.Namespace, target)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if tst == nil {
		// Not set up by edged (raw spec) or host mode.
		path, err := netns.PidPath(int(pid))
		if err != nil {
			return fmt.Errorf("container %q: %w", target, err)
		}
		if isHostNetns(path) {
			if err := setupHost(spec); err != nil {
				return err
			}
		} else {
			if err := setNetNS(spec, path); err != nil {
				return err
			}
			// A container of mode none has its hosts file in its bundle.
			if n.cfg.Bundle != nil {
				if p := filepath.Join(n.cfg.Bundle(st.Namespace, target), bundleHosts); fileExists(p) {
					addBind(spec, p, hostsPath)
				}
			}
		}
		if err := n.writeState(st); err != nil {
			return err
		}
		return nil
	}
	if tst.Target != "" {
		// Joining a joiner means joining what it joined.
		return fmt.Errorf("container %q itself shares the network of %q; join that one: %w", target, strings.TrimPrefix(tst.Target, st.Namespace+"/"), errdefs.ErrFailedPrecondition)
	}
	if tst.Released {
		return fmt.Errorf("container %q is being torn down: %w", target, errdefs.ErrFailedPrecondition)
	}
	path := tst.Netns
	if path == "" {
		if path, err = netns.PidPath(int(pid)); err != nil {
			return fmt.Errorf("container %q: %w", target, err)
		}
	}
	if tst.Netns != "" {
		// A bridged namespace edged owns: keep it (and its address) until
		// the last joiner is gone.
		st.Target = st.Namespace + "/" + target
		st.IPs = tst.IPs
		if err := n.writeState(st); err != nil {
			return err
		}
		tst.Joiners = appendUnique(tst.Joiners, st.Namespace+"/"+st.ID)
		if err := n.writeState(tst); err != nil {
			return err
		}
	} else if err := n.writeState(st); err != nil {
		return err
	}
	if err := setNetNS(spec, path); err != nil {
		return err
	}
	// Share the joined container's resolv.conf and hosts.
	td := n.dir(st.Namespace, target)
	for _, f := range []struct{ name, dst string }{{"resolv.conf", resolvConfPath}, {"hosts", hostsPath}} {
		if _, err := os.Stat(filepath.Join(td, f.name)); err == nil {
			addBind(spec, filepath.Join(td, f.name), f.dst)
		}
	}
	return nil
}

// bindFiles writes resolv.conf and hosts (when not nil) into the
// container's directory and bind mounts them read-only, unless the spec
// mounts something there already.
func (n *Network) bindFiles(st *state, spec *specs.Spec, resolv, hosts []byte) error {
	d := n.dir(st.Namespace, st.ID)
	for _, f := range []struct {
		name, dst string
		data      []byte
	}{{"resolv.conf", resolvConfPath, resolv}, {"hosts", hostsPath, hosts}} {
		if f.data == nil || hasMount(spec, f.dst) {
			continue
		}
		p := filepath.Join(d, f.name)
		if err := atomicfile.Replace(p, f.data, 0o644); err != nil {
			return fmt.Errorf("network: write %s: %w", f.name, err)
		}
		addBind(spec, p, f.dst)
	}
	return nil
}

// Teardown undoes Setup for container id. It is idempotent.
func (n *Network) Teardown(ctx context.Context, ns, id string) error {
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	unlock := n.lock(ns, id)
	defer unlock()
	return n.teardownLocked(ctx, ns, id)
}

// TeardownGone is Teardown for a container whose task is gone without
// being deleted through the API (its shim died): as Cleanup does at
// start-up, it logs what it undoes.
func (n *Network) TeardownGone(ctx context.Context, ns, id string) error {
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	return n.teardownGone(ctx, ns, id)
}

// teardownGone tears down the network of container ns/id, whose task is
// gone, logging it when there is a record to undo. A directory without a
// record (a Setup cut short before it wrote one) holds nothing to undo and
// is removed. TeardownGone and Cleanup call it.
func (n *Network) teardownGone(ctx context.Context, ns, id string) error {
	unlock := n.lock(ns, id)
	defer unlock()
	if !fileExists(filepath.Join(n.dir(ns, id), "state.json")) {
		if _, err := os.Lstat(n.dir(ns, id)); err != nil {
			return nil
		}
		return n.removeDir(ns, id)
	}
	n.cfg.Log.InfoContext(ctx, "network: cleaning up after a task that is gone", "namespace", ns, "id", id)
	return n.teardownLocked(ctx, ns, id)
}

func (n *Network) teardownLocked(ctx context.Context, ns, id string) error {
	st, err := n.readState(ns, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		if errors.Is(err, errdefs.ErrDataLoss) {
			// A torn record cannot name anything to undo beyond the
			// directory; remove it rather than fail forever.
			n.cfg.Log.WarnContext(ctx, "network: removing unreadable state", "namespace", ns, "id", id, "error", err)
			return n.removeDir(ns, id)
		}
		return err
	}
	if st.Netns != "" {
		// Joiners whose records are gone no longer count.
		live := st.Joiners[:0]
		for _, j := range st.Joiners {
			jns, jid, _ := strings.Cut(j, "/")
			if _, err := os.Stat(filepath.Join(n.dir(jns, jid), "state.json")); err == nil {
				live = append(live, j)
			}
		}
		st.Joiners = live
		if len(live) > 0 {
			st.Released = true
			n.cfg.Log.InfoContext(ctx, "network: keeping the namespace for the containers that joined it", "namespace", ns, "id", id, "joiners", live)
			return n.writeState(st)
		}
	}
	return n.teardownState(ctx, st)
}

// teardownState removes st's record and releases its attachment in the
// background; st may be partial (a failed Setup) or nil.
func (n *Network) teardownState(ctx context.Context, st *state) error {
	if st == nil {
		return nil
	}
	if err := n.removeDir(st.Namespace, st.ID); err != nil {
		return err
	}
	if st.Netns != "" {
		n.releaseAsync(st.CNIID, st.Netns, st.Ports)
	}
	if st.Target != "" {
		tns, tid, _ := strings.Cut(st.Target, "/")
		return n.leave(ctx, tns, tid, st.Namespace+"/"+st.ID)
	}
	return nil
}

// leave removes joiner from target's joiners and finishes the target's
// teardown if it was released and joiner was the last one.
func (n *Network) leave(ctx context.Context, ns, id, joiner string) error {
	unlock := n.lock(ns, id)
	defer unlock()
	st, err := n.readState(ns, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	kept := st.Joiners[:0]
	for _, j := range st.Joiners {
		if j != joiner {
			kept = append(kept, j)
		}
	}
	st.Joiners = kept
	if st.Released && len(kept) == 0 {
		return n.teardownState(ctx, st)
	}
	return n.writeState(st)
}

func (n *Network) removeDir(ns, id string) error {
	d := n.dir(ns, id)
	if err := os.RemoveAll(d); err != nil {
		return fmt.Errorf("network: remove %s: %w", d, err)
	}
	// The namespace's directory stays, even empty: removing it here could
	// fall between another container's MkdirAll creating it and creating
	// its own directory in it (the locks are per container), and fail
	// that container's Setup with ENOENT. Cleanup removes the empty ones
	// at start-up, before anything is set up.
	return nil
}

// IPs returns the addresses of container id's network (bridge, or
// container:ID of a bridged container); nil otherwise.
func (n *Network) IPs(ns, id string) []string {
	if identifiers.Validate("container id", id) != nil || identifiers.Validate("namespace", ns) != nil {
		return nil
	}
	st, err := n.readState(ns, id)
	if err != nil {
		return nil
	}
	return st.IPs
}

// Cleanup tears down the networks of containers whose task is not alive
// any more (after a crash of edged, tasks that died meanwhile were never
// deleted through the API), releases the spares and every attachment no
// record names. It waits for the releases it starts until ctx is done.
// Call it after the runtime recovered its tasks, before serving.
func (n *Network) Cleanup(ctx context.Context, alive func(ns, id string) bool) error {
	var errs []error
	nss, err := os.ReadDir(n.containers)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network cleanup: %w", err)
	}
	for _, nsEnt := range nss {
		ns := nsEnt.Name()
		if !nsEnt.IsDir() || identifiers.Validate("namespace", ns) != nil {
			continue
		}
		ids, err := os.ReadDir(filepath.Join(n.containers, ns))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, idEnt := range ids {
			id := idEnt.Name()
			if !idEnt.IsDir() || identifiers.Validate("container id", id) != nil || alive(ns, id) {
				continue
			}
			if err := n.teardownGone(ctx, ns, id); err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", ns, id, err))
			}
		}
		_ = os.Remove(filepath.Join(n.containers, ns))
	}
	// The releases must be done before the sweep, which would release
	// the same attachments again.
	if err := n.waitBackground(ctx); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if _, err := os.Stat(n.netnsDir); err == nil {
		// Bridge mode was used: the CNI network is needed to release.
		ref := n.referenced()
		if err := n.releaseSpares(ctx, ref); err != nil {
			errs = append(errs, err)
		}
		if err := n.sweep(ctx, ref); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FormatPorts encodes port mappings for PortsAnnotation, checking them:
// ports 1 to 65535, protocol tcp, udp or sctp (empty: tcp), host IP an
// address, and no host port published twice for one protocol and address.
func FormatPorts(ports []cni.PortMapping) (string, error) {
	seen := map[string]bool{}
	for i := range ports {
		p := &ports[i]
		field := fmt.Sprintf("port_mappings[%d]", i)
		if p.HostPort == 0 || p.HostPort > 65535 || p.ContainerPort == 0 || p.ContainerPort > 65535 {
			return "", errdefs.InvalidArgument(field, "ports %d:%d must be 1 to 65535", p.HostPort, p.ContainerPort)
		}
		p.Protocol = strings.ToLower(p.Protocol)
		switch p.Protocol {
		case "":
			p.Protocol = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return "", errdefs.InvalidArgument(field, "protocol %q must be tcp, udp or sctp", p.Protocol)
		}
		if p.HostIP != "" {
			a, err := netip.ParseAddr(p.HostIP)
			if err != nil || a.Zone() != "" {
				return "", errdefs.InvalidArgument(field, "host IP %q is not an IP address", p.HostIP)
			}
			p.HostIP = a.String()
		}
		k := fmt.Sprintf("%s/%d/%s", p.HostIP, p.HostPort, p.Protocol)
		if seen[k] {
			return "", errdefs.InvalidArgument(field, "host port %d/%s is published twice", p.HostPort, p.Protocol)
		}
		seen[k] = true
	}
	b, err := json.Marshal(ports)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func parsePorts(s string) ([]cni.PortMapping, error) {
	if s == "" {
		return nil, nil
	}
	var ports []cni.PortMapping
	if err := json.Unmarshal([]byte(s), &ports); err != nil {
		return nil, errdefs.InvalidArgument(PortsAnnotation, "%v", err)
	}
	if _, err := FormatPorts(ports); err != nil {
		return nil, err
	}
	return ports, nil
}

// setNetNS makes the spec's network namespace the one at path, or a new
// one when path is empty.
func setNetNS(spec *specs.Spec, path string) error {
	for i := range spec.Linux.Namespaces {
		if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = path
			return nil
		}
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})
	return nil
}

// removeNetNS makes the container use the host's network namespace.
func removeNetNS(spec *specs.Spec) {
	kept := spec.Linux.Namespaces[:0]
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type != specs.NetworkNamespace {
			kept = append(kept, ns)
		}
	}
	spec.Linux.Namespaces = kept
}

func hasMount(spec *specs.Spec, dst string) bool {
	for _, m := range spec.Mounts {
		if filepath.Clean(m.Destination) == dst {
			return true
		}
	}
	return false
}

// writeReadable writes data to the file p, readable by everyone whatever
// edged's umask (a container's user may be anyone).
func writeReadable(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Chmod(0o644); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// addBind bind mounts the file src read-only at dst unless dst is mounted.
func addBind(spec *specs.Spec, src, dst string) {
	if hasMount(spec, dst) {
		return
	}
	spec.Mounts = append(spec.Mounts, specs.Mount{Type: "bind", Source: src, Destination: dst,
		Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
}

// isHostNetns reports whether path is the host's network namespace (the
// one edged runs in).
func isHostNetns(path string) bool {
	a, err1 := os.Stat(path)
	b, err2 := os.Stat("/proc/self/ns/net")
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func appendUnique(list []string, s string) []string {
	for _, v := range list {
		if v == s {
			return list
		}
	}
	return append(list, s)
}

// NamedUsers returns the containers ("ns/id") whose tasks joined the named
// namespace name with ns:NAME and were not torn down yet. A record whose
// task is gone (its shim died; Cleanup removes the record at the next
// start) does not count, unless its container's network is being set up
// or torn down right now: the record of a task being created exists
// before the task does.
func (n *Network) NamedUsers(name string) []string {
	var users []string
	nss, _ := os.ReadDir(n.containers)
	for _, nsEnt := range nss {
		ids, _ := os.ReadDir(filepath.Join(n.containers, nsEnt.Name()))
		for _, idEnt := range ids {
			st, err := n.readState(nsEnt.Name(), idEnt.Name())
			if err != nil || st.Mode != ModeNSPrefix+name {
				continue
			}
			if !n.busy(st.Namespace, st.ID) && !n.alive(st.Namespace, st.ID) {
				continue
			}
			users = append(users, st.Namespace+"/"+st.ID)
		}
	}
	return users
}

// alive reports whether container id has a task: Config.Alive, or else
// whether Task finds one.
func (n *Network) alive(ns, id string) bool {
	if n.cfg.Alive != nil {
		return n.cfg.Alive(ns, id)
	}
	_, _, err := n.cfg.Task(context.Background(), ns, id)
	return !errdefs.IsNotFound(err)
}

// busy reports whether work on container id's network holds its lock.
func (n *Network) busy(ns, id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.locks[ns+"/"+id] != nil
}
