// Package netns creates, lists, enters and deletes network namespaces that
// outlive any process, the way `ip netns add` does, without needing the ip
// binary.
//
// A named namespace is an empty file <dir>/<name> onto which the kernel's
// nsfs handle of a fresh network namespace (/proc/self/task/<tid>/ns/net) is
// bind mounted. The namespace lives as long as that mount (or a process inside
// it) exists. The directory itself is made a shared mount point, so that mount
// namespaces created later (containers) see the namespace mounts and an
// unmount here propagates to them.
//
// # Threads
//
// A network namespace belongs to an OS thread, not to a process. Every
// operation that changes a thread's namespace runs in a fresh goroutine locked
// to its OS thread with runtime.LockOSThread:
//
//   - Create unshares a new network namespace on that thread, brings lo up,
//     bind mounts the thread's namespace file, and switches back with setns
//     to the namespace the thread had before.
//   - Do enters the target namespace with setns, runs the function, and
//     switches back to the original namespace.
//
// Only if switching back worked is the thread unlocked and returned to the
// scheduler; otherwise the goroutine exits still locked and the runtime
// terminates the thread (the main thread cannot be terminated: it is parked
// for good instead, which is just as safe). Letting every thread die after
// Create was avoided on purpose: when that thread happens to be the main
// thread it stays parked in the foreign namespace, and /proc/self/ns/net (which
// reads the main thread's namespace) would then name the wrong namespace.
//
// So no goroutine outside these two functions ever runs in a foreign network
// namespace.
package netns
