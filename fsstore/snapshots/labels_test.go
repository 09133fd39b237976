package snapshots

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

// labelSet returns n labels "key-000"... with values of valueSize bytes.
func labelSet(n, valueSize int) map[string]string {
	m := make(map[string]string, n)
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("key-%03d", i)] = strings.Repeat("v", valueSize)
	}
	return m
}

func wantErrMsg(t *testing.T, what string, err, kind error, msg string) {
	t.Helper()
	if !errors.Is(err, kind) || err.Error() != msg {
		t.Errorf("%s: err = %v, want %q (%v)", what, err, msg, kind)
	}
}

// TestLabelLimits: snapshot labels follow the limits of every object's
// labels (README: 256 labels, 64 KiB per object, 256-byte keys, 4 KiB per
// key and value) on Prepare, View, Commit and Update. An Update of single
// labels ("labels.<key>") is checked on the label set it produces, so it
// cannot grow a snapshot's labels past the limits one call at a time.
func TestLabelLimits(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendNative)
	s := e.s
	const ns = "ns"
	const tooMany = "labels: 257 labels is more than the maximum of 256: invalid argument"
	const tooBig = `labels: key "key-016": labels total more than the maximum of 65536 bytes: invalid argument`
	longKey := strings.Repeat("k", 257)
	longKeyMsg := `labels: key "` + strings.Repeat("k", 64) + `"... is 257 bytes, must be 1 to 256: invalid argument`

	// Creation: nothing is made when the labels are over a limit.
	_, err := s.Prepare(ctx, ns, "a1", "", labelSet(257, 1))
	wantErrMsg(t, "Prepare with 257 labels", err, errdefs.ErrInvalidArgument, tooMany)
	_, err = s.Prepare(ctx, ns, "a2", "", labelSet(17, 4000)) // 17 × 4007 bytes > 64 KiB
	wantErrMsg(t, "Prepare with 68 KB of labels", err, errdefs.ErrInvalidArgument, tooBig)
	_, err = s.View(ctx, ns, "a3", "", map[string]string{longKey: "v"})
	wantErrMsg(t, "View with a 257-byte key", err, errdefs.ErrInvalidArgument, longKeyMsg)
	for _, key := range []string{"a1", "a2", "a3"} {
		if _, err := s.Stat(ctx, ns, key); !errdefs.IsNotFound(err) {
			t.Errorf("snapshot %s was created despite invalid labels: %v", key, err)
		}
	}
	// At the limits.
	_, err = s.Prepare(ctx, ns, "full", "", labelSet(256, 1))
	must(t, err)
	_, err = s.View(ctx, ns, "bigkey", "", map[string]string{strings.Repeat("k", 256): "v"})
	must(t, err)
	_, err = s.Prepare(ctx, ns, "heavy", "", labelSet(16, 4000))
	must(t, err)

	// Commit: the active snapshot stays when the labels are refused.
	_, err = s.Prepare(ctx, ns, "active", "", nil)
	must(t, err)
	wantErrMsg(t, "Commit with 257 labels", s.Commit(ctx, ns, "committed", "active", labelSet(257, 1)),
		errdefs.ErrInvalidArgument, tooMany)
	if info, err := s.Stat(ctx, ns, "active"); err != nil || info.Kind != KindActive {
		t.Errorf("after the refused commit: %+v %v", info, err)
	} else {
		must(t, s.Commit(ctx, ns, "committed", "active", labelSet(256, 1)))
	}

	// Update, one label at a time: the 257th and the one that crosses
	// 64 KiB are refused, and the stored labels stay as they were.
	_, err = s.Update(ctx, ns, Info{Name: "full", Labels: map[string]string{"one-more": "v"}}, "labels.one-more")
	wantErrMsg(t, "Update adding a 257th label", err, errdefs.ErrInvalidArgument, tooMany)
	_, err = s.Update(ctx, ns, Info{Name: "heavy", Labels: map[string]string{"key-016": strings.Repeat("v", 4000)}}, "labels.key-016")
	wantErrMsg(t, "Update crossing 64 KiB", err, errdefs.ErrInvalidArgument, tooBig)
	_, err = s.Update(ctx, ns, Info{Name: "committed", Labels: labelSet(257, 1)}, "labels")
	wantErrMsg(t, "Update replacing with 257 labels", err, errdefs.ErrInvalidArgument, tooMany)
	_, err = s.Update(ctx, ns, Info{Name: "heavy", Labels: map[string]string{longKey: "v"}}, "labels."+longKey)
	wantErrMsg(t, "Update with a 257-byte key", err, errdefs.ErrInvalidArgument, longKeyMsg)
	for name, want := range map[string]int{"full": 256, "heavy": 16, "committed": 256} {
		if info, err := s.Stat(ctx, ns, name); err != nil || len(info.Labels) != want {
			t.Errorf("%s after refused updates: %d labels, %v; want %d", name, len(info.Labels), err, want)
		}
	}
	// What stays within the limits still works: replacing one label, and
	// removing one to make room for another in the same call.
	info, err := s.Update(ctx, ns, Info{Name: "full", Labels: map[string]string{"key-000": "x", "one-more": "v"}},
		"labels.key-000", "labels.key-001", "labels.one-more")
	must(t, err)
	if len(info.Labels) != 256 || info.Labels["key-000"] != "x" || info.Labels["one-more"] != "v" || info.Labels["key-001"] != "" {
		t.Fatalf("update within the limits: %d labels, key-000=%q one-more=%q", len(info.Labels), info.Labels["key-000"], info.Labels["one-more"])
	}
}

// A snapshot whose labels are over the limits (stored before snapshots had
// limits: written here straight into its database, as such a store holds
// them) can shed them a key at a time: an update that only removes labels
// is accepted, one that adds or changes a label is still refused while the
// set stays over. Unchanged labels are not rewritten.
func TestLabelsOverLimitCanShed(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, BackendNative)
	s := e.s
	const ns = "ns"
	_, err := s.Prepare(ctx, ns, "legacy", "", map[string]string{"keep": "k"})
	must(t, err)
	var id int64
	must(t, e.db.QueryRowContext(ctx, `SELECT id FROM snapshots WHERE key = ?`, "legacy").Scan(&id))
	for k, v := range labelSet(300, 1) {
		_, err := e.db.ExecContext(ctx, `INSERT INTO snapshot_labels(snapshot_id, key, value) VALUES (?, ?, ?)`, id, k, v)
		must(t, err)
	}
	const tooMany = "labels: 301 labels is more than the maximum of 256: invalid argument"
	_, err = s.Update(ctx, ns, Info{Name: "legacy", Labels: map[string]string{"keep": "changed"}}, "labels.keep")
	wantErrMsg(t, "Update changing a label of an over-limit set", err, errdefs.ErrInvalidArgument, tooMany)
	_, err = s.Update(ctx, ns, Info{Name: "legacy", Labels: map[string]string{"new": "v"}}, "labels.key-000", "labels.new")
	wantErrMsg(t, "Update removing one and adding one", err, errdefs.ErrInvalidArgument, tooMany)
	info, err := s.Update(ctx, ns, Info{Name: "legacy"}, "labels.key-000")
	if err != nil {
		t.Fatalf("Update removing one label of an over-limit set: %v", err)
	}
	if len(info.Labels) != 300 || info.Labels["keep"] != "k" {
		t.Fatalf("after removing one: %d labels, keep=%q; want 300, k", len(info.Labels), info.Labels["keep"])
	}
	// Shed down to the limit, then the set is ordinary again. Each update
	// writes only the row it removes (counted by triggers on the real
	// table): the others are not deleted and inserted again.
	for _, q := range []string{
		`CREATE TABLE label_writes (n INTEGER NOT NULL)`,
		`INSERT INTO label_writes VALUES (0)`,
		`CREATE TRIGGER label_ins AFTER INSERT ON snapshot_labels BEGIN UPDATE label_writes SET n = n + 1; END`,
		`CREATE TRIGGER label_upd AFTER UPDATE ON snapshot_labels BEGIN UPDATE label_writes SET n = n + 1; END`,
		`CREATE TRIGGER label_del AFTER DELETE ON snapshot_labels BEGIN UPDATE label_writes SET n = n + 1; END`,
	} {
		_, err := e.db.ExecContext(ctx, q)
		must(t, err)
	}
	for i := 1; i <= 44; i++ {
		_, err := s.Update(ctx, ns, Info{Name: "legacy"}, fmt.Sprintf("labels.key-%03d", i))
		must(t, err)
	}
	var writes int
	must(t, e.db.QueryRowContext(ctx, `SELECT n FROM label_writes`).Scan(&writes))
	if writes != 44 {
		t.Errorf("44 updates removing one label each wrote %d label rows; want 44", writes)
	}
	info, err = s.Update(ctx, ns, Info{Name: "legacy", Labels: map[string]string{"keep": "changed"}}, "labels.keep")
	if err != nil || len(info.Labels) != 256 || info.Labels["keep"] != "changed" {
		t.Fatalf("update at the limit after shedding: %d labels, keep=%q, %v", len(info.Labels), info.Labels["keep"], err)
	}
}
