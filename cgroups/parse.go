package cgroups

import "math"

// Small parsers for cgroup files. They work on byte slices in place and do
// not allocate; unknown keys are skipped by the callers.

// nextLine splits b at the first '\n'.
func nextLine(b []byte) (line, rest []byte) {
	for i, c := range b {
		if c == '\n' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// nextField returns the first space-separated field of b and the rest.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	b = b[i:]
	for i = 0; i < len(b); i++ {
		if b[i] == ' ' || b[i] == '\t' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\n' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseUint parses a decimal unsigned number; false on anything else or on
// overflow.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// parseUintOrMax is parseUint that also accepts "max" as Unlimited.
func parseUintOrMax(b []byte) (uint64, bool) {
	if string(b) == "max" {
		return Unlimited, true
	}
	return parseUint(b)
}

// parseFixed parses a PSI average such as "12.34" into a float64 without
// going through strconv (which may allocate on error).
func parseFixed(b []byte) (float64, bool) {
	var ip, fp []byte = b, nil
	for i, c := range b {
		if c == '.' {
			ip, fp = b[:i], b[i+1:]
			break
		}
	}
	iv, ok := parseUint(ip)
	if !ok {
		return 0, false
	}
	v := float64(iv)
	scale := 1.0
	for _, c := range fp {
		if c < '0' || c > '9' {
			return 0, false
		}
		scale /= 10
		v += float64(c-'0') * scale
	}
	return v, true
}

// eachKV calls fn for every "key value" line of b. Lines without a numeric
// value are skipped.
func eachKV(b []byte, fn func(key []byte, val uint64)) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		k, rest := nextField(line)
		v, _ := nextField(rest)
		if n, ok := parseUint(v); ok {
			fn(k, n)
		}
	}
}

// parseDevice parses "MAJ:MIN".
func parseDevice(b []byte) (major, minor uint64, ok bool) {
	for i, c := range b {
		if c == ':' {
			ma, ok1 := parseUint(b[:i])
			mi, ok2 := parseUint(b[i+1:])
			return ma, mi, ok1 && ok2
		}
	}
	return 0, 0, false
}

// parsePSI parses a *.pressure file into p.
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
func parsePSI(b []byte, p *Pressure) bool {
	ok := false
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		kind, rest := nextField(line)
		var d *PSIData
		switch string(kind) {
		case "some":
			d = &p.Some
		case "full":
			d = &p.Full
		default:
			continue
		}
		for len(rest) > 0 {
			var f []byte
			f, rest = nextField(rest)
			k, v := splitEq(f)
			switch string(k) {
			case "avg10":
				d.Avg10, _ = parseFixed(v)
			case "avg60":
				d.Avg60, _ = parseFixed(v)
			case "avg300":
				d.Avg300, _ = parseFixed(v)
			case "total":
				d.Total, _ = parseUint(v)
			}
		}
		ok = true
	}
	return ok
}

// splitEq splits "key=value".
func splitEq(b []byte) (k, v []byte) {
	for i, c := range b {
		if c == '=' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// ioEntry returns the entry for the device in *io, appending one if needed.
func ioEntry(io *[]IOStats, major, minor uint64) *IOStats {
	s := *io
	for i := range s {
		if s[i].Major == major && s[i].Minor == minor {
			return &s[i]
		}
	}
	s = append(s, IOStats{Major: major, Minor: minor})
	*io = s
	return &s[len(s)-1]
}

// parseIOStatV2 parses io.stat:
//
//	8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0
func parseIOStatV2(b []byte, io *[]IOStats) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		dev, rest := nextField(line)
		ma, mi, ok := parseDevice(dev)
		if !ok {
			continue
		}
		e := ioEntry(io, ma, mi)
		for len(rest) > 0 {
			var f []byte
			f, rest = nextField(rest)
			k, v := splitEq(f)
			n, ok := parseUint(v)
			if !ok {
				continue
			}
			switch string(k) {
			case "rbytes":
				e.ReadBytes = n
			case "wbytes":
				e.WriteBytes = n
			case "rios":
				e.ReadIOs = n
			case "wios":
				e.WriteIOs = n
			case "dbytes":
				e.DiscardBytes = n
			case "dios":
				e.DiscardIOs = n
			}
		}
	}
}

// parseBlkioV1 parses blkio.throttle.io_service_bytes or io_serviced:
//
//	8:0 Read 4096
//	8:0 Write 0
//	Total 4096
//
// ios selects whether the values are operation counts or bytes.
func parseBlkioV1(b []byte, io *[]IOStats, ios bool) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		dev, rest := nextField(line)
		ma, mi, ok := parseDevice(dev)
		if !ok {
			continue
		}
		op, rest := nextField(rest)
		v, _ := nextField(rest)
		n, ok := parseUint(v)
		if !ok {
			continue
		}
		var dst *uint64
		e := ioEntry(io, ma, mi)
		switch string(op) {
		case "Read":
			dst = pick(ios, &e.ReadIOs, &e.ReadBytes)
		case "Write":
			dst = pick(ios, &e.WriteIOs, &e.WriteBytes)
		case "Discard":
			dst = pick(ios, &e.DiscardIOs, &e.DiscardBytes)
		default:
			continue
		}
		*dst = n
	}
}

func pick(first bool, a, b *uint64) *uint64 {
	if first {
		return a
	}
	return b
}
