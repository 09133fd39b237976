package rpc

import "time"

// IdleWorkers is the number of workers waiting for a unary call.
func (s *Server) IdleWorkers() int { return int(s.idle.Load()) }

// MaxIdleWorkers is maxIdleWorkers.
const MaxIdleWorkers = maxIdleWorkers

// SetStreamWait sets how long a client stream's message waits for room in
// its queue before it is refused with ErrStreamFull; call it before Serve.
func SetStreamWait(s *Server, d time.Duration) { s.streamWait = d }

// SetRefuseWait sets how long a connection refused for MaxConns may take
// to send its first request; call it before Serve.
func SetRefuseWait(s *Server, d time.Duration) { s.refuseWait = d }

// Conns is the number of connections the server holds open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// MaxRefusing is maxRefusing.
const MaxRefusing = maxRefusing
