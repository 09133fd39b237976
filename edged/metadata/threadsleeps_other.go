//go:build !linux

package metadata

// threadSleeps is not available here (raw writes are off, see
// rawPwriteWorks).
func threadSleeps() int64 { return -1 }
