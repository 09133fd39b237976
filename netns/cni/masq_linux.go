package cni

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// removeMasquerade deletes the per-container masquerade chain the bridge
// plugin created for containerID on network (in both iptables and ip6tables,
// when installed): the POSTROUTING jumps to it, then the chain. The rules
// are recognised by the comment the plugins put on them,
// `name: "<network>" id: "<containerID>"`. Nothing to remove is success.
func removeMasquerade(ctx context.Context, network, containerID string) error {
	comment := fmt.Sprintf("name: %q id: %q", network, containerID)
	quoted := strconv.Quote(comment) // how iptables -S prints it
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, path, "-w", "-t", "nat", "-S", "POSTROUTING").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("cni: %s -S POSTROUTING: %w", bin, err))
			continue
		}
		chains := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "-A POSTROUTING ") || !strings.Contains(line, quoted) {
				continue
			}
			f := strings.Fields(line)
			src, chain := flagValue(f, "-s"), flagValue(f, "-j")
			if src == "" || !strings.HasPrefix(chain, "CNI-") {
				continue
			}
			chains[chain] = true
			if err := run(ctx, path, "-w", "-t", "nat", "-D", "POSTROUTING", "-s", src, "-j", chain, "-m", "comment", "--comment", comment); err != nil {
				errs = append(errs, err)
			}
		}
		for chain := range chains {
			if err := run(ctx, path, "-w", "-t", "nat", "-F", chain); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := run(ctx, path, "-w", "-t", "nat", "-X", chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// flagValue returns the token after flag in f.
func flagValue(f []string, flag string) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}

func run(ctx context.Context, path string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cni: %s %s: %w: %s", path, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
