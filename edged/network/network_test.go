package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/netns"
	"github.com/edged/edged/netns/cni"
)

func wantErr(t *testing.T, err error, kind error, substr string) {
	t.Helper()
	if err == nil || !errors.Is(err, kind) || !strings.Contains(err.Error(), substr) {
		t.Fatalf("got %v; want %v containing %q", err, kind, substr)
	}
}

// newNet returns a Network whose task lookup reports the tasks in tasks
// (pid, running). The real lookup is the runtime's, exercised by the
// integration tests; here only the answers matter.
func newNet(t *testing.T, tasks map[string][2]int) *Network {
	t.Helper()
	dir := t.TempDir()
	n, err := New(context.Background(), Config{
		StateDir: filepath.Join(dir, "network"),
		NamedDir: filepath.Join(dir, "netns"),
		Named:    func() (*netns.Manager, error) { return nil, errors.New("not used") },
		Task: func(ctx context.Context, ns, id string) (uint32, bool, error) {
			v, ok := tasks[id]
			if !ok {
				return 0, false, errdefs.ErrNotFound
			}
			return uint32(v[0]), v[1] == 1, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func spec(mode string) *specs.Spec {
	return &specs.Spec{Hostname: "box", Annotations: map[string]string{ModeAnnotation: mode},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}}}}
}

func TestNoneHostAndUnannotated(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, nil)
	c := metadata.Container{ID: "a"}

	sp := spec(ModeNone)
	wantErr(t, n.Setup(ctx, "default", c, sp, ""), errdefs.ErrInvalidArgument, `network "none" needs the task's bundle directory`)
	bundle := t.TempDir()
	old := syscall.Umask(0o077) // an operator's strict umask must not hide hosts
	err := n.Setup(ctx, "default", c, sp, bundle)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	// The hosts file is in the bundle; none keeps no record.
	hosts := filepath.Join(bundle, "hosts")
	b, err := os.ReadFile(hosts)
	if err != nil || !strings.Contains(string(b), "127.0.0.1\tlocalhost") || !strings.Contains(string(b), "\tbox") {
		t.Fatalf("hosts: %q %v", b, err)
	}
	last := sp.Mounts[len(sp.Mounts)-1]
	if last.Destination != "/etc/hosts" || last.Source != hosts || last.Options[1] != "ro" {
		t.Fatalf("hosts mount: %+v", last)
	}
	if fi, err := os.Stat(hosts); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("hosts must be readable by any user of the container: %v %v", fi.Mode(), err)
	}
	if ents, err := os.ReadDir(n.containers); len(ents) != 0 || err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("none left a record: %v %v", ents, err)
	}
	if n.IPs("default", "a") != nil {
		t.Fatal("none has addresses")
	}
	if err := n.Teardown(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(hosts); err != nil {
		t.Fatalf("Teardown removed the bundle's hosts file (the runtime removes the bundle): %v", err)
	}
	// A spec that mounts its own /etc/hosts keeps it.
	sp = spec(ModeNone)
	sp.Mounts = []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: "/mine"}}
	if err := n.Setup(ctx, "default", c, sp, t.TempDir()); err != nil || len(sp.Mounts) != 1 || sp.Mounts[0].Source != "/mine" {
		t.Fatalf("own /etc/hosts: %v %+v", err, sp.Mounts)
	}

	sp = spec(ModeHost)
	if err := n.Setup(ctx, "default", c, sp, ""); err != nil {
		t.Fatal(err)
	}
	for _, ns := range sp.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			t.Fatal("host mode kept a network namespace")
		}
	}

	// Without the annotation (a raw spec) nothing changes.
	sp = spec(ModeNone)
	delete(sp.Annotations, ModeAnnotation)
	if err := n.Setup(ctx, "default", c, sp, ""); err != nil || len(sp.Mounts) != 0 {
		t.Fatalf("unannotated: %v %v", err, sp.Mounts)
	}
}

func TestSetupErrors(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, map[string][2]int{"stopped": {os.Getpid(), 0}})
	c := metadata.Container{ID: "a"}
	wantErr(t, n.Setup(ctx, "default", c, spec("wifi"), ""), errdefs.ErrInvalidArgument, "must be host, none, bridge")
	wantErr(t, n.Setup(ctx, "default", c, spec("ns:nope"), ""), errdefs.ErrNotFound, `netns "nope" does not exist`)
	wantErr(t, n.Setup(ctx, "default", c, spec("ns:../x"), ""), errdefs.ErrInvalidArgument, "netns name")
	wantErr(t, n.Setup(ctx, "default", c, spec("container:ghost"), ""), errdefs.ErrFailedPrecondition, `"ghost" has no running task`)
	wantErr(t, n.Setup(ctx, "default", c, spec("container:stopped"), ""), errdefs.ErrFailedPrecondition, `"stopped" is not running`)
	wantErr(t, n.Setup(ctx, "default", c, spec("container:a"), ""), errdefs.ErrInvalidArgument, "cannot join its own network")
	sp := spec(ModeHost)
	sp.Annotations[PortsAnnotation] = `[{"HostPort":8080,"ContainerPort":80}]`
	wantErr(t, n.Setup(ctx, "default", c, sp, ""), errdefs.ErrInvalidArgument, "publishing ports needs the bridge network")
	sp.Annotations[PortsAnnotation] = `{`
	wantErr(t, n.Setup(ctx, "default", c, sp, ""), errdefs.ErrInvalidArgument, PortsAnnotation)
	// Failed setups leave no record.
	if ents, _ := os.ReadDir(filepath.Join(n.containers, "default")); len(ents) != 0 {
		t.Fatalf("records left: %v", ents)
	}
}

func TestFormatPorts(t *testing.T) {
	s, err := FormatPorts([]cni.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "TCP", HostIP: "127.0.0.1"}, {HostPort: 8080, ContainerPort: 80, Protocol: "udp"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parsePorts(s)
	if err != nil || len(got) != 2 || got[0].Protocol != "tcp" || got[0].HostIP != "127.0.0.1" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, tc := range []struct {
		p    cni.PortMapping
		want string
	}{
		{cni.PortMapping{HostPort: 0, ContainerPort: 80}, "must be 1 to 65535"},
		{cni.PortMapping{HostPort: 80, ContainerPort: 70000}, "must be 1 to 65535"},
		{cni.PortMapping{HostPort: 80, ContainerPort: 80, Protocol: "icmp"}, `protocol "icmp"`},
		{cni.PortMapping{HostPort: 80, ContainerPort: 80, HostIP: "nohost"}, `host IP "nohost"`},
	} {
		_, err := FormatPorts([]cni.PortMapping{tc.p})
		wantErr(t, err, errdefs.ErrInvalidArgument, tc.want)
	}
	_, err = FormatPorts([]cni.PortMapping{{HostPort: 80, ContainerPort: 80}, {HostPort: 80, ContainerPort: 81, Protocol: "tcp"}})
	wantErr(t, err, errdefs.ErrInvalidArgument, "published twice")
}
