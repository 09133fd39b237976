// Package archive unpacks OCI/Docker image layers (tar streams) into a
// directory, safely against hostile layers.
//
// # Use
//
// Apply streams an uncompressed tar into a directory and returns the diffID
// (sha256 of the tar bytes, computed while reading) and counts. ApplyVerified
// also decompresses (see package fsstore/compression) and fails with
// errdefs.ErrDataLoss when the diffID differs from the expected one.
//
// Two whiteout modes exist. WhiteoutOverlay (the default) writes an overlayfs
// upper/diff directory: ".wh.NAME" becomes a 0:0 character device NAME and
// ".wh..wh..opq" sets trusted.overlay.opaque=y on its directory. WhiteoutRemove
// is for applying onto a copy of the parent snapshot: ".wh.NAME" deletes NAME
// and ".wh..wh..opq" deletes the directory's pre-existing children. As the OCI
// spec requires, a whiteout applies only to lower layers: it never hides an
// entry of its own layer, whether before or after it in the tar. In overlay
// mode a directory of the layer is made opaque when a whiteout names it or
// when it replaces a whiteout (or any other non-directory) of the same layer,
// so only the layer's own content of it shows. In remove mode the
// pre-existing content is deleted but the entries the layer created, and the
// directories holding them, stay.
//
// On error the directory is left half-written: the caller must discard it
// (os.RemoveAll is safe: it does not follow symlinks). Nothing is fsynced
// unless ApplyOptions.Sync is set, which calls syncfs once at the end.
//
// # Security model
//
// The layer is untrusted; the process applying it runs as root. The promise
// is: no entry can create, modify, link to or remove anything outside root,
// whatever the layer contains. How:
//
//   - Names are checked lexically before any system call: NUL bytes, ".."
//     components, names over 4096 bytes and components over 255 bytes refuse
//     the whole layer (error wrapping errdefs.ErrInvalidArgument naming the
//     entry). A leading "/" is stripped, so absolute names are confined to
//     root, as GNU tar and Docker do.
//   - Every directory is reached by walking from an fd of root, one component
//     at a time, with openat(O_NOFOLLOW|O_DIRECTORY). A symlink met on the way
//     is resolved by this package, not by the kernel, with chroot semantics:
//     an absolute target restarts at root, ".." at root stays at root, and
//     more than 40 links fail with ELOOP. So "a -> /etc" followed by
//     "a/passwd" writes root/etc/passwd, never /etc/passwd. This is what
//     Docker's chroot-based unpacker does; it works on any kernel (no
//     openat2 needed) and never follows /proc magic links.
//   - The last component is never followed: entries are created with
//     O_CREAT|O_EXCL|O_NOFOLLOW, mknodat, symlinkat and linkat without
//     AT_SYMLINK_FOLLOW, after removing whatever was there. Existing files are
//     never opened for writing, so content cannot be written through a
//     symlink or into an inode shared with another snapshot by a hardlink.
//     Metadata goes through the new file's fd or *at calls with
//     AT_SYMLINK_NOFOLLOW.
//   - A symlink's target is stored verbatim: it may point anywhere because
//     nothing is ever written through it.
//   - Hardlink targets follow the same name rules and the same confined
//     resolution; the target must already exist inside root and must not be
//     a directory (or, in overlay mode, a whiteout device).
//   - Extended attributes: trusted.overlay.* and user.overlay.* refuse the
//     layer (they would change how overlayfs reads the upper directory);
//     user.*, security.capability and POSIX ACLs are kept; every other
//     security.*, trusted.* and system.* attribute is dropped.
//   - Ownership and modes (including setuid, setgid and sticky) are applied
//     as stored; capabilities are set after chown/chmod so they survive.
//     Device numbers must fit the kernel's 12-bit major / 20-bit minor.
//   - GNU sparse entries are refused (errdefs.ErrNotImplemented): archive/tar
//     would expand a tiny sparse map into terabytes of zeros. No Go-based
//     image builder (Docker, BuildKit, ...) writes them.
//   - Limits: ApplyOptions.MaxSize bounds the uncompressed bytes,
//     MaxEntries the number of entries, and MinFree keeps that much space
//     free on root's filesystem (checked with statfs every MinFreeInterval
//     bytes written), so a decompression bomb stops before the disk is
//     full. Each fails with a *LimitError (errdefs.ErrResourceExhausted).
//   - A stream that ends early, including a tar without its end-of-archive
//     marker, returns an error wrapping io.ErrUnexpectedEOF and
//     errdefs.ErrDataLoss; it never hangs.
//
// # Memory
//
// The tar is streamed; one 32 KiB copy buffer is allocated per Apply. The only
// structures that grow with the layer are the pending directory mtimes
// (flushed every 8192 directories) and, in WhiteoutRemove mode only, the set
// of paths created by the layer (bounded by MaxEntries).
package archive
