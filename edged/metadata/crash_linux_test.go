package metadata

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "EDGED_METADATA_CRASH_CHILD"

// crashSpec is the spec written for transaction i: its content depends on
// i so that a torn or mixed-up row would be noticed.
func crashSpec(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("spec-%d;", i)), 300)
}

// crashChild runs in the re-executed test binary: it writes transactions
// until it is killed. Transaction i creates container c<i> and image
// example.com/img:<i>; when i is a multiple of 5 it also deletes container
// c<i-5> and image <i-5>. It prints "ok <i>" after each commit.
func crashChild(path string, start int) {
	ctx := context.Background()
	db, err := Open(ctx, path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := start; ; i++ {
		err := db.Update(ctx, func(tx *Tx) error {
			id := "c" + strconv.Itoa(i)
			if _, err := tx.CreateContainer(ctx, "crash", Container{
				ID: id, Image: "example.com/img:" + strconv.Itoa(i), Labels: map[string]string{"seq": strconv.Itoa(i)},
				Runtime: RuntimeInfo{Name: "io.containerd.runc.v2"}, Spec: crashSpec(i), SpecType: "t",
			}); err != nil {
				return err
			}
			im := testImage("example.com/img:" + strconv.Itoa(i))
			if _, err := tx.CreateImage(ctx, "crash", im); err != nil {
				return err
			}
			if i%5 == 0 && i >= 5 {
				if err := tx.DeleteContainer(ctx, "crash", "c"+strconv.Itoa(i-5)); err != nil {
					return err
				}
				return tx.DeleteImage(ctx, "crash", "example.com/img:"+strconv.Itoa(i-5))
			}
			return nil
		})
		if err != nil {
			fmt.Println("update:", err)
			os.Exit(2)
		}
		fmt.Fprintf(out, "ok %d\n", i)
		out.Flush()
	}
}

// TestCrashDuringWrites kills (SIGKILL) a process in the middle of a
// stream of write transactions, several times, and checks after each kill
// that the database opens, passes PRAGMA integrity_check, holds every
// transaction the child reported committed, and holds each transaction
// completely or not at all. (A process kill leaves the WAL in the kernel's
// page cache; losing commits on power loss with synchronous=NORMAL cannot
// be caused from a test and is SQLite's documented behaviour.)
func TestCrashDuringWrites(t *testing.T) {
	if p := os.Getenv(crashEnv); p != "" {
		start, _ := strconv.Atoi(os.Getenv(crashEnv + "_START"))
		crashChild(p, start)
		return
	}
	if testing.Short() {
		t.Skip("crash test re-executes the test binary; skipped in -short mode")
	}
	path := filepath.Join(t.TempDir(), FileName)
	next := 0
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringWrites$")
		cmd.Env = append(os.Environ(), crashEnv+"="+path, crashEnv+"_START="+strconv.Itoa(next))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a varying number of commits, while it keeps writing.
		want := 100 + 70*round
		sc := bufio.NewScanner(stdout)
		lastOK := -1
		seen := 0
		deadline := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
		for sc.Scan() {
			line := sc.Text()
			n, ok := strings.CutPrefix(line, "ok ")
			if !ok {
				t.Fatalf("child: %s", line)
			}
			lastOK, _ = strconv.Atoi(n)
			if seen++; seen == want {
				// Land the kill anywhere in the next transactions.
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		deadline.Stop()
		// Drain what the child printed before it died.
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
				lastOK, _ = strconv.Atoi(n)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("child did not die by SIGKILL: %v", err)
		}
		if seen < want {
			t.Fatalf("child stopped after %d commits", seen)
		}
		if _, err := os.Stat(path + "-wal"); err != nil {
			t.Fatalf("no WAL left by the killed process: %v", err)
		}
		next = checkCrashDB(t, path, lastOK) + 1
	}
}

// checkCrashDB verifies the database after a kill and returns the highest
// committed transaction.
func checkCrashDB(t *testing.T, path string, lastOK int) int {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer db.Close()
	var ok string
	if err := db.SQL().QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	var fk int
	if err := db.SQL().QueryRow(`SELECT count(*) FROM pragma_foreign_key_check`).Scan(&fk); err != nil || fk != 0 {
		t.Fatalf("foreign_key_check: %d violations, %v", fk, err)
	}
	present := map[int]Container{}
	images := map[int]bool{}
	if err := db.View(ctx, func(tx *Tx) error {
		cs, err := tx.ListContainers(ctx, "crash")
		if err != nil {
			return err
		}
		for _, c := range cs {
			i, err := strconv.Atoi(strings.TrimPrefix(c.ID, "c"))
			if err != nil {
				return err
			}
			present[i] = c
		}
		ims, err := tx.ListImages(ctx, "crash")
		if err != nil {
			return err
		}
		for _, im := range ims {
			i, _ := strconv.Atoi(strings.TrimPrefix(im.Name, "example.com/img:"))
			images[i] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	last := -1
	for i := range present {
		last = max(last, i)
	}
	if last < lastOK {
		t.Fatalf("transaction %d was reported committed but the newest in the database is %d", lastOK, last)
	}
	if last > lastOK+1 {
		t.Fatalf("database has transaction %d, child reported only up to %d", last, lastOK)
	}
	for i := 0; i <= last; i++ {
		deleted := i%5 == 0 && i+5 <= last
		c, has := present[i]
		if has == deleted {
			t.Fatalf("container c%d present=%v, want %v (newest transaction %d)", i, has, !deleted, last)
		}
		if images[i] != has {
			t.Fatalf("transaction %d half applied: container present=%v, image present=%v", i, has, images[i])
		}
		if has && (!bytes.Equal(c.Spec, crashSpec(i)) || c.Labels["seq"] != strconv.Itoa(i) || c.Image != "example.com/img:"+strconv.Itoa(i)) {
			t.Fatalf("container c%d incomplete or mixed up: labels %v image %q spec %d bytes", i, c.Labels, c.Image, len(c.Spec))
		}
	}
	t.Logf("killed after commit %d; database holds transactions up to %d, intact", lastOK, last)
	return last
}
