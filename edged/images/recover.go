package images

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/metadata"
	"github.com/edged/edged/fsstore/snapshots"
)

// staleIngestAge: Recover removes resumable ingests not written for this
// long.
const staleIngestAge = 24 * time.Hour

// RecoverResult reports what Recover repaired.
type RecoverResult struct {
	RemovedLeases   int // import leases left by a crash
	RemovedExtracts int // half-made extract-* snapshots
	GC              GCResult
}

// Recover repairs the state after a crash; call it at start-up, after the
// snapshotter is opened and before any import. It removes stale content
// ingests, lets the snapshotter clean up (stale mounts, orphan
// directories), deletes the leases of imports (none survives a restart),
// removes active "extract-* ..." snapshots, and garbage collects what they held.
func (s *Service) Recover(ctx context.Context) (RecoverResult, error) {
	var res RecoverResult
	var errs []error
	// Ingests of imports are never resumed; those of pulls ("pull-<digest>")
	// and of Content.Write clients are, until they are a day old.
	if err := s.cs.Cleanup(ctx, staleIngestAge); err != nil {
		errs = append(errs, fmt.Errorf("recover: content: %w", err))
	}
	if sts, err := s.cs.ListStatuses(ctx); err != nil {
		errs = append(errs, fmt.Errorf("recover: content: %w", err))
	} else {
		for _, st := range sts {
			if strings.HasPrefix(st.Ref, "import-") {
				if err := s.cs.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("recover: content: %w", err))
				}
			}
		}
	}
	if err := s.sn.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("recover: snapshots: %w", err))
	}
	err := s.db.Update(ctx, func(tx *metadata.Tx) error {
		res.RemovedLeases = 0
		nss, err := tx.ListNamespaces(ctx)
		if err != nil {
			return err
		}
		for _, n := range nss {
			ls, err := tx.ListLeases(ctx, n.Name, metadata.LeaseFilter{Labels: []metadata.LabelMatch{{Key: LabelImportLease, Exists: true}}})
			if err != nil {
				return err
			}
			for _, l := range ls {
				if err := tx.DeleteLease(ctx, n.Name, l.ID); err != nil && !errdefs.IsNotFound(err) {
					return err
				}
				res.RemovedLeases++
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("recover: leases: %w", err))
	}
	nss, err := s.snapshotNamespaces(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		infos, err := s.sn.List(ctx, ns)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, i := range infos {
			if !strings.HasPrefix(i.Name, ExtractPrefix) || !strings.Contains(i.Name, " ") || i.Kind != snapshots.KindActive {
				continue
			}
			if err := s.sn.Remove(ctx, ns, i.Name); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("recover: %w", err))
				continue
			}
			res.RemovedExtracts++
		}
	}
	gc, err := s.GarbageCollect(ctx)
	res.GC = gc
	if err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}
