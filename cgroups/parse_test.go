package cgroups

import (
	"errors"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
)

func TestParsePSI(t *testing.T) {
	var p Pressure
	ok := parsePSI([]byte("some avg10=1.50 avg60=0.07 avg300=12.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n"), &p)
	want := Pressure{Some: PSIData{1.5, 0.07, 12, 123456}, Full: PSIData{Total: 42}}
	if !ok || p.Some.Total != want.Some.Total || p.Full.Total != 42 ||
		!near(p.Some.Avg10, 1.5) || !near(p.Some.Avg60, 0.07) || !near(p.Some.Avg300, 12) {
		t.Fatalf("got %+v, %v; want %+v", p, ok, want)
	}
	if parsePSI([]byte("garbage\n"), &p) {
		t.Fatal("garbage parsed as PSI")
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestParseIOStat(t *testing.T) {
	io := []IOStats{{Major: 99}} // reused backing array, reset by the caller
	io = io[:0]
	parseIOStatV2([]byte("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=5 dios=6 unknown=7\n7:0 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\nbad line\n"), &io)
	if len(io) != 2 || io[0] != (IOStats{254, 0, 4096, 8192, 1, 2, 5, 6}) || io[1] != (IOStats{7, 0, 1, 0, 1, 0, 0, 0}) {
		t.Fatalf("got %+v", io)
	}
	var v1 []IOStats
	parseBlkioV1([]byte("8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n8:0 Discard 7\n8:0 Total 300\nTotal 300\n"), &v1, false)
	parseBlkioV1([]byte("8:0 Read 1\n8:0 Write 2\n8:0 Discard 3\nTotal 3\n"), &v1, true)
	if len(v1) != 1 || v1[0] != (IOStats{8, 0, 100, 200, 1, 2, 7, 3}) {
		t.Fatalf("got %+v", v1)
	}
}

func TestParseNumbers(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "42": 42, "max": Unlimited, "18446744073709551615": 1<<64 - 1} {
		if v, ok := parseUintOrMax([]byte(in)); !ok || v != want {
			t.Errorf("%q: %d %v", in, v, ok)
		}
	}
	for _, in := range []string{"", "-1", "1x", "18446744073709551616", "ma"} {
		if _, ok := parseUintOrMax([]byte(in)); ok {
			t.Errorf("%q parsed", in)
		}
	}
	if v, ok := parseFixed([]byte("3.25")); !ok || !near(v, 3.25) {
		t.Errorf("3.25: %v", v)
	}
	if _, ok := parseFixed([]byte("3.2x")); ok {
		t.Error("3.2x parsed")
	}
	var keys []string
	eachKV([]byte("anon 1\nfile 2\nnot-a-number x\n\nlast 3"), func(k []byte, v uint64) { keys = append(keys, string(k)) })
	if strings.Join(keys, ",") != "anon,file,last" {
		t.Errorf("keys %v", keys)
	}
}

func TestParseProcCgroup(t *testing.T) {
	u, v1, err := parseProcCgroup([]byte("12:cpu,cpuacct:/a/b\n4:memory:/m (deleted)\n1:name=systemd:/sys\n0::/unified/x\n"))
	if err != nil || u != "/unified/x" || v1["cpu"] != "/a/b" || v1["cpuacct"] != "/a/b" || v1["memory"] != "/m" || len(v1) != 3 {
		t.Fatalf("%q %v %v", u, v1, err)
	}
	for in, msg := range map[string]string{"garbage\n": "malformed", "0::relative\n": "not absolute", "3:memory:/a/../..\n": "not clean"} {
		_, _, err := parseProcCgroup([]byte(in))
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want %q", in, err, msg)
		}
	}
	_, _, err = parseProcCgroup([]byte("0::relative\n"))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("kind: %v", err)
	}
}
