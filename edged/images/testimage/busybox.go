package testimage

import (
	"fmt"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultBusybox is where Debian's busybox-static package installs the
// static binary.
const DefaultBusybox = "/bin/busybox"

// DemoName is the default name of the demo image.
const DemoName = "docker.io/library/busybox:edged-demo"

// Applets returns the busybox applets linked in the demo image's /bin.
func Applets() []string {
	return []string{
		"sh", "echo", "cat", "ls", "sleep", "id", "hostname", "env", "true", "false",
		"wget", "nc", "httpd", "ip", "ifconfig", "mkdir", "rm", "head", "tail", "dd",
		"yes", "top", "ps", "mount", "uname", "date",
	}
}

// BusyboxFiles returns the demo root filesystem: /bin/busybox (the file at
// busyboxPath), applet symlinks, /etc/passwd and /etc/group (root, nobody,
// app uid/gid 1000), /tmp (1777) and /root.
func BusyboxFiles(busyboxPath string) ([]File, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox binary: %w (install Debian's busybox-static)", err)
	}
	files := []File{
		Dir("bin/", 0o755),
		{Name: "bin/busybox", Mode: 0o755, Data: bin},
	}
	for _, a := range Applets() {
		files = append(files, Symlink("bin/"+a, "busybox"))
	}
	files = append(files,
		Dir("etc/", 0o755),
		Reg("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"app:x:1000:1000:app:/tmp:/bin/sh\n"),
		Reg("etc/group", 0o644, "root:x:0:\nnobody:x:65534:\napp:x:1000:\n"),
		Dir("root/", 0o700),
		Dir("tmp/", 0o1777),
	)
	return files, nil
}

// Busybox returns the demo image for platform (default linux/amd64) with a
// single gzip layer.
func Busybox(busyboxPath string, platform ocispec.Platform) (*Built, error) {
	files, err := BusyboxFiles(busyboxPath)
	if err != nil {
		return nil, err
	}
	return Build(Image{
		Platform: platform,
		Layers:   []Layer{{Files: files}},
		Config: ocispec.ImageConfig{
			Cmd: []string{"sh"},
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
	})
}
