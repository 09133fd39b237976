package platforms

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// hostArmVariant returns the arm variant of this CPU: GOARM from the
// environment when set (it says what the user built for), else the "CPU
// architecture" line of /proc/cpuinfo, else v7.
func hostArmVariant() string {
	if v := os.Getenv("GOARM"); v != "" {
		return "v" + strings.TrimPrefix(strings.SplitN(v, ",", 2)[0], "v")
	}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "v7"
	}
	defer f.Close()
	if v := armVariantFromCPUInfo(f); v != "" {
		return v
	}
	return "v7"
}

// armVariantFromCPUInfo parses /proc/cpuinfo text. On arm64 kernels running
// a 32-bit userland the value is 8 ("AArch64" on some kernels).
func armVariantFromCPUInfo(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "CPU architecture" {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case strings.EqualFold(v, "AArch64"):
			return "v8"
		case v == "5TEJ" || strings.HasPrefix(v, "5"):
			return "v5"
		case v != "" && v[0] >= '5' && v[0] <= '9':
			if v[0] >= '8' {
				return "v8"
			}
			return "v" + v[:1]
		}
	}
	return ""
}
