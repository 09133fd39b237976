package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edged/edged/edged/errdefs"
)

// MaxIDFileSize bounds how much of an image's /etc/passwd or /etc/group is
// read while resolving a user. A lookup that needs to read further fails.
const MaxIDFileSize = 1 << 20

// maxIDLine bounds one line of /etc/passwd or /etc/group.
const maxIDLine = 64 << 10

// maxGroups is the kernel's NGROUPS_MAX.
const maxGroups = 65536

// errNoRootfs is returned by rootFS when Generate was given no rootfs.
var errNoRootfs = errors.New("no rootfs given")

// resolvedUser is the outcome of resolving a user specification.
type resolvedUser struct {
	user specs.User
	home string
}

// passwdEntry is the part of an /etc/passwd line edged uses.
type passwdEntry struct {
	name string
	uid  uint32
	gid  uint32
	home string
}

// resolveUser turns a user specification ("uid", "uid:gid", "name",
// "name:group", "uid:group", "name:gid") into numeric IDs, reading the
// image's /etc/passwd and /etc/group through r. field names the option or
// image field the specification came from, for error messages.
//
// Like runc, supplementary groups come from /etc/group membership only when
// the specification names no group and the user has a passwd entry.
// extraGIDs are always appended.
func resolveUser(r *rootFS, field, spec string, extraGIDs []uint32) (resolvedUser, error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := cutByte(spec, ':')
	if err := validUserToken(field, "user", userPart); err != nil {
		return resolvedUser{}, err
	}
	if hasGroup {
		if err := validUserToken(field, "group", groupPart); err != nil {
			return resolvedUser{}, err
		}
	}
	uid, uidNumeric, err := parseID(field, "uid", userPart)
	if err != nil {
		return resolvedUser{}, err
	}

	var pw passwdEntry
	pwFound := false
	_, err = r.scanLines("/etc/passwd", func(line []byte) bool {
		e, ok := parsePasswdLine(line)
		if !ok {
			return true
		}
		if (uidNumeric && e.uid == uid) || (!uidNumeric && e.name == userPart) {
			pw, pwFound = e, true
			return false
		}
		return true
	})
	switch {
	case err == nil:
	case errors.Is(err, errNoRootfs) && uidNumeric:
		// A numeric user needs no lookup.
	case errors.Is(err, errNoRootfs):
		return resolvedUser{}, errdefs.InvalidArgument(field, "user name %q cannot be resolved without a rootfs", userPart)
	default:
		return resolvedUser{}, fmt.Errorf("%s: resolving user %q: %w", field, spec, err)
	}
	if !uidNumeric && !pwFound {
		return resolvedUser{}, fmt.Errorf("%s: user %q not found in the image's /etc/passwd: %w", field, userPart, errdefs.ErrNotFound)
	}

	out := resolvedUser{user: specs.User{UID: uid}}
	if pwFound {
		out.user.UID = pw.uid
		out.user.GID = pw.gid
		out.home = pw.home
	}
	if out.home == "" {
		out.home = "/"
		if out.user.UID == 0 {
			out.home = "/root"
		}
	}

	if hasGroup {
		gid, gidNumeric, err := parseID(field, "gid", groupPart)
		if err != nil {
			return resolvedUser{}, err
		}
		if !gidNumeric {
			found := false
			_, err := r.scanLines("/etc/group", func(line []byte) bool {
				name, g, _, ok := parseGroupLine(line)
				if ok && string(name) == groupPart {
					gid, found = g, true
					return false
				}
				return true
			})
			switch {
			case errors.Is(err, errNoRootfs):
				return resolvedUser{}, errdefs.InvalidArgument(field, "group name %q cannot be resolved without a rootfs", groupPart)
			case err != nil:
				return resolvedUser{}, fmt.Errorf("%s: resolving group %q: %w", field, groupPart, err)
			case !found:
				return resolvedUser{}, fmt.Errorf("%s: group %q not found in the image's /etc/group: %w", field, groupPart, errdefs.ErrNotFound)
			}
		}
		out.user.GID = gid
	} else if pwFound {
		var sgids []uint32
		var tooMany bool
		_, err := r.scanLines("/etc/group", func(line []byte) bool {
			_, g, members, ok := parseGroupLine(line)
			if !ok || !hasMember(members, pw.name) {
				return true
			}
			if len(sgids) == maxGroups {
				tooMany = true
				return false
			}
			sgids = append(sgids, g)
			return true
		})
		if err != nil && !errors.Is(err, errNoRootfs) {
			return resolvedUser{}, fmt.Errorf("%s: supplementary groups of %q: %w", field, pw.name, err)
		}
		if tooMany {
			return resolvedUser{}, errdefs.InvalidArgument(field, "user %q is in more than %d groups", pw.name, maxGroups)
		}
		out.user.AdditionalGids = sgids
	}
	out.user.AdditionalGids = dedupe(append(out.user.AdditionalGids, extraGIDs...))
	if len(out.user.AdditionalGids) > maxGroups {
		return resolvedUser{}, errdefs.InvalidArgument(field, "more than %d supplementary groups", maxGroups)
	}
	return out, nil
}

// validUserToken checks one side of a user specification.
func validUserToken(field, what, s string) error {
	if s == "" {
		return errdefs.InvalidArgument(field, "empty %s in user specification", what)
	}
	if len(s) > 256 {
		return errdefs.InvalidArgument(field, "%s is %d bytes long, the maximum is 256", what, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == ':' || c == '/' || c == 0x7f {
			return errdefs.InvalidArgument(field, "%s %q contains a forbidden character %q", what, s, c)
		}
	}
	return nil
}

// parseID parses s as a numeric ID when it is all digits. numeric reports
// whether it was.
func parseID(field, what, s string) (id uint32, numeric bool, err error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false, nil
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 1<<32-1 {
		return 0, true, errdefs.InvalidArgument(field, "%s %s is out of range (0 to %d)", what, s, uint32(1<<32-2))
	}
	return uint32(v), true, nil
}

// parsePasswdLine parses "name:password:uid:gid:gecos:home:shell". Malformed
// lines are skipped, as libc does.
func parsePasswdLine(line []byte) (passwdEntry, bool) {
	if len(line) == 0 || line[0] == '#' {
		return passwdEntry{}, false
	}
	name, rest, _ := bytes.Cut(line, []byte{':'})
	_, rest, _ = bytes.Cut(rest, []byte{':'}) // password
	uidField, rest, _ := bytes.Cut(rest, []byte{':'})
	gidField, rest, _ := bytes.Cut(rest, []byte{':'})
	_, rest, _ = bytes.Cut(rest, []byte{':'}) // gecos
	home, _, _ := bytes.Cut(rest, []byte{':'})
	uid, ok1 := atou32(uidField)
	gid, ok2 := atou32(gidField)
	if len(name) == 0 || !ok1 || !ok2 {
		return passwdEntry{}, false
	}
	return passwdEntry{name: string(name), uid: uid, gid: gid, home: string(home)}, true
}

// parseGroupLine parses "name:password:gid:member,member". The returned
// slices alias line.
func parseGroupLine(line []byte) (name []byte, gid uint32, members []byte, ok bool) {
	if len(line) == 0 || line[0] == '#' {
		return nil, 0, nil, false
	}
	name, rest, _ := bytes.Cut(line, []byte{':'})
	_, rest, _ = bytes.Cut(rest, []byte{':'}) // password
	gidField, members, _ := bytes.Cut(rest, []byte{':'})
	gid, ok = atou32(gidField)
	if len(name) == 0 || !ok {
		return nil, 0, nil, false
	}
	return name, gid, members, true
}

// hasMember reports whether the comma separated list members holds name.
func hasMember(members []byte, name string) bool {
	for len(members) > 0 {
		var m []byte
		m, members, _ = bytes.Cut(members, []byte{','})
		if string(bytes.TrimSpace(m)) == name {
			return true
		}
	}
	return false
}

func atou32(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v >= 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}

// dedupe removes repeated IDs in place, keeping the first of each. It is
// linear, so a hostile /etc/group with many entries cannot make it slow.
func dedupe(ids []uint32) []uint32 {
	if len(ids) < 2 {
		return ids
	}
	out := ids[:0]
	if len(ids) <= 16 {
		for _, v := range ids {
			dup := false
			for _, w := range out {
				if w == v {
					dup = true
					break
				}
			}
			if !dup {
				out = append(out, v)
			}
		}
		return out
	}
	seen := make(map[uint32]struct{}, len(ids))
	for _, v := range ids {
		if _, ok := seen[v]; !ok {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

func cutByte(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// scanLines calls fn with each line of the file name inside the rootfs until
// fn returns false. A file that does not exist is not an error: exists is
// false. Reading more than MaxIDFileSize bytes, or a line longer than 64 KiB,
// fails with ErrInvalidArgument.
func (r *rootFS) scanLines(name string, fn func(line []byte) bool) (exists bool, err error) {
	f, err := r.open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	// Never read more than one byte past the limit; that byte tells a file
	// of exactly MaxIDFileSize bytes from a larger one.
	lr := &io.LimitedReader{R: f, N: MaxIDFileSize + 1}
	if r.scanBuf == nil {
		r.scanBuf = make([]byte, 4096)
	}
	sc := bufio.NewScanner(lr)
	sc.Buffer(r.scanBuf, maxIDLine)
	var consumed int64
	for sc.Scan() {
		line := sc.Bytes()
		if consumed += int64(len(line)); consumed > MaxIDFileSize {
			return true, errTooLarge(name) // this line reaches past the limit
		}
		consumed++ // the newline
		if !fn(line) {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return true, fmt.Errorf("image file %s has a line longer than %d bytes: %w", name, maxIDLine, errdefs.ErrInvalidArgument)
		}
		return true, fmt.Errorf("reading image file %s: %w", name, err)
	}
	if lr.N == 0 {
		return true, errTooLarge(name)
	}
	return true, nil
}

func errTooLarge(name string) error {
	return fmt.Errorf("image file %s is larger than %d bytes: %w", name, MaxIDFileSize, errdefs.ErrInvalidArgument)
}
