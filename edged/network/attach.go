package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/internal/atomicfile"
	"github.com/edged/edged/netns"
	"github.com/edged/edged/netns/cni"
)

// An attachment is a namespace of its own, bind mounted at
// <StateDir>/netns/<CNIID> and attached to the bridge network as CNI
// container CNIID. Its CNIID is random, so that an attachment being
// released in the background never collides with a new one of the same
// container.
//
// Spares are attachments made ahead of time (Config.Spares) so that a
// bridged container without published ports gets its network without
// waiting for the CNI plugins: <StateDir>/spares/<CNIID>.json records each.
// Releasing (CNI DEL and removing the namespace) happens in the background
// after a container's record is gone; whatever a crash leaves is found by
// Cleanup: every namespace file no record names is released.

// backgroundTimeout bounds each plugin run of the background work
// (releases, making spares), which has no caller's context: a hung plugin
// must not hold Close, Cleanup or the spares forever.
const backgroundTimeout = time.Minute

// backgroundDelay is how long the background work a container's Setup or
// Teardown starts (making the spare it took again, releasing its
// attachment) waits before it runs: the plugins it runs (bridge,
// host-local, firewall and portmap, with their iptables calls) would
// otherwise compete for the CPUs with the container's own start, or the
// rest of its removal. Measured on a 2-core host (median of 2 x 40 runs,
// each from an idle machine): a bridged `run --rm` took 9.9 ms more than
// a host one with the work at once, 5 ms with it 150 ms later; make bench
// with this 100 ms: bridge ÷ host 1.03 (1.20-1.25 before). Close and
// Cleanup (at start-up, where nothing starts meanwhile) do not wait for
// it.
const backgroundDelay = 100 * time.Millisecond

// settle waits backgroundDelay (n.bgDelay), or until waitBackground
// (Close, Cleanup) wants the work done.
func (n *Network) settle() {
	n.mu.Lock()
	hurry := n.hurry
	n.mu.Unlock()
	t := time.NewTimer(n.bgDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-hurry:
	}
}

// spare is the record of a spare attachment.
type spare struct {
	CNIID  string      `json:"cni_id"`
	Netns  string      `json:"netns"`
	Result *cni.Result `json:"result,omitempty"` // nil until attached
}

func newCNIID() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "edged-" + hex.EncodeToString(b)
}

// attach creates the namespace file path and attaches it as cniID.
// On failure nothing is left.
func (n *Network) attach(ctx context.Context, cniID, path string, ports []cni.PortMapping) (*cni.Result, error) {
	cn, err := n.cniNetwork(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.prepareMountDir(); err != nil {
		return nil, err
	}
	if _, err := netns.CreateAt(ctx, path); err != nil {
		return nil, err
	}
	res, err := cn.Setup(ctx, cniID, path, cni.Options{PortMappings: ports})
	if err != nil {
		// No plugin runs here (cni.Setup undid its ADD): unmounting and
		// removing the file cannot hang.
		if derr := netns.DeleteAt(context.WithoutCancel(ctx), path); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return res, nil
}

// release detaches cniID and removes its namespace file. The file is kept
// when DEL fails, so that Cleanup retries.
func (n *Network) release(ctx context.Context, cniID, path string, ports []cni.PortMapping) error {
	cn, err := n.cniNetwork(ctx)
	if err != nil {
		return err
	}
	if err := cn.Teardown(ctx, cniID, path, cni.Options{PortMappings: ports}); err != nil {
		return err
	}
	if err := netns.DeleteAt(ctx, path); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// releaseAsync releases in the background, backgroundDelay later; Close
// and Cleanup wait for it, without the delay.
func (n *Network) releaseAsync(cniID, path string, ports []cni.PortMapping) {
	// Added under mu, as refill does: a release asked for while Close
	// waits for the background work (a shim found dead at that moment)
	// must not start more of it. Its record stays, and the next start's
	// Cleanup releases it.
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.cfg.Log.Warn("network: closing; a container's network is released at edged's next start", "cni_id", cniID)
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		n.settle()
		ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
		defer cancel()
		if err := n.release(ctx, cniID, path, ports); err != nil {
			n.cfg.Log.Warn("network: releasing a container's network failed; edged retries at its next start", "cni_id", cniID, "error", err)
		}
	}()
}

func (n *Network) spareFiles() []string {
	entries, _ := os.ReadDir(n.sparesDir)
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			out = append(out, filepath.Join(n.sparesDir, e.Name()))
		}
	}
	return out
}

func readSpare(p string) (*spare, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var sp spare
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("spare %s: %v: %w", p, err, errdefs.ErrDataLoss)
	}
	return &sp, nil
}

func (n *Network) writeSpare(sp *spare) error {
	if err := os.MkdirAll(n.sparesDir, 0o700); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(n.sparesDir, sp.CNIID+".json"), b, 0o600)
}

// claimSpare hands a ready spare to st (writing st's record before the
// spare's record goes) and starts refilling. ok is false when there is none.
func (n *Network) claimSpare(st *state) (*cni.Result, bool) {
	n.spareMu.Lock()
	defer n.spareMu.Unlock()
	for _, p := range n.spareFiles() {
		sp, err := readSpare(p)
		if err != nil || sp.Result == nil {
			continue // being made
		}
		st.CNIID, st.Netns, st.Result = sp.CNIID, sp.Netns, sp.Result
		if err := n.writeState(st); err != nil {
			st.CNIID, st.Netns, st.Result = "", "", nil
			return nil, false
		}
		if err := os.Remove(p); err != nil {
			n.cfg.Log.Warn("network: remove spare record", "error", err)
		}
		return sp.Result, true
	}
	return nil, false
}

// refill makes spares in the background until there are Config.Spares,
// from backgroundDelay on.
func (n *Network) refill() {
	n.mu.Lock()
	if n.refilling || n.closed || n.cfg.Spares <= 0 {
		n.mu.Unlock()
		return
	}
	n.refilling = true
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		defer func() {
			n.mu.Lock()
			n.refilling = false
			n.mu.Unlock()
		}()
		n.settle()
		for {
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			n.spareMu.Lock()
			have := len(n.spareFiles())
			n.spareMu.Unlock()
			if closed || have >= n.cfg.Spares {
				return
			}
			sp := &spare{CNIID: newCNIID()}
			sp.Netns = filepath.Join(n.netnsDir, sp.CNIID)
			if err := n.writeSpare(sp); err != nil {
				n.cfg.Log.Warn("network: making a spare failed", "error", err)
				return
			}
			if !n.makeSpare(sp) {
				return
			}
		}
	}()
}

// makeSpare attaches the spare sp, whose record (without result) exists,
// and records its result. On failure it undoes what it did, logs, and
// returns false.
func (n *Network) makeSpare(sp *spare) bool {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	res, err := n.attach(ctx, sp.CNIID, sp.Netns, nil)
	if err == nil {
		sp.Result = res
		err = n.writeSpare(sp)
	}
	if err == nil {
		return true
	}
	n.cfg.Log.Warn("network: making a spare failed", "error", err)
	if res != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), backgroundTimeout)
		defer rcancel()
		_ = n.release(rctx, sp.CNIID, sp.Netns, nil)
	}
	os.Remove(filepath.Join(n.sparesDir, sp.CNIID+".json"))
	return false
}

// waitBackground waits for the background work started so far, or until
// ctx is done (a plugin may hang for up to backgroundTimeout).
func (n *Network) waitBackground(ctx context.Context) error {
	// The work started so far runs without its delay (settle).
	n.mu.Lock()
	close(n.hurry)
	n.hurry = make(chan struct{})
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("network: background releases still running: %w", ctx.Err())
	}
}

// releaseSpares releases every spare whose attachment no container record
// names (referenced), and removes all spare records.
func (n *Network) releaseSpares(ctx context.Context, referenced map[string]bool) error {
	n.spareMu.Lock()
	defer n.spareMu.Unlock()
	var errs []error
	for _, p := range n.spareFiles() {
		sp, err := readSpare(p)
		if err == nil && !referenced[sp.CNIID] && sp.Netns != "" {
			if err := n.release(ctx, sp.CNIID, sp.Netns, nil); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweep releases every namespace file in the netns directory that no
// record names: left by a crash between making and recording, or by a
// release that failed.
func (n *Network) sweep(ctx context.Context, referenced map[string]bool) error {
	entries, err := os.ReadDir(n.netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if referenced[e.Name()] || !strings.HasPrefix(e.Name(), "edged-") {
			continue
		}
		n.cfg.Log.Info("network: releasing an attachment no container owns", "cni_id", e.Name())
		if err := n.release(ctx, e.Name(), filepath.Join(n.netnsDir, e.Name()), nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops making spares, waits for background releases (until ctx is
// done: an error then, and the spares are left to the next Cleanup) and
// releases the spares. The network must not be used afterwards.
func (n *Network) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	if err := n.waitBackground(ctx); err != nil {
		return err
	}
	if n.loadedCNI() == nil {
		return nil // bridge never used
	}
	return n.releaseSpares(ctx, n.referenced())
}

// Wait waits for the background work (releases, spares) started so far.
func (n *Network) Wait() { n.wg.Wait() }

// referenced returns the CNI IDs named by container records.
func (n *Network) referenced() map[string]bool {
	ref := map[string]bool{}
	nss, _ := os.ReadDir(n.containers)
	for _, nsEnt := range nss {
		ids, _ := os.ReadDir(filepath.Join(n.containers, nsEnt.Name()))
		for _, idEnt := range ids {
			if st, err := n.readState(nsEnt.Name(), idEnt.Name()); err == nil && st.CNIID != "" {
				ref[st.CNIID] = true
			}
		}
	}
	return ref
}
