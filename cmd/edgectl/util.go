package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func nowNanos() int64 { return time.Now().UnixNano() }

// parseNumericUser parses uid[:gid] for exec (names need the image).
func parseNumericUser(s string) (specs.User, error) {
	us, gs, hasG := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return specs.User{}, fmt.Errorf("--user %q: exec takes a numeric uid[:gid]: %w", s, errUsage)
	}
	u := specs.User{UID: uint32(uid), GID: uint32(uid)}
	if hasG {
		gid, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return specs.User{}, fmt.Errorf("--user %q: exec takes a numeric uid[:gid]: %w", s, errUsage)
		}
		u.GID = uint32(gid)
	}
	return u, nil
}
