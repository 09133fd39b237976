// Package vmcheck holds tests that prove a `go test -c` binary runs inside the
// edged test VM (hack/vm/run.sh) on a cgroup v2 kernel. The tests skip unless
// EDGED_IN_VM=1, which run.sh sets for the command it runs.
package vmcheck
