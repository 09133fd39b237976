package server

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/edged/config"
	"github.com/edged/edged/edged/errdefs"
)

// An --address in a shared directory such as /tmp must not change that
// directory: it once lost its sticky bit and world write (0711).
func TestListenUnixKeepsModeOfSharedStickyParent(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModePerm|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenUnix(filepath.Join(shared, "edged.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	after, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode() != before.Mode() {
		t.Errorf("listenUnix changed the mode of an existing shared directory: %v -> %v", before.Mode(), after.Mode())
	}
}

// The directories listenUnix creates get 0711 whatever the umask; the
// existing directory they hang from keeps its mode.
func TestListenUnixSetsModeOfCreatedDirsOnly(t *testing.T) {
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	addr := filepath.Join(base, "a", "b", "edged.sock")
	l, err := listenUnix(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for dir, want := range map[string]os.FileMode{
		base:                          os.ModeDir | 0o755,
		filepath.Join(base, "a"):      os.ModeDir | 0o711,
		filepath.Join(base, "a", "b"): os.ModeDir | 0o711,
	} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", dir, fi.Mode(), err, want)
		}
	}
}

// edged's dedicated socket directory (the default address's) is set to
// 0711 even when it exists already (edged creates it as its state
// directory first, under the umask).
func TestPrepareSocketDirSetsModeOfDedicatedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "edged")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := prepareSocketDir(dir, true); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode() != os.ModeDir|0o711 {
		t.Fatalf("dedicated directory mode %v, want 0711", fi.Mode())
	}
}

func TestDefaultSocketDirIsTheDefaultAddressDir(t *testing.T) {
	if want := filepath.Dir(config.Default().Address); defaultSocketDir != want {
		t.Fatalf("defaultSocketDir %q, want %q (the directory of the default address)", defaultSocketDir, want)
	}
}

// A directory others can write without the sticky bit lets them replace
// edged's socket with theirs: listenUnix refuses it and leaves it alone.
func TestListenUnixRefusesParentWritableByOthers(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o775} {
		dir := t.TempDir()
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{filepath.Join(dir, "edged.sock"), filepath.Join(dir, "sub", "edged.sock")} {
			l, err := listenUnix(addr, 0)
			if err == nil {
				l.Close()
				t.Fatalf("%v: %s accepted", mode, addr)
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "is not private") {
				t.Errorf("%v: %s: %v", mode, addr, err)
			}
			if _, err := os.Lstat(addr); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%v: %s created: %v", mode, addr, err)
			}
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != mode {
			t.Errorf("mode of %s changed to %v", dir, fi.Mode())
		}
	}
}

// envActivationChild makes the test binary run TestActivationChild: fd 3
// is then the socket the parent passed, as systemd passes it.
const envActivationChild = "EDGED_TEST_ACTIVATION_CHILD"

func TestActivationChild(t *testing.T) {
	if os.Getenv(envActivationChild) == "" {
		t.Skip("run by TestListenRefusesActivationSocketNotUnixStream")
	}
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	os.Setenv("LISTEN_FDS", "1")
	l, activated, err := Listen(filepath.Join(t.TempDir(), "unused.sock"), 0)
	if err != nil {
		t.Logf("RESULT refused: %v", err)
		return
	}
	defer l.Close()
	t.Logf("RESULT accepted: activated=%v network=%s", activated, l.Addr().Network())
}

// systemd can pass a unix datagram or seqpacket socket (ListenDatagram=,
// ListenSequentialPacket= in a wrong edged.socket), or a stream socket not
// listening. Listen refuses them at start-up; it once took them, and a
// datagram socket then failed every Accept after edged told systemd
// READY=1, a restart loop.
func TestListenRefusesActivationSocketNotUnixStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    int
		listen bool
		want   string
	}{
		{"datagram", syscall.SOCK_DGRAM, false, "RESULT refused: systemd passed fd 3 as a unixgram socket; edged needs a unix stream socket"},
		{"seqpacket", syscall.SOCK_SEQPACKET, true, "RESULT refused: systemd passed fd 3 as a unixpacket socket; edged needs a unix stream socket"},
		{"stream not listening", syscall.SOCK_STREAM, false, "RESULT refused: systemd passed fd 3 as a unix stream socket that is not listening; edged needs a listening unix stream socket"},
		{"stream", syscall.SOCK_STREAM, true, "RESULT accepted: activated=true network=unix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := syscall.Socket(syscall.AF_UNIX, tc.typ|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "activation-socket")
			defer f.Close()
			if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(t.TempDir(), "a.sock")}); err != nil {
				t.Fatal(err)
			}
			if tc.listen {
				if err := syscall.Listen(fd, 16); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestActivationChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), envActivationChild+"=1")
			cmd.ExtraFiles = []*os.File{f} // fd 3
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("want %q in:\n%s", tc.want, out)
			}
		})
	}
}

// A socket in edged's own state directory (not the default one), which
// edged created under a umask of 077, gets 0711 so that clients in the
// socket's group reach it; the same directory, not named as edged's own,
// keeps its mode.
func TestListenUnixSetsModeOfOwnStateDir(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(state, "edged.sock")
	l, err := listenUnix(addr, 0, state+"/")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o711 {
		t.Fatalf("own state directory: mode %v, want 0711", fi.Mode())
	}
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err = listenUnix(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o700 {
		t.Fatalf("a directory not named as edged's: mode %v, want 0700 kept", fi.Mode())
	}
}

// A parent directory owned by another user is refused with a message
// naming its owner.
func TestListenUnixRefusesParentOwnedByOther(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := listenUnix(filepath.Join(dir, "edged.sock"), 0)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "is not private (owned by uid 65534, who could replace edged's socket)") {
		t.Fatalf("parent owned by uid 65534: %v", err)
	}
}

// A socket path whose directory is a file is refused with a message
// saying so.
func TestListenUnixRefusesFileAsDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := listenUnix(filepath.Join(file, "edged.sock"), 0)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "socket directory "+file+" is not a directory") {
		t.Fatalf("socket under a file: %v", err)
	}
}

// A passed fd 3 that is not a socket (a wrong edged.socket, or a wrapper
// that left a file or a pipe there) is refused at start-up with a message
// naming the fd and what it is (it once read "file file+net LISTEN_FD_3:
// getsockopt: socket operation on non-socket"); so is a socket that
// cannot listen.
func TestListenRefusesActivationFdNotSocket(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "not-a-socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer udpFile.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		want string
	}{
		// A socket net.FileListener refuses: its error without the
		// "file file+net LISTEN_FD_3" of the *net.OpError.
		{"udp socket", udpFile, "RESULT refused: systemd activation: fd 3 passed by systemd is not a listening socket: invalid argument\n"},
		{"regular file", file, "RESULT refused: systemd activation: fd 3 passed by systemd is a regular file, not a socket; edged needs a listening unix stream socket\n"},
		{"pipe", pr, "RESULT refused: systemd activation: fd 3 passed by systemd is a pipe, not a socket; edged needs a listening unix stream socket\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestActivationChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), envActivationChild+"=1")
			cmd.ExtraFiles = []*os.File{tc.f} // fd 3
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("want %q in:\n%s", tc.want, out)
			}
		})
	}
}

// checkStreamListener reports a socket whose SO_TYPE or SO_ACCEPTCONN
// cannot be read. Through Listen this cannot happen for real: the listener
// comes from net.FileListener, which has just read SO_TYPE of the same
// socket, and Linux answers SO_ACCEPTCONN for every socket; what is left
// is a listener whose fd is closed, so the test closes a real one.
func TestCheckStreamListenerTypeUnreadable(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "closed.sock")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStreamListener(l); err != nil {
		t.Fatalf("open listener: %v", err)
	}
	l.Close()
	err = checkStreamListener(l)
	want := "unix socket whose type cannot be read: raw-control unix " + addr + ": use of closed network connection"
	if err == nil || err.Error() != want || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed listener: got %v, want %q wrapping net.ErrClosed", err, want)
	}
}

// Failures to stat, create or set the mode of the socket's directory name
// the directory and keep the system's error: a path through a file
// (ENOTDIR), and a read-only filesystem (EROFS) for mkdir and chmod (as
// root, permission bits would not stop either).
func TestListenUnixSocketDirFailures(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := listenUnix(filepath.Join(file, "sub", "edged.sock"), 0)
	if want := "check socket directory: stat " + file + "/sub: not a directory"; err == nil || err.Error() != want || !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("socket directory below a file: got %v, want %q (ENOTDIR)", err, want)
	}

	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	ro := t.TempDir()
	if err := syscall.Mount("tmpfs", ro, "tmpfs", syscall.MS_RDONLY, "mode=0755"); err != nil {
		t.Fatalf("mount read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })

	_, err = listenUnix(filepath.Join(ro, "sub", "edged.sock"), 0)
	if want := "create socket directory: mkdir " + ro + "/sub: read-only file system"; err == nil || err.Error() != want || !errors.Is(err, syscall.EROFS) {
		t.Errorf("socket directory to create on a read-only filesystem: got %v, want %q (EROFS)", err, want)
	}
	// ro is edged's own (state) directory: Listen sets its mode.
	_, err = listenUnix(filepath.Join(ro, "edged.sock"), 0, ro)
	if want := "set mode 0711 of socket directory: chmod " + ro + ": read-only file system"; err == nil || err.Error() != want || !errors.Is(err, syscall.EROFS) {
		t.Errorf("own socket directory on a read-only filesystem: got %v, want %q (EROFS)", err, want)
	}
}
