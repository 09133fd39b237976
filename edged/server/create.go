package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/cgroups"
	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/namespaces"
	"github.com/edged/edged/edged/network"
	"github.com/edged/edged/edged/oci"
	"github.com/edged/edged/edged/runtime"
	containerssvc "github.com/edged/edged/edged/services/containers"
	eventtypes "github.com/edged/edged/proto/events"
	api "github.com/edged/edged/proto/services/containers/v1"
)

// SpecTypeURL is the type URL of an OCI runtime spec in a container's Any,
// as containerd writes it.
const SpecTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// createFromImage implements Containers.CreateFromImage.
func (s *Server) createFromImage(ctx context.Context, r *api.CreateFromImageRequest) (_ *api.CreateContainerResponse, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := identifiers.Validate("id", r.Id); err != nil {
		return nil, err
	}
	switch {
	case r.Image == "" && r.RootfsPath == "":
		return nil, errdefs.InvalidArgument("image", "an image or a rootfs_path is required")
	case r.Image != "" && r.RootfsPath != "":
		return nil, errdefs.InvalidArgument("rootfs_path", "give an image or a rootfs_path, not both")
	}
	var (
		imgCfg ocispec.ImageConfig
		rootfs string
		c      = metadata.Container{ID: r.Id, Labels: r.Labels, Image: r.Image}
	)
	if r.RootfsPath != "" {
		p := filepath.Clean(r.RootfsPath)
		if !filepath.IsAbs(p) || p == "/" {
			return nil, errdefs.InvalidArgument("rootfs_path", "%q must be an absolute path other than /", r.RootfsPath)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("rootfs_path %q: %v: %w", p, err, errdefs.ErrNotFound)
		}
		if !fi.IsDir() {
			return nil, errdefs.InvalidArgument("rootfs_path", "%q is not a directory", p)
		}
		rootfs = p
	} else {
		if s.images == nil {
			return nil, fmt.Errorf("image %q: running containers from images needs the image store: %w", r.Image, errdefs.ErrNotImplemented)
		}
		prep, err := s.images.PrepareContainer(ctx, ns, r.Id, r.Image, r.Snapshotter)
		if err != nil {
			return nil, err
		}
		defer prep.Done()
		imgCfg, rootfs = prep.Config, prep.Rootfs
		c.Snapshotter, c.SnapshotKey = prep.Snapshotter, prep.SnapshotKey
		defer func() {
			if retErr != nil {
				prep.Rollback(context.WithoutCancel(ctx))
			}
		}()
	}
	opts, err := specOpts(r.Options)
	if err != nil {
		return nil, err
	}
	cgPath, err := cgroups.PathConfig{Parent: s.cfg.Cgroups.Parent, Systemd: s.cfg.Cgroups.SystemdSlices}.ContainerPath(ns, r.Id)
	if err != nil {
		return nil, err
	}
	opts = append(opts, oci.WithCgroupsPath(cgPath))
	spec, err := oci.Generate(ctx, ns, r.Id, rootfs, &imgCfg, opts...)
	if err != nil {
		return nil, err
	}
	if r.RootfsPath != "" {
		spec.Root.Path = rootfs
	}
	netAnn, err := networkAnnotations(r.Options)
	if err != nil {
		return nil, err
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	for k, v := range netAnn {
		spec.Annotations[k] = v
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	c.Spec, c.SpecType = b, SpecTypeURL
	c.Runtime.Name = runtime.NativeRuntime
	if r.Runtime != nil && r.Runtime.Name != "" {
		c.Runtime.Name = r.Runtime.Name
		if r.Runtime.Options != nil {
			if c.Runtime.Options, err = r.Runtime.Options.Marshal(); err != nil {
				return nil, errdefs.InvalidArgument("runtime.options", "%v", err)
			}
		}
	}
	err = s.db.Update(ctx, func(tx *metadata.Tx) (err error) {
		c, err = tx.CreateContainer(ctx, ns, c)
		return err
	})
	if err != nil {
		return nil, err
	}
	pc := containerssvc.ToProto(c)
	_ = s.ex.Publish(ctx, "/containers/create", &eventtypes.ContainerCreate{Id: c.ID, Image: c.Image, Runtime: &eventtypes.ContainerCreate_Runtime{Name: c.Runtime.Name}})
	return &api.CreateContainerResponse{Container: pc}, nil
}

// NetworkAnnotation records the network mode asked for at creation.
const NetworkAnnotation = network.ModeAnnotation

// specOpts turns the API's options into spec options.
func specOpts(o *api.SpecOptions) ([]oci.SpecOpt, error) {
	if o == nil {
		return nil, nil
	}
	var opts []oci.SpecOpt
	if o.EntrypointSet {
		opts = append(opts, oci.WithEntrypoint(o.Entrypoint...))
	}
	if len(o.Args) > 0 {
		opts = append(opts, oci.WithArgs(o.Args...))
	}
	if len(o.Env) > 0 {
		opts = append(opts, oci.WithEnv(o.Env...))
	}
	if o.User != "" {
		opts = append(opts, oci.WithUser(o.User))
	}
	if o.Cwd != "" {
		opts = append(opts, oci.WithCwd(o.Cwd))
	}
	if o.Tty {
		opts = append(opts, oci.WithTTY(true))
	}
	if o.Hostname != "" {
		opts = append(opts, oci.WithHostname(o.Hostname))
	}
	for _, m := range o.Mounts {
		switch m.Type {
		case "", "bind":
			ro := false
			for _, opt := range m.Options {
				if opt == "ro" {
					ro = true
				}
			}
			opts = append(opts, oci.WithMounts(oci.BindMount(m.Source, m.Destination, ro)))
		case "tmpfs":
			opts = append(opts, oci.WithMounts(specs.Mount{Type: "tmpfs", Source: "tmpfs", Destination: m.Destination, Options: append([]string{"nosuid", "nodev"}, m.Options...)}))
		default:
			return nil, errdefs.InvalidArgument("options.mounts", "type %q must be bind or tmpfs", m.Type)
		}
	}
	if o.ReadOnly {
		opts = append(opts, oci.WithReadonlyRootfs(true))
	}
	if o.MemoryLimit != 0 {
		opts = append(opts, oci.WithMemoryLimit(o.MemoryLimit))
	}
	if o.MemorySwap != 0 {
		opts = append(opts, oci.WithMemorySwap(o.MemorySwap))
	}
	if o.Cpus != 0 {
		opts = append(opts, oci.WithCPUs(o.Cpus))
	}
	if o.CpuShares != 0 {
		opts = append(opts, oci.WithCPUShares(o.CpuShares))
	}
	if o.CpusetCpus != "" {
		opts = append(opts, oci.WithCPUSet(o.CpusetCpus, ""))
	}
	if o.PidsLimit != 0 {
		opts = append(opts, oci.WithPidsLimit(o.PidsLimit))
	}
	if o.Privileged {
		opts = append(opts, oci.WithPrivileged())
	}
	if len(o.CapAdd) > 0 || len(o.CapDrop) > 0 {
		opts = append(opts, oci.WithCapabilities(o.CapAdd, o.CapDrop))
	}
	if len(o.Annotations) > 0 {
		opts = append(opts, oci.WithAnnotations(o.Annotations))
	}
	switch net := o.Network; {
	case net == "" || net == "none":
		// A private network namespace with loopback only.
	case net == "host":
		opts = append(opts, oci.WithHostNetwork())
	default:
		// bridge, ns:NAME, container:ID: the task's network hook
		// (edged/network) points the namespace at the right place.
		if err := checkNetworkMode(net); err != nil {
			return nil, err
		}
	}
	if len(o.PortMappings) > 0 && o.Network != "bridge" {
		return nil, errdefs.InvalidArgument("options.port_mappings", "publishing ports needs --net bridge")
	}
	return opts, nil
}
