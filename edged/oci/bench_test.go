package oci

import (
	"context"
	"encoding/json"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkGenerate measures a typical Generate: image config with a named
// user (so /etc/passwd and /etc/group are read from a real rootfs), env
// overrides and resource limits.
func BenchmarkGenerate(b *testing.B) {
	rootfs := testRootfs(b)
	img := baseImage()
	ctx := context.Background()
	opts := []SpecOpt{
		WithEnv("FOO=bar", "SHARED=x"),
		WithHostname("edge"),
		WithReadonlyRootfs(true),
		WithMemoryLimit(64 << 20),
		WithCPUs(0.5),
		WithPidsLimit(64),
		WithCapabilities([]string{"NET_ADMIN"}, []string{"MKNOD"}),
	}
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, err := Generate(ctx, "default", "bench", rootfs, img, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if size == 0 {
			data, _ := json.Marshal(s)
			size = len(data)
		}
	}
	b.ReportMetric(float64(size), "json-bytes")
}

// BenchmarkGenerateNumericUser is Generate with a numeric uid:gid, the
// cheapest user lookup (passwd is still read for HOME).
func BenchmarkGenerateNumericUser(b *testing.B) {
	rootfs := testRootfs(b)
	img := &ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(ctx, "default", "bench", rootfs, img, WithUser("1000:1000")); err != nil {
			b.Fatal(err)
		}
	}
}
