package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	api "github.com/edged/edged/proto/services/tasks/v1"
)

// logChunk bounds one streamed message.
const logChunk = 32 << 10

// followPoll is how often a followed log is checked for growth.
const followPoll = 200 * time.Millisecond

// Logs streams a detached container's log: the rotated files oldest first,
// then the current one; with tail, only the last lines; with follow, new
// output until the task has exited (or the client goes away).
func (s *service) Logs(ctx context.Context, r *api.LogsRequest, stream api.Tasks_LogsServer) error {
	if err := s.logs(ctx, r, stream); err != nil {
		return errdefs.ToStatus(err)
	}
	return nil
}

func (s *service) logs(ctx context.Context, r *api.LogsRequest, stream api.Tasks_LogsServer) error {
	ns := r.Namespace
	if err := identifiers.Validate("namespace", ns); err != nil {
		return err
	}
	if err := identifiers.Validate("container_id", r.ContainerId); err != nil {
		return err
	}
	base := LogPath(s.LogDir, ns, r.ContainerId)
	var files []string
	for i := s.LogMaxFiles - 1; i >= 1; i-- {
		if _, err := os.Stat(base + "." + strconv.Itoa(i)); err == nil {
			files = append(files, base+"."+strconv.Itoa(i))
		}
	}
	if _, err := os.Stat(base); err == nil {
		files = append(files, base)
	}
	if len(files) == 0 {
		if !s.Runtime.Has(ns, r.ContainerId) {
			return fmt.Errorf("no logs for container %q in namespace %q: %w", r.ContainerId, ns, errdefs.ErrNotFound)
		}
		files = append(files, base)
	}
	startFile, startOff := 0, int64(0)
	if r.Tail >= 0 {
		var err error
		if startFile, startOff, err = tailStart(files, r.Tail); err != nil {
			return err
		}
	}
	buf := make([]byte, logChunk)
	send := func(f *os.File) error {
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if err := stream.Send(&api.LogChunk{Data: append([]byte(nil), buf[:n]...)}); err != nil {
					return err
				}
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	for i := startFile; i < len(files); i++ {
		f, err := os.Open(files[i])
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		if i == startFile && startOff > 0 {
			f.Seek(startOff, io.SeekStart)
		}
		err = send(f)
		if err == nil && i == len(files)-1 && r.Follow {
			f, err = s.follow(ctx, f, base, ns, r.ContainerId, send)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// follow sends what is appended to f, reopening base when it is rotated,
// until the task is gone or stopped and its output is read. It returns the
// file it ends with, for the caller to close.
func (s *service) follow(ctx context.Context, f *os.File, base, ns, id string, send func(*os.File) error) (*os.File, error) {
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return f, nil
		case <-t.C:
		}
		running := false
		if st, err := s.Runtime.State(ctx, ns, id, ""); err == nil && (st.Status == 2 || st.Status == 4 || st.Status == 1) {
			running = true
		}
		// Rotated: the path names a new file; finish the old one first.
		if fi, err := os.Stat(base); err == nil {
			cur, _ := f.Stat()
			if cur != nil && !os.SameFile(fi, cur) {
				if err := send(f); err != nil {
					return f, err
				}
				if nf, err := os.Open(base); err == nil {
					f.Close()
					f = nf
				}
			}
		}
		if err := send(f); err != nil {
			return f, err
		}
		if !running {
			return f, nil
		}
	}
}

// tailStart finds where the last n lines of the files begin, reading
// backwards in chunks.
func tailStart(files []string, n int64) (int, int64, error) {
	if n == 0 {
		last := len(files) - 1
		fi, err := os.Stat(files[last])
		if err != nil {
			return last, 0, nil
		}
		return last, fi.Size(), nil
	}
	buf := make([]byte, logChunk)
	var lines int64
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.Open(files[i])
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return 0, 0, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return 0, 0, err
		}
		end := fi.Size()
		// A final line without newline counts as a line; a trailing
		// newline does not start one.
		first := true
		for end > 0 {
			start := end - int64(len(buf))
			if start < 0 {
				start = 0
			}
			k, err := f.ReadAt(buf[:end-start], start)
			if err != nil && !errors.Is(err, io.EOF) {
				f.Close()
				return 0, 0, err
			}
			for j := k - 1; j >= 0; j-- {
				if buf[j] != '\n' {
					first = false
					continue
				}
				if first && i == len(files)-1 && start+int64(j) == fi.Size()-1 {
					first = false
					continue
				}
				lines++
				if lines == n {
					f.Close()
					return i, start + int64(j) + 1, nil
				}
			}
			end = start
		}
		f.Close()
	}
	return 0, 0, nil
}
