package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoHeavyDependencies keeps packages out of edged that cost binary size
// and that the daemon has no use for.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	// Exact package names: templates (and their reflect.Value.MethodByName
	// calls, which disable dead-method elimination), HTTP and TLS (registry
	// access runs in edged-remote; net/http also came in through
	// OpenTelemetry in CNI ≥ 1.3), JSON codecs of the protobuf runtimes,
	// the full gRPC stack, the registry client itself.
	forbidden := map[string]bool{
		"net/http":                             true,
		"crypto/tls":                           true,
		"crypto/x509":                          true,
		"go.opentelemetry.io/otel":             true,
		"github.com/edged/edged/edged/remotes": true,
		"text/template":                        true,
		"html/template":                        true,
		"encoding/xml":                         true,
		"expvar":                               true,
		"net/rpc":                              true,
		"net/http/pprof":                       true,
		"net/http/httputil":                    true,
		"github.com/gogo/protobuf/jsonpb":      true,
		"google.golang.org/protobuf/encoding/protojson": true,
		"google.golang.org/grpc":                        true,
	}
	for _, dep := range strings.Fields(string(out)) {
		if forbidden[dep] {
			t.Errorf("edged depends on %s", dep)
		}
	}
}

// TestDeadMethodsEliminated fails when something in edged calls
// reflect.Value.Method, reflect.Value.MethodByName or reflect.Type.Method
// with a non-constant argument (text/template does): the linker then keeps
// every exported method of every type that may be converted to an interface,
// megabytes for edged. time.Time.ISOWeek is such a method that edged never
// calls; it is in the binary only when dead-method elimination is off.
func TestDeadMethodsEliminated(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "edged")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	syms := string(out)
	if !strings.Contains(syms, " main.main\n") {
		t.Fatalf("go tool nm output has no main.main: %.200s", syms)
	}
	for _, sym := range []string{" time.Time.ISOWeek\n", " time.Time.YearDay\n"} {
		if strings.Contains(syms, sym) {
			t.Errorf("edged links%s: a reflect method call keeps all exported methods alive", strings.TrimSuffix(sym, "\n"))
		}
	}
}
