// Package mount describes filesystem mounts as returned by the snapshotter
// and performs them: MountAll mounts a list of mounts onto a target,
// UnmountAll removes every mount stacked on a target.
package mount

// Mount is one filesystem mount, in the form of mount(8) arguments.
type Mount struct {
	// Type is the filesystem type: "overlay", "bind", "tmpfs", ...
	Type string
	// Source is the device or directory to mount ("overlay" for overlayfs).
	Source string
	// Target is an optional path below the target given to MountAll; empty
	// means the target itself. It must be relative and must not contain "..".
	Target string
	// Options are mount(8) options: flags such as "ro", "rbind", "nosuid",
	// propagation such as "rprivate", and filesystem data such as
	// "lowerdir=a:b".
	Options []string
}

// MaxOverlayLayers is the most lower layers overlayfs accepts in one mount
// (the kernel's OVL_MAX_STACK).
const MaxOverlayLayers = 500
