package testutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// BusyboxApplets are linked in rootfs made by BusyboxRootfs.
var BusyboxApplets = []string{"sh", "echo", "cat", "ls", "sleep", "id", "hostname", "env", "true", "false",
	"yes", "head", "tail", "dd", "mkdir", "rm", "ps", "wc", "seq", "touch", "kill", "nc", "httpd", "ip", "ifconfig", "wget", "grep", "uname", "stty", "tty"}

// BusyboxRootfs builds a minimal root filesystem at dir from Debian's
// busybox-static: /bin/busybox, applet links, /etc/passwd and /etc/group.
func BusyboxRootfs(dir string) error {
	src := "/bin/busybox"
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("busybox-static is required (%s): %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, "bin", "busybox"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	for _, a := range BusyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
