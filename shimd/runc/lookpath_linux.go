package runc

import (
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// lookPath finds the runtime binary like exec.LookPath, with less garbage:
// exec.LookPath builds an os.FileInfo for every PATH entry it tries and
// splits PATH into a slice, and a shim keeps every byte of garbage it ever
// made resident until a collection (it rarely has one). A name with a slash
// and the unusual cases (a relative PATH entry, which exec.LookPath refuses
// with exec.ErrDot) go to exec.LookPath itself.
func lookPath(name string) (string, error) {
	if name == "" || strings.Contains(name, "/") {
		return exec.LookPath(name)
	}
	for dir := range strings.SplitSeq(os.Getenv("PATH"), ":") {
		if !strings.HasPrefix(dir, "/") {
			return exec.LookPath(name)
		}
		p := dir + "/" + name
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// isExecutable reports whether p is a file that is not a directory and has
// an execute bit, as exec.LookPath requires.
func isExecutable(p string) bool {
	var st unix.Stat_t
	for {
		err := unix.Stat(p, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		break
	}
	return st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Mode&0o111 != 0
}
