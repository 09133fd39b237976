package rpc

// IdleWorkers is the number of workers waiting for a unary call.
func (s *Server) IdleWorkers() int { return int(s.idle.Load()) }

// MaxIdleWorkers is maxIdleWorkers.
const MaxIdleWorkers = maxIdleWorkers
