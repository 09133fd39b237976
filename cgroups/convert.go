package cgroups

import (
	"strconv"

	"github.com/edged/edged/edged/errdefs"
)

// SharesToWeight converts v1 cpu.shares (2..262144) to v2 cpu.weight
// (1..10000) with the linear formula of runc before 1.3.2 and crun before
// 1.23 (1024, the v1 default, gives 39); 0 stays 0 (unset). Newer runc and
// crun use a quadratic formula on log2(shares) that maps 1024 to 100, the
// v2 default: a cgroup edged updates can get a different weight from the
// one such a runc created it with.
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// BlkioWeightToIOWeight converts a v1 blkio weight (10..1000) to a v2
// io.weight (1..10000); 0 stays 0 (unset).
func BlkioWeightToIOWeight(w uint64) uint64 {
	if w == 0 {
		return 0
	}
	w = min(max(w, 10), 1000)
	return 1 + (w-10)*9999/990
}

// SwapMax converts the runtime-spec swap value (memory+swap) into the v2
// memory.swap.max value (swap only) given the memory limit. It returns
// set=false when nothing is to be written, and -1 for "max".
func SwapMax(swap, limit int64) (value int64, set bool, err error) {
	switch {
	case swap == 0 && limit == -1:
		// Unlimited memory without a swap setting: unlimited swap too.
		return -1, true, nil
	case swap == 0:
		return 0, false, nil
	case swap == -1:
		return -1, true, nil
	case swap < -1:
		return 0, false, errdefs.InvalidArgument("memory.swap", "negative value %d", swap)
	case limit == 0 || limit == -1:
		return 0, false, errdefs.InvalidArgument("memory.swap", "a swap limit (%d) needs a memory limit", swap)
	case limit < -1:
		return 0, false, errdefs.InvalidArgument("memory.limit", "negative value %d", limit)
	case swap < limit:
		return 0, false, errdefs.InvalidArgument("memory.swap", "memory+swap limit %d is below the memory limit %d", swap, limit)
	}
	return swap - limit, true, nil
}

// limitString formats a limit where -1 means "max".
func limitString(v int64) string {
	if v == -1 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// checkLimit validates a memory value where -1 means unlimited.
func checkLimit(field string, v int64) error {
	if v < -1 {
		return errdefs.InvalidArgument(field, "negative value %d", v)
	}
	return nil
}
