// Command mkimage writes the edged demo image: an OCI image-layout tar with
// one gzip layer holding Debian's static busybox, applet links, /etc/passwd
// and /etc/group, /tmp and /root. The output is deterministic: the same
// busybox binary always gives the same digests.
//
//	go run ./hack/mkimage -o out.tar [-name docker.io/library/busybox:edged-demo] [-platform linux/amd64] [-busybox /bin/busybox]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/images/platforms"
	"github.com/edged/edged/edged/images/testimage"
	"github.com/edged/edged/internal/atomicfile"
)

func main() {
	out := flag.String("o", "", "output file (required)")
	name := flag.String("name", testimage.DemoName, "image name (org.opencontainers.image.ref.name and io.containerd.image.name)")
	platform := flag.String("platform", platforms.DefaultSpec(), "platform os/arch[/variant] recorded in the image")
	bb := flag.String("busybox", testimage.DefaultBusybox, "static busybox binary to put in the image")
	flag.Parse()
	if err := run(*out, *name, *platform, *bb); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, name, platform, bb string) error {
	if out == "" {
		return fmt.Errorf("-o is required")
	}
	p, err := platforms.Parse(platform)
	if err != nil {
		return err
	}
	img, err := testimage.Busybox(bb, p)
	if err != nil {
		return err
	}
	l := testimage.NewLayout()
	l.AddImage(img, map[string]string{
		ocispec.AnnotationRefName:  name,
		"io.containerd.image.name": name,
	})
	data := l.Bytes(testimage.TarOptions{})
	if err := atomicfile.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: %s %s manifest %s (%d bytes)\n", filepath.Clean(out), name, platforms.Format(p), img.Manifest.Digest, len(data))
	return nil
}
