//go:build !linux

package client

// inMemory reports whether dir is on a memory file system: not known
// here, so FIFODir uses the temp directory.
func inMemory(dir string) bool { return false }
