package server

import (
	"log/slog"

	"github.com/edged/edged/edged/metrics"
	taskssvc "github.com/edged/edged/edged/services/tasks"
)

// metricsFunc returns the Tasks.Metrics hook: statistics read from each
// task's cgroup. Without a usable cgroup file system it returns nil and
// Tasks.Metrics answers ErrNotImplemented.
func metricsFunc(log *slog.Logger) taskssvc.MetricsFunc {
	r, err := metrics.New("")
	if err != nil {
		log.Warn("task metrics unavailable", "error", err)
		return nil
	}
	return r.Metrics
}
