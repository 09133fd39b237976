package rpc

import "time"

// IdleWorkers is the number of workers waiting for a unary call.
func (s *Server) IdleWorkers() int { return int(s.idle.Load()) }

// MaxIdleWorkers is maxIdleWorkers.
const MaxIdleWorkers = maxIdleWorkers

// SetStreamWait sets how long a client stream's message waits for room in
// its queue before it is refused with ErrStreamFull; call it before Serve.
func SetStreamWait(s *Server, d time.Duration) { s.streamWait = d }
