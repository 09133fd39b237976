package integration

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containerd/ttrpc"
	ptypes "github.com/gogo/protobuf/types"

	"github.com/edged/edged/edged/client"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/proto/rpc"
	containersapi "github.com/edged/edged/proto/services/containers/v1"
	"github.com/edged/edged/proto/wire"
)

func wantErr(t *testing.T, err error, kind error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %v error containing %q, got nil", kind, substr)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("want errors.Is(err, %v); got %v", kind, err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

func TestVersion(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	v, err := c.Version(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if v.Api != "1" || v.GoVersion == "" || v.OsArch == "" || v.Version == "" {
		t.Fatalf("incomplete version: %+v", v)
	}
}

func TestNamespaces(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)

	n, err := c.CreateNamespace(ctx, "prod", map[string]string{"site": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "prod" || n.Labels["site"] != "a" || n.CreatedAt == nil {
		t.Fatalf("created: %+v", n)
	}
	_, err = c.CreateNamespace(ctx, "prod", nil)
	wantErr(t, err, errdefs.ErrAlreadyExists, `namespace "prod"`)

	if _, err := c.CreateNamespace(ctx, "dev", nil); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListNamespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "dev" || list[1].Name != "prod" {
		t.Fatalf("list: %v", list)
	}
	list, err = c.ListNamespaces(ctx, `labels."site"==a`)
	if err != nil || len(list) != 1 || list[0].Name != "prod" {
		t.Fatalf("filtered list: %v %v", list, err)
	}

	n, err = c.SetNamespaceLabels(ctx, "prod", map[string]string{"tier": "1", "site": ""})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["tier"] != "1" || len(n.Labels) != 1 {
		t.Fatalf("labels after update: %v", n.Labels)
	}
	n, err = c.ReplaceNamespaceLabels(ctx, "prod", map[string]string{"only": "x"})
	if err != nil || len(n.Labels) != 1 || n.Labels["only"] != "x" {
		t.Fatalf("replace labels: %v %v", n, err)
	}
	got, err := c.GetNamespace(ctx, "prod")
	if err != nil || got.Labels["only"] != "x" {
		t.Fatalf("get: %v %v", got, err)
	}

	_, err = c.GetNamespace(ctx, "missing")
	wantErr(t, err, errdefs.ErrNotFound, `namespace "missing"`)
	err = c.DeleteNamespace(ctx, "missing")
	wantErr(t, err, errdefs.ErrNotFound, `namespace "missing"`)

	// A namespace holding a container cannot be deleted.
	pctx := namespaces.WithNamespace(ctx, "prod")
	if _, err := c.CreateContainer(pctx, testContainer("web")); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteNamespace(ctx, "prod")
	wantErr(t, err, errdefs.ErrFailedPrecondition, `namespace "prod" must be empty`)
	if !strings.Contains(err.Error(), "1 container") {
		t.Fatalf("error should count the containers: %v", err)
	}
	if err := c.DeleteContainer(pctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteNamespace(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetNamespace(ctx, "prod")
	wantErr(t, err, errdefs.ErrNotFound, "prod")
}

func TestInvalidIdentifiers(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)
	bad := map[string]string{
		"../x":                    "must match",
		"a/b":                     "must match",
		"":                        "must not be empty",
		strings.Repeat("a", 1000): "longer than the maximum of 76",
		".hidden":                 "must match",
		"a b":                     "must match",
		"x\x00y":                  "must match",
	}
	for id, want := range bad {
		_, err := c.CreateContainer(ctx, &client.Container{Id: id})
		wantErr(t, err, errdefs.ErrInvalidArgument, "container.id")
		if !strings.Contains(err.Error(), want) {
			t.Errorf("create %.20q: %v does not contain %q", id, err, want)
		}
		_, err = c.GetContainer(ctx, id)
		wantErr(t, err, errdefs.ErrInvalidArgument, "id")
		err = c.DeleteContainer(ctx, id)
		wantErr(t, err, errdefs.ErrInvalidArgument, "id")
		_, err = c.CreateNamespace(ctx, id, nil)
		wantErr(t, err, errdefs.ErrInvalidArgument, "namespace.name")
		// An invalid namespace in the request metadata is refused too.
		_, err = c.ListContainers(namespaces.WithNamespace(ctx, id))
		if id == "" {
			wantErr(t, err, errdefs.ErrFailedPrecondition, "namespace is required")
		} else {
			wantErr(t, err, errdefs.ErrInvalidArgument, "namespace")
		}
	}
	// Nothing was created by the bad requests.
	list, err := c.ListNamespaces(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("bad requests left namespaces behind: %v %v", list, err)
	}
}

func TestContainers(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)
	spec := &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Value: []byte(`{"ociVersion":"1.0.2"}`)}
	mk := func(id, image string, labels map[string]string) *client.Container {
		return &client.Container{Id: id, Image: image, Labels: labels, Spec: spec, SnapshotKey: id, Snapshotter: "overlayfs",
			Runtime: &containersapi.Container_Runtime{Name: "io.containerd.runc.v2"}}
	}
	created, err := c.CreateContainer(ctx, mk("web", "docker.io/library/busybox:1.36", map[string]string{"env": "prod", "edged.io/group": "g1"}))
	if err != nil {
		t.Fatal(err)
	}
	if created.CreatedAt == nil || created.UpdatedAt == nil || string(created.Spec.Value) != `{"ociVersion":"1.0.2"}` {
		t.Fatalf("created: %+v", created)
	}
	if _, err := c.CreateContainer(ctx, mk("db", "docker.io/library/postgres:16", map[string]string{"env": "dev"})); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateContainer(ctx, mk("web", "x", nil))
	wantErr(t, err, errdefs.ErrAlreadyExists, `container "web" in namespace "default"`)

	// The same ID may exist in another namespace.
	other := namespaces.WithNamespace(ctx, "other")
	if _, err := c.CreateContainer(other, mk("web", "alpine", nil)); err != nil {
		t.Fatalf("same id in another namespace: %v", err)
	}

	ids := func(filters ...string) string {
		t.Helper()
		list, err := c.ListContainers(ctx, filters...)
		if err != nil {
			t.Fatalf("list %v: %v", filters, err)
		}
		var out []string
		for _, ctr := range list {
			out = append(out, ctr.Id)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		filters []string
		want    string
	}{
		{nil, "db,web"},
		{[]string{"id==web"}, "web"},
		{[]string{"image==docker.io/library/postgres:16"}, "db"},
		{[]string{`labels."env"==prod`}, "web"},
		{[]string{`labels."edged.io/group"`}, "web"},
		{[]string{`labels.env==dev`, `id==web`}, "db,web"},
		{[]string{`labels.env==dev,id==web`}, ""},
		{[]string{`image~=busybox`}, "web"},
		{[]string{`runtime.name==io.containerd.runc.v2`}, "db,web"},
		{[]string{`id!=web`}, "db"},
	} {
		if got := ids(tc.filters...); got != tc.want {
			t.Errorf("filters %v: got %q want %q", tc.filters, got, tc.want)
		}
	}
	_, err = c.ListContainers(ctx, "id=web")
	wantErr(t, err, errdefs.ErrInvalidArgument, "expected an operator")

	got, err := c.GetContainer(other, "web")
	if err != nil || got.Image != "alpine" {
		t.Fatalf("get other: %v %v", got, err)
	}

	upd, err := c.SetContainerLabels(ctx, "web", map[string]string{"env": "", "tier": "front"})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Labels["tier"] != "front" || upd.Labels["env"] != "" || upd.Labels["edged.io/group"] != "g1" {
		t.Fatalf("labels after update: %v", upd.Labels)
	}
	_, err = c.SetContainerLabels(ctx, "missing", map[string]string{"a": "b"})
	wantErr(t, err, errdefs.ErrNotFound, `container "missing"`)
	_, err = c.UpdateContainer(ctx, &client.Container{Id: "web"}, "id")
	wantErr(t, err, errdefs.ErrInvalidArgument, "id")

	// Label limits.
	_, err = c.CreateContainer(ctx, mk("big", "", map[string]string{"k": strings.Repeat("v", 5000)}))
	wantErr(t, err, errdefs.ErrInvalidArgument, `labels: key "k": key and value are 5001 bytes, more than the maximum of 4096`)
	// Oversized spec.
	huge := mk("huge", "", nil)
	huge.Spec = &ptypes.Any{TypeUrl: spec.TypeUrl, Value: make([]byte, 2<<20)}
	_, err = c.CreateContainer(ctx, huge)
	wantErr(t, err, errdefs.ErrInvalidArgument, "container.spec: 2097152 bytes is more than the maximum")

	if err := c.DeleteContainer(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteContainer(ctx, "web")
	wantErr(t, err, errdefs.ErrNotFound, `container "web" in namespace "default"`)
	if got := ids(); got != "db" {
		t.Fatalf("after delete: %q", got)
	}
	// The other namespace's "web" is untouched.
	if _, err := c.GetContainer(other, "web"); err != nil {
		t.Fatalf("other namespace lost its container: %v", err)
	}
}

// TestPersistence restarts edged and finds its metadata, also after a kill.
func TestPersistence(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)
	keep := testContainer("keep")
	keep.Labels = map[string]string{"a": "b"}
	if _, err := c.CreateContainer(ctx, keep); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.Kill()

	d2 := startDaemonAt(t, d)
	c2 := newClient(t, d2)
	got, err := c2.GetContainer(ctx, "keep")
	if err != nil || got.Labels["a"] != "b" {
		t.Fatalf("after kill -9 and restart: %v %v", got, err)
	}
}

func TestNamespaceRequiredForContainers(t *testing.T) {
	d := startDaemon(t)
	// A raw generated client without the namespace header is refused.
	conn, err := net.Dial("unix", d.Address)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	raw := containersapi.NewContainersClient(wire.Client(tc))
	_, err = raw.List(context.Background(), &containersapi.ListContainersRequest{})
	if err == nil || !strings.Contains(err.Error(), "namespace is required") {
		t.Fatalf("want namespace required error, got %v", err)
	}
}

// Generated clients of APIs without a typed method use the client's
// connection (Caller): they get its namespace, and ConvertError types
// their errors.
func TestGeneratedClientOnCaller(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := context.Background()
	raw := containersapi.NewContainersClient(c.Caller())
	if _, err := raw.List(ctx, &containersapi.ListContainersRequest{}); err != nil {
		t.Fatalf("List with the client's namespace: %v", err)
	}
	_, err := raw.Get(ctx, &containersapi.GetContainerRequest{Id: "nope"})
	var st *rpc.StatusError
	if !errors.As(err, &st) || rpc.CodeName(st.Code) != "NotFound" {
		t.Fatalf("raw error: %#v", err)
	}
	err = client.ConvertError(err)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `container "nope"`) {
		t.Errorf("converted: %v", err)
	}
}

func testContainer(id string) *client.Container {
	return &client.Container{
		Id:      id,
		Runtime: &containersapi.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec:    &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Value: []byte(`{"ociVersion":"1.0.2"}`)},
	}
}

func TestContainerRequiredFields(t *testing.T) {
	d := startDaemon(t)
	c := newClient(t, d)
	ctx := ctxT(t)
	noRuntime := testContainer("a")
	noRuntime.Runtime = nil
	_, err := c.CreateContainer(ctx, noRuntime)
	wantErr(t, err, errdefs.ErrInvalidArgument, "runtime name: must not be empty")
	noSpec := testContainer("a")
	noSpec.Spec = nil
	_, err = c.CreateContainer(ctx, noSpec)
	wantErr(t, err, errdefs.ErrInvalidArgument, "spec: must not be empty")
	_, err = c.CreateContainer(ctx, nil)
	wantErr(t, err, errdefs.ErrInvalidArgument, "container: must be set")
}
