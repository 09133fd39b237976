// Package pageout gives the pages of the running executable back to the
// system while a daemon is idle.
//
// A Go daemon's code is mapped from its binary. Linux maps file pages in
// 64 KiB "fault-around" blocks and reads ahead around every miss, so a
// daemon that has run its start-up code and served a few kinds of request
// keeps almost its whole binary resident (edged: ≈14 MiB of its 17 MiB)
// although the pages it actually executes while serving requests are a
// fraction of that. Under memory pressure the kernel reclaims those clean
// pages eventually; on a device with 256 MB of RAM it is better to return
// them at once, the way Android compacts idle apps with MADV_PAGEOUT.
//
// Executable asks the kernel to reclaim the executable's read-only mappings
// (MADV_PAGEOUT: the pages leave the page cache too, so the memory is really
// free, not just unmapped) and marks them MADV_RANDOM, so that code which
// runs again is read back one 4 KiB page at a time instead of in read-ahead
// windows. The price is a few hundred page reads on the first request after
// an idle period.
package pageout
