package server

import (
	"log/slog"
	"sync"
	"time"
)

// refuseLogEvery is the least time between two warnings about refused
// API connections.
const refuseLogEvery = 10 * time.Second

// refuseLogger returns the API server's OnRefuse: a warning for a
// connection refused over api.max_connections, at most one per every
// (refuseLogEvery), counting those it did not log.
func refuseLogger(log *slog.Logger, limit int, every time.Duration) func(open int) {
	var (
		mu      sync.Mutex
		last    time.Time
		skipped int
	)
	return func(open int) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if !last.IsZero() && now.Sub(last) < every {
			skipped++
			return
		}
		log.Warn("api: connection refused: too many open (api.max_connections)", "open", open, "limit", limit, "refused_unlogged", skipped)
		last, skipped = now, 0
	}
}
