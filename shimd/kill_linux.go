package shimd

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/edged/edged/edged/errdefs"
)

func killPid(pid, sig int) error {
	err := unix.Kill(pid, unix.Signal(sig))
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("process %d already finished: %w", pid, errdefs.ErrNotFound)
	}
	return err
}
