package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/images"
	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/edged/registry"
	contentsvc "github.com/edged/edged/edged/services/content"
	imagessvc "github.com/edged/edged/edged/services/images"
	leasessvc "github.com/edged/edged/edged/services/leases"
	snapshotssvc "github.com/edged/edged/edged/services/snapshots"
	"github.com/edged/edged/fsstore/content"
	"github.com/edged/edged/fsstore/snapshots"
	"github.com/edged/edged/fsstore/snapshots/mount"
	ptypesapi "github.com/edged/edged/proto/types"
)

// imageStore is edged's image side: content store, snapshotter, image
// service (registry access included). It implements ImageStore.
type imageStore struct {
	svc   *images.Service
	cs    *content.Store
	sn    snapshots.Snapshotter
	db    *metadata.DB
	state string
	log   *slog.Logger
}

// withImageSchema adds the snapshotter's tables to the metadata database,
// so that namespaces holding snapshots cannot be deleted.
func withImageSchema(o metadata.Options) metadata.Options {
	o.ExtraSchema = append(o.ExtraSchema, snapshots.InitSchema)
	o.CountSnapshots = func(ctx context.Context, tx *sql.Tx, ns string) (int, error) {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM snapshots WHERE namespace = ?`, ns).Scan(&n)
		return n, err
	}
	return o
}

// setupImages opens the content store and the snapshotter under the root,
// and registers the Images, Content, Snapshots and Leases services.
func (s *Server) setupImages(ctx context.Context) (*imageStore, error) {
	cfg := s.cfg
	cs, err := content.New(filepath.Join(cfg.Root, "content"))
	if err != nil {
		return nil, err
	}
	sn, err := snapshots.New(ctx, s.db.SQL(), cfg.Root, snapshots.Options{Backend: snapshots.Backend(cfg.Images.Snapshotter)})
	if err != nil {
		return nil, err
	}
	hosts := map[string]registry.HostConfig{}
	for host, r := range cfg.Registries {
		hosts[host] = registry.HostConfig{Mirrors: r.Mirrors, Insecure: r.Insecure, PlainHTTP: r.PlainHTTP}
	}
	reg, err := registry.New(registry.Config{Helper: cfg.Images.RegistryHelper, Hosts: hosts, DockerConfig: cfg.Images.DockerConfig, UserAgent: "edged", Logger: s.log,
		IdleTimeout: cfg.Images.RegistryIdleTimeout.Duration, Retries: cfg.Images.RegistryRetries, RetryBackoff: cfg.Images.RegistryRetryBackoff.Duration})
	if err != nil {
		return nil, fmt.Errorf("registries: %w", err)
	}
	svc, err := images.New(s.db, cs, sn, images.Options{DiscardLayers: cfg.Images.DiscardLayers, Platform: cfg.Images.Platform, Logger: s.log, Registry: reg,
		MaxLayerSize: int64(cfg.Images.MaxLayerSize), MaxLayerEntries: cfg.Images.MaxLayerEntries, MinFreeSpace: int64(cfg.Images.MinFreeSpace)})
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	st := &imageStore{svc: svc, cs: cs, sn: sn, db: s.db, state: cfg.State, log: s.log}
	imagessvc.Register(s.rpc, imagessvc.Config{DB: s.db, Images: svc, Content: cs, Log: s.log})
	contentsvc.Register(s.rpc, s.db, cs, svc)
	snapshotssvc.Register(s.rpc, sn, svc)
	leasessvc.Register(s.rpc, s.db, svc)
	s.images = st
	s.log.Info("image store ready", "snapshotter", sn.Backend(), "platform", platforms.Format(svc.Platform()))
	return st, nil
}

// rootfs returns a container's snapshot mounts, for the Tasks service.
func (st *imageStore) rootfs(ctx context.Context, ns string, c metadata.Container) ([]*ptypesapi.Mount, error) {
	ms, err := st.sn.Mounts(ctx, ns, c.SnapshotKey)
	if err != nil {
		return nil, fmt.Errorf("container %q: rootfs: %w", c.ID, err)
	}
	return snapshotssvc.MountsToProto(ms), nil
}

// containerDeleted removes the snapshot of a deleted container.
func (s *Server) containerDeleted(ctx context.Context, ns string, c metadata.Container) {
	st, ok := s.images.(*imageStore)
	if !ok || c.SnapshotKey == "" {
		return
	}
	if err := st.svc.RemoveSnapshot(context.WithoutCancel(ctx), ns, c.SnapshotKey); err != nil {
		s.log.Warn("cannot remove the snapshot of a deleted container; garbage collection will", "namespace", ns, "container", c.ID, "error", err)
	}
}

// recoverImages repairs the image store after a crash and imports the
// archives of the import directory.
func (s *Server) recoverImages(ctx context.Context) {
	st, ok := s.images.(*imageStore)
	if !ok {
		return
	}
	s.startup.status("recovering the image store")
	res, err := st.svc.Recover(ctx)
	if err != nil {
		s.log.Warn("image store recovery had errors", "error", err)
	}
	s.log.Info("image store recovered", "import_leases", res.RemovedLeases, "extractions", res.RemovedExtracts,
		"blobs", res.GC.RemovedBlobs, "snapshots", res.GC.RemovedSnapshots)
	dir := s.cfg.Images.ImportDir
	if dir == "" {
		dir = filepath.Join(s.cfg.Root, "import")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			s.log.Warn("cannot create the import directory", "dir", dir, "error", err)
			return
		}
	}
	s.startup.status("importing the archives of " + dir)
	results, err := st.svc.ImportDir(ctx, s.cfg.Images.ImportNamespace, dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("import directory", "dir", dir, "error", err)
		}
		return
	}
	for _, r := range results {
		if r.Err != nil {
			s.log.Warn("import directory: archive failed", "file", r.File, "error", r.Err)
			continue
		}
		for _, im := range r.Images {
			s.log.Info("import directory: imported", "file", r.File, "image", im.Name, "namespace", s.cfg.Images.ImportNamespace)
		}
	}
}

// closeImages waits for background collections.
func (s *Server) closeImages() {
	if st, ok := s.images.(*imageStore); ok {
		st.svc.Close()
	}
}

// PrepareContainer implements ImageStore: it resolves image for the
// platform, unpacks it if needed, prepares the active snapshot key=id on
// its top layer under a lease, and mounts it on a temporary directory for
// user and group lookups.
func (st *imageStore) PrepareContainer(ctx context.Context, ns, id, image, snapshotter string) (*PreparedRootfs, error) {
	if snapshotter != "" && snapshotter != "default" && snapshotter != string(st.sn.Backend()) {
		return nil, fmt.Errorf("snapshotter %q: only %q is configured: %w", snapshotter, st.sn.Backend(), errdefs.ErrNotFound)
	}
	// A clear error for a taken ID, before the snapshot named after it.
	err := st.db.View(ctx, func(tx *metadata.Tx) error {
		_, err := tx.GetContainer(ctx, ns, id)
		return err
	})
	switch {
	case err == nil:
		return nil, fmt.Errorf("container %q in namespace %q: %w", id, ns, errdefs.ErrAlreadyExists)
	case !errdefs.IsNotFound(err):
		return nil, err
	}
	ci, err := st.svc.ResolveForContainer(ctx, ns, image, "")
	if err != nil {
		return nil, err
	}
	mounts, release, err := st.svc.PrepareSnapshot(ctx, ns, id, ci.ChainID, map[string]string{"edged.io/container": id})
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("snapshot %q in namespace %q exists (left by an earlier container?); remove it or run edgectl gc: %w", id, ns, errdefs.ErrAlreadyExists)
		}
		return nil, err
	}
	removeSnapshot := func(ctx context.Context) {
		if err := st.sn.Remove(ctx, ns, id); err != nil && !errdefs.IsNotFound(err) {
			st.log.Warn("cannot remove the snapshot of a failed container; garbage collection will", "container", id, "error", err)
		}
	}
	dir, err := os.MkdirTemp(st.state, "rootfs-")
	if err != nil {
		removeSnapshot(context.WithoutCancel(ctx))
		release()
		return nil, err
	}
	if err := mount.MountAll(mounts, dir); err != nil {
		os.Remove(dir)
		removeSnapshot(context.WithoutCancel(ctx))
		release()
		return nil, fmt.Errorf("mount rootfs of %q: %w", id, err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			if err := mount.UnmountAll(dir); err != nil {
				st.log.Warn("cannot unmount temporary rootfs", "dir", dir, "error", err)
				return
			}
			os.Remove(dir)
		})
	}
	var cfg = ci.Config.Config
	return &PreparedRootfs{
		Config:      cfg,
		Rootfs:      dir,
		Snapshotter: string(st.sn.Backend()),
		SnapshotKey: id,
		Done: func() {
			unmount()
			release()
		},
		Rollback: func(ctx context.Context) {
			unmount()
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			removeSnapshot(rctx)
		},
	}, nil
}
