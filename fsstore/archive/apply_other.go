//go:build !linux

package archive

import (
	"context"
	"fmt"

	"github.com/edged/edged/edged/errdefs"
)

func applyTar(ctx context.Context, root string, lr *layerReader, buf []byte, opts ApplyOptions) (int64, error) {
	return 0, fmt.Errorf("applying layers is only implemented on Linux: %w", errdefs.ErrNotImplemented)
}
