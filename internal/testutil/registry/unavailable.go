package registry

import (
	"net"
	"net/http"
	"sync"
	"testing"
)

// Unavailable is a registry on 127.0.0.1 that answers 503 to every
// request and counts them by method and path.
type Unavailable struct {
	// Addr is its host:port.
	Addr string

	mu   sync.Mutex
	reqs map[string]int
}

// StartUnavailable starts an Unavailable registry, stopped when the test
// ends.
func StartUnavailable(t testing.TB) *Unavailable {
	t.Helper()
	u := &Unavailable{reqs: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs[r.Method+" "+r.URL.Path]++
		u.mu.Unlock()
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u.Addr = ln.Addr().String()
	return u
}

// Take returns the requests counted so far ("HEAD /v2/x/manifests/y": 2)
// and starts counting again.
func (u *Unavailable) Take() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.reqs
	u.reqs = map[string]int{}
	return m
}
