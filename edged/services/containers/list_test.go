package containers_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/events"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	containerssvc "github.com/edged/edged/edged/services/containers"
	"github.com/edged/edged/proto/rpc"
	api "github.com/edged/edged/proto/services/containers/v1"
)

// withoutListStream registers services as an edged older than ListStream
// did.
type withoutListStream struct{ rpc.Registrar }

func (r withoutListStream) RegisterService(name string, desc *rpc.ServiceDesc) {
	d := *desc
	d.Streams = nil
	r.Registrar.RegisterService(name, &d)
}

// bigContainers serves the Containers API (over reg's view of a server)
// with four containers whose 1 MiB specs total more than a 4 MiB message,
// and returns a client of it.
func bigContainers(t *testing.T, reg func(rpc.Registrar) rpc.Registrar) *client.Client {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	db, err := metadata.Open(ctx, filepath.Join(dir, "meta.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv := rpc.NewServer(rpc.ServerConfig{
		// As edged's interceptor does: typed errors cross the wire.
		Unary: func(ctx context.Context, unmarshal func(rpc.Message) error, _ *rpc.UnaryServerInfo, m rpc.Method) (rpc.Message, error) {
			resp, err := m(ctx, unmarshal)
			return resp, errdefs.ToStatus(err)
		},
	})
	containerssvc.Register(reg(srv), db, events.New(0, nil), nil, nil)
	l, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	t.Cleanup(func() { srv.Close() })
	nc, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewFromConn(nc, client.WithNamespace("default"))
	t.Cleanup(func() { c.Close() })
	for _, id := range []string{"a", "b", "c", "d"} {
		spec := bytes.Repeat([]byte(id), containerssvc.MaxSpecBytes-100)
		if _, err := c.CreateContainer(ctx, &client.Container{
			Id: id, Runtime: &api.Container_Runtime{Name: "io.containerd.runc.v2"},
			Spec: &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Value: spec},
		}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	return c
}

// The containers of a namespace may take more than one 4 MiB message:
// ListContainers (edgectl containers ls) lists them with ListStream. It
// once failed with ResourceExhausted for good.
func TestListContainersOverMessageLimit(t *testing.T) {
	c := bigContainers(t, func(r rpc.Registrar) rpc.Registrar { return r })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := c.ListContainers(ctx)
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	var ids []string
	for _, ctr := range list {
		ids = append(ids, ctr.Id)
		if want := containerssvc.MaxSpecBytes - 100; len(ctr.Spec.Value) != want || ctr.Spec.Value[0] != ctr.Id[0] {
			t.Errorf("%s: spec of %d bytes, want %d of %q", ctr.Id, len(ctr.Spec.Value), want, ctr.Id)
		}
	}
	if got := strings.Join(ids, ","); got != "a,b,c,d" {
		t.Fatalf("listed %s, want a,b,c,d", got)
	}
	if list, err := c.ListContainers(ctx, "id==b", "id==d"); err != nil || len(list) != 2 || list[0].Id != "b" || list[1].Id != "d" {
		t.Fatalf("ListContainers(id==b, id==d) = %d, %v", len(list), err)
	}
	// The namespace of a stream travels in the request.
	if list, err := c.ListContainers(namespaces.WithNamespace(ctx, "other")); err != nil || len(list) != 0 {
		t.Fatalf("ListContainers in namespace other = %d, %v", len(list), err)
	}
	if _, err := c.ListContainers(namespaces.WithNamespace(ctx, "bad/ns")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("ListContainers in namespace bad/ns: %v", err)
	}
}

// List cannot send more than one message: it says so, and what to do.
func TestListOverMessageLimitNamesTheLimit(t *testing.T) {
	c := bigContainers(t, func(r rpc.Registrar) rpc.Registrar { return r })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "default"), 30*time.Second)
	defer cancel()
	raw := api.NewContainersClient(c.Caller())
	_, err := raw.List(ctx, &api.ListContainersRequest{})
	err = client.ConvertError(err)
	// The size varies by a few bytes with the timestamps' encoding.
	want := regexp.MustCompile(`^4 containers of namespace "default" take 419\d{4} bytes, more than the 4194304 byte message limit of List: use ListStream \(edged/client's ListContainers does\), or filters that match fewer: resource exhausted$`)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !want.MatchString(err.Error()) {
		t.Fatalf("List = %v\nwant %s", err, want)
	}
	if r, err := raw.List(ctx, &api.ListContainersRequest{Filters: []string{"id==a"}}); err != nil || len(r.Containers) != 1 {
		t.Fatalf("List(id==a) = %v", err)
	}
}

// With an edged older than ListStream, ListContainers uses List.
func TestListContainersFallsBackToList(t *testing.T) {
	c := bigContainers(t, func(r rpc.Registrar) rpc.Registrar { return withoutListStream{r} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := c.ListContainers(ctx, "id==a", "id==c")
	if err != nil || len(list) != 2 || list[0].Id != "a" || list[1].Id != "c" {
		t.Fatalf("ListContainers from an old edged = %d, %v", len(list), err)
	}
	if _, err := c.ListContainers(ctx); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("ListContainers of too many from an old edged: %v", err)
	}
}
