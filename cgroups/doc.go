// Package cgroups manages the control group of one container on a cgroup v2
// (unified) or v1 (legacy or hybrid) host: it creates, loads, limits,
// freezes and deletes it, and reads its accounting as a plain Stats struct.
//
// runc creates a container's cgroup; edged and the shim load it (from the
// configured path or from /proc/<pid>/cgroup) to read statistics and to
// update limits. Create exists for tests and for cgroups edged owns itself.
//
// The OOM-kill monitor lives in the subpackage oom.
package cgroups
