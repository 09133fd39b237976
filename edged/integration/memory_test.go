package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/internal/testutil"
)

// exeMappingFlags returns the VmFlags of pid's private read-only mappings of
// its executable (from /proc/PID/smaps), one entry per mapping.
func exeMappingFlags(t *testing.T, pid int) []string {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var flags []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = fields[5] == exe && fields[1][1] != 'w' && fields[1][3] == 'p'
			continue
		}
		if in && len(fields) > 0 && fields[0] == "VmFlags:" {
			flags = append(flags, strings.Join(fields[1:], " "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(flags) < 2 {
		t.Fatalf("found %d read-only mappings of %s in /proc/%d/smaps, want code and rodata", len(flags), exe, pid)
	}
	return flags
}

func randomRead(flags []string) bool {
	for _, f := range flags {
		if !strings.Contains(" "+f+" ", " rr ") {
			return false
		}
	}
	return true
}

// edged pages its code out once it is idle ([memory] page_out_code): its
// code mappings are then marked MADV_RANDOM ("rr") and keep serving; with
// page_out_code off they are left alone.
func TestIdleReleasePagesOutCode(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       bool
	}{
		{"on", "[memory]\nidle_release = \"100ms\"\npage_out_code = true\n", true},
		{"off", "[memory]\nidle_release = \"100ms\"\npage_out_code = false\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			cfg := filepath.Join(dir, "edged.toml")
			if err := os.WriteFile(cfg, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			d := testutil.StartDaemon(t, testutil.DaemonConfig{Bin: binDir, Dir: dir, Args: []string{"--config", cfg}})
			c := newClient(t, d)
			pid := d.Pid()
			deadline := time.Now().Add(5 * time.Second)
			for !randomRead(exeMappingFlags(t, pid)) && time.Now().Before(deadline) && tc.want {
				time.Sleep(50 * time.Millisecond)
			}
			if !tc.want {
				time.Sleep(time.Second) // several idle periods
			}
			if got := randomRead(exeMappingFlags(t, pid)); got != tc.want {
				t.Fatalf("code mappings random-read = %v, want %v: %q", got, tc.want, exeMappingFlags(t, pid))
			}
			// Paged out or not, edged answers.
			if _, err := c.Version(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ListNamespaces(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
