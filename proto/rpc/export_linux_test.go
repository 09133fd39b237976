package rpc

// PollCounts returns how many reads of c's socket found data while
// polling (see SetBusyPoll) and how many polled in vain and then slept.
func PollCounts(c *Conn) (polled, slept uint64) {
	r := c.rw.(*rawIO)
	return r.polled, r.slept
}
