package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/edged/edged/edged/errdefs"
)

// Limits of one plugin run. libcni's default executor (invoke.RawExec)
// has none: a plugin whose child keeps its stdout open holds the call past
// its context (exec.CommandContext kills the plugin only, and waits for
// the pipes), and everything a plugin prints is kept in memory and copied
// into the error.
const (
	// maxPluginStdout bounds a plugin's result (or error object); real
	// results are a few KiB. A plugin printing more fails.
	maxPluginStdout = 1 << 20
	// maxPluginStderr bounds what is kept of a plugin's stderr, which ends
	// up in the error message when the plugin fails; the rest is dropped.
	maxPluginStderr = 64 << 10
	// pluginWaitDelay is how long the output of a plugin that exited, or
	// was killed, is still read: a child of the plugin may hold its pipes.
	pluginWaitDelay = 2 * time.Second
	// pluginBusyRetries and pluginBusyDelay retry a plugin binary that is
	// being written ("text file busy"), as libcni's RawExec does.
	pluginBusyRetries = 5
	pluginBusyDelay   = time.Second
)

// pluginExec runs CNI plugins for libcni (invoke.Exec) in a process group
// of their own, killed whole when the context is done, with bounded output.
type pluginExec struct {
	version.PluginDecoder
}

var _ invoke.Exec = (*pluginExec)(nil)

func (e *pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		out, err := e.run(ctx, pluginPath, stdinData, environ)
		if !errors.Is(err, syscall.ETXTBSY) || attempt == pluginBusyRetries {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pluginBusyDelay):
		}
	}
}

func (e *pluginExec) run(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	stdout := &limitedBuffer{max: maxPluginStdout}
	stderr := &limitedBuffer{max: maxPluginStderr, truncate: true}
	c := exec.CommandContext(ctx, pluginPath)
	c.Env = environ
	c.Stdin = bytes.NewReader(stdinData)
	c.Stdout = stdout
	c.Stderr = stderr
	// A group of its own, so that the plugin's children (iptables, ...)
	// are killed with it when the context is done.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = pluginWaitDelay
	err := c.Run()
	if stdout.overflow {
		return nil, fmt.Errorf("plugin %s printed more than %d bytes: %w", pluginPath, maxPluginStdout, errdefs.ErrResourceExhausted)
	}
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil {
		// The plugin succeeded; a child it left kept the pipes open past
		// pluginWaitDelay. Its output is complete.
		err = nil
	}
	if err != nil {
		if errors.Is(err, syscall.ETXTBSY) {
			return nil, err
		}
		if cerr := ctx.Err(); cerr != nil {
			// Killed at the deadline: the context's error stays in the
			// chain (libcni wraps what this returns with %w), so callers
			// see DeadlineExceeded or Canceled, not a plugin failure.
			return nil, fmt.Errorf("%w: %w", pluginErr(err, stdout.Bytes(), stderr), cerr)
		}
		return nil, pluginErr(err, stdout.Bytes(), stderr)
	}
	return stdout.Bytes(), nil
}

// pluginErr builds the error of a failed plugin as libcni's RawExec does:
// the error object the plugin printed, or its stderr (truncated).
func pluginErr(err error, stdout []byte, stderr *limitedBuffer) error {
	emsg := types.Error{}
	if len(stdout) == 0 {
		switch {
		case stderr.Len() == 0:
			emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
		case stderr.overflow:
			emsg.Msg = fmt.Sprintf("netplugin failed: %q (stderr truncated to %d bytes)", stderr.Bytes(), maxPluginStderr)
		default:
			emsg.Msg = fmt.Sprintf("netplugin failed: %q", stderr.Bytes())
		}
	} else if perr := json.Unmarshal(stdout, &emsg); perr != nil {
		shown := stdout
		if len(shown) > maxPluginStderr {
			shown = shown[:maxPluginStderr]
		}
		emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", shown, perr)
	}
	return &emsg
}

// limitedBuffer keeps up to max bytes. Past that, it drops the rest when
// truncate is set, and fails the write otherwise (which makes os/exec stop
// reading the pipe: the plugin gets EPIPE). The bytes.Buffer is a field,
// not embedded: its ReadFrom, which io.Copy would use, has no limit.
type limitedBuffer struct {
	buf      bytes.Buffer
	max      int
	truncate bool
	overflow bool
}

func (b *limitedBuffer) Len() int      { return b.buf.Len() }
func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.buf.Len()
	if len(p) <= room {
		return b.buf.Write(p)
	}
	b.overflow = true
	if room > 0 {
		b.buf.Write(p[:room])
	}
	if b.truncate {
		return len(p), nil
	}
	return room, fmt.Errorf("more than %d bytes of output", b.max)
}
