package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edged/edged/cgroups"
)

// DeleteExited deletes a container whose init process has exited and been
// reaped. For a runc container that needs nothing but its cgroups and its
// state directory removed (the common case) it does that itself, as
// `runc delete` would: starting runc for it costs a process start of a
// 10 MB Go binary, the largest part of removing a container. Anything else
// — another runtime (crun keeps another state layout), poststop hooks,
// systemd cgroups, Intel RDT, rootless containers, a container sharing a
// PID namespace (runc kills what is left in its cgroup first), an init that
// still runs, a state file that is not runc's — goes to `runc delete
// --force`.
func (r *Runc) DeleteExited(ctx context.Context, id string) error {
	done, err := r.deleteStopped(ctx, id)
	if done {
		return err
	}
	return r.Delete(ctx, id, true)
}

// runcState is the part of runc's state.json (libcontainer's State) that
// deleting a stopped container needs.
type runcState struct {
	ID          string            `json:"id"`
	InitPid     int               `json:"init_process_pid"`
	InitStart   uint64            `json:"init_process_start"`
	Rootless    bool              `json:"rootless"`
	CgroupPaths map[string]string `json:"cgroup_paths"`
	IntelRdt    string            `json:"intel_rdt_path"`
	Config      *struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
		Cgroups *struct {
			Systemd  bool `json:"Systemd"`
			Rootless bool `json:"Rootless"`
		} `json:"cgroups"`
		Hooks map[string][]json.RawMessage `json:"Hooks"`
	} `json:"config"`
}

// cgroupRoot is where every cgroup path of a container must be.
const cgroupRoot = "/sys/fs/cgroup/"

// deleteStopped removes a stopped runc container natively. done is false
// when the container is not one it can remove (nothing was changed then).
func (r *Runc) deleteStopped(ctx context.Context, id string) (done bool, _ error) {
	if r.SystemdCgroup || id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return false, nil
	}
	dir := filepath.Join(r.Root, id)
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil || len(data) > 1<<20 {
		return false, nil
	}
	var st runcState
	if err := json.Unmarshal(data, &st); err != nil || st.ID != id || st.Config == nil || st.Config.Cgroups == nil || st.CgroupPaths == nil {
		return false, nil
	}
	if st.Rootless || st.IntelRdt != "" || st.Config.Cgroups.Systemd || st.Config.Cgroups.Rootless {
		return false, nil
	}
	for _, h := range st.Config.Hooks["poststop"] {
		if len(bytes.TrimSpace(h)) > 0 && !bytes.Equal(bytes.TrimSpace(h), []byte("null")) {
			return false, nil
		}
	}
	privatePID := false
	for _, ns := range st.Config.Namespaces {
		if ns.Type == "NEWPID" && ns.Path == "" {
			privatePID = true
		}
	}
	if !privatePID {
		return false, nil
	}
	for _, p := range st.CgroupPaths {
		if c := filepath.Clean(p); c != p || !strings.HasPrefix(p, cgroupRoot) {
			return false, nil
		}
	}
	if st.InitPid <= 0 || initAlive(st.InitPid, st.InitStart) {
		return false, nil
	}
	// What runc's destroy does for a stopped container: the cgroups (sub-
	// cgroups first, retrying while the kernel still tears down the
	// processes the PID namespace's end killed), then the state directory.
	// Like runc, a cgroup that will not go does not keep the state.
	dirs := make([]string, 0, len(st.CgroupPaths))
	for _, p := range st.CgroupPaths {
		dirs = append(dirs, p)
	}
	cgErr := cgroups.RemoveDirs(ctx, dirs...)
	if err := os.RemoveAll(dir); err != nil {
		return true, fmt.Errorf("delete %s: remove runc state: %w", id, err)
	}
	if cgErr != nil {
		return true, fmt.Errorf("delete %s: %w", id, cgErr)
	}
	return true, nil
}

// initAlive reports whether pid is still the container's init (same start
// time), dead or not yet reaped.
func initAlive(pid int, start uint64) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Fields after the command (which may contain spaces and parentheses).
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return true
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return true
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return err != nil || t == start
}
