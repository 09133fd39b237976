package shimd_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	taskapi "github.com/edged/edged/proto/runtime/task/v2"
)

// runcState reads the cgroup paths runc recorded for a container.
func runcCgroups(t *testing.T, s *shimProc, id string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.state, "runc", "test", id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(data, &st); err != nil || len(st.CgroupPaths) == 0 {
		t.Fatalf("state.json: %v, cgroup paths %v", err, st.CgroupPaths)
	}
	return st.CgroupPaths
}

// Deleting an exited container removes what `runc delete` removes — its
// cgroups and runc's state — without a runc process (the shim does it; see
// runc.DeleteExited), and runc no longer knows the container.
func TestDeleteExitedRemovesRuncState(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("natdel")
	b := newBundle(t, id, []string{"sh", "-c", "exit 4"}, false, nil)
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	if w := wait(t, s, id, ""); w.ExitStatus != 4 {
		t.Fatalf("exit status %d, want 4", w.ExitStatus)
	}
	cgroups := runcCgroups(t, s, id)
	for _, p := range cgroups {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("cgroup %s before delete: %v", p, err)
		}
	}
	if d := del(t, s, id); d.ExitStatus != 4 {
		t.Fatalf("delete exit status %d, want 4", d.ExitStatus)
	}
	for _, p := range cgroups {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after delete: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.state, "runc", "test", id)); !os.IsNotExist(err) {
		t.Errorf("runc state directory still there: %v", err)
	}
	out, err := exec.Command("runc", "--root", filepath.Join(s.state, "runc", "test"), "state", id).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not exist") {
		t.Fatalf("runc state after delete: %v: %s; want does not exist", err, out)
	}
}

// A container with a poststop hook is deleted by runc itself: the hook
// runs, which the shim's own removal could not do.
func TestDeleteExitedRunsPoststopHook(t *testing.T) {
	s := startShim(t, "/nonexistent/events.sock")
	id := randID("hook")
	b := newBundle(t, id, []string{"true"}, false, nil)
	mark := filepath.Join(t.TempDir(), "poststop-ran")
	var spec map[string]any
	data, err := os.ReadFile(filepath.Join(b, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	spec["hooks"] = map[string]any{"poststop": []any{map[string]any{"path": "/bin/sh", "args": []string{"sh", "-c", "touch " + mark}}}}
	data, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	create(t, s, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	start(t, s, id, "")
	wait(t, s, id, "")
	cgroups := runcCgroups(t, s, id)
	del(t, s, id)
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("poststop hook did not run: %v", err)
	}
	for _, p := range cgroups {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after delete: %v", p, err)
		}
	}
}
