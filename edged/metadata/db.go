// Package metadata stores edged's metadata (namespaces, containers, images,
// content references and leases) in one embedded SQLite database file,
// <root>/meta.db, through the pure Go driver modernc.org/sqlite.
//
// All access goes through transactions: [DB.Update] runs one write
// transaction (BEGIN IMMEDIATE on the single writer connection) and
// [DB.View] one read transaction (on a reader connection, which in WAL mode
// reads a consistent snapshot without blocking the writer). Every multi-row
// change made inside one Update commits or rolls back as a whole.
//
// Durability: the database runs in WAL mode with synchronous=NORMAL by
// default (see [Options.Synchronous]): a crash or power loss may lose the
// last commits, but never leaves half of one, and the file is never
// corrupted.
package metadata

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edged/edged/edged/errdefs"
	"modernc.org/sqlite"
)

// FileName is the name of the database file under the daemon's root dir.
const FileName = "meta.db"

// PageSize is the SQLite page size used when a database file is created (it
// cannot change afterwards without a VACUUM). A commit in WAL mode writes
// every page it changed in full, so the page size is the unit of flash wear
// per commit. Bytes written to disk (/proc/self/io write_bytes: WAL plus
// checkpoints) and CPU time per container create+delete (two transactions,
// 3.3 KiB spec), from the benchmarks in bench_linux_test.go:
//
//	page size                               1024     2048     4096
//	steady (BenchmarkContainerCreateDelete) 9.6 KB   16.8 KB  16.5 KB
//	10,000 live (BenchmarkCreateDelete10k)  15.0 KB  22.6 KB  46.9 KB
//	CPU µs per pair, steady / 10,000        99/113   91/108   86/183
//
// Only 1 KiB pages stay under the budget of 16 KiB per create+delete;
// the extra overflow pages they need for a spec cost little CPU.
const PageSize = 1024

// Default tuning. See Options.
const (
	defaultCacheSizeKiB = 256
	defaultBusyTimeout  = 5 * time.Second
	// walAutocheckpointPages: a checkpoint copies the WAL back into the
	// database and, with synchronous=NORMAL, is the only moment SQLite calls
	// fsync. A page changed by many commits between two checkpoints is
	// written to the database file once, so a larger interval writes fewer
	// bytes; a smaller one keeps the WAL (and the page cache holding it)
	// small. 1000 pages of 1 KiB = 1 MiB of WAL.
	walAutocheckpointPages = 1000
	// journalSizeLimit caps the WAL file left behind after a checkpoint at
	// the size one checkpoint interval needs, so it neither grows without
	// bound nor gets truncated and re-extended (extra filesystem metadata
	// writes) on every checkpoint.
	journalSizeLimit = 2 << 20
)

// Options configures Open. The zero value is the recommended configuration.
type Options struct {
	// Synchronous is the SQLite synchronous level: "NORMAL" (default) or
	// "FULL".
	//
	// NORMAL: in WAL mode a commit appends its pages to the WAL without
	// fsync; SQLite fsyncs only when it checkpoints the WAL into the
	// database. A crash or power cut can lose the most recent commits, but
	// the WAL frames carry checksums, so a commit is either replayed in full
	// or not at all and the database is never corrupted. This is what the
	// budgets need: flash wear (no fsync, hence no forced flash program
	// cycle, per commit) and ≥ 2,000 container create+delete per second.
	// Losing the last container creations after a power cut is acceptable
	// for a container runtime (the tasks died with the power as well).
	//
	// FULL: every commit fsyncs the WAL; a commit that returned is durable.
	// Choose it where losing an acknowledged change is worse than the cost.
	Synchronous string
	// CacheSizeKiB is the page cache per connection in KiB (default 256).
	CacheSizeKiB int
	// CompressSpecs stores container specs deflated: about 2 KiB fewer
	// bytes written per container create+delete, for more CPU per create
	// and the memory of pooled deflate writers (about 1.4 MiB measured in
	// the daemon). Specs stored either way are always readable.
	CompressSpecs bool
	// ReadConns is the number of reader connections that View uses next to
	// the single writer connection. Zero (the default) or negative means
	// none: View shares the writer connection, and the file is opened with
	// locking_mode=EXCLUSIVE. edged is the only user of its database, so
	// it holds SQLite's lock for as long as it runs: a commit then takes
	// and releases no file locks (about 11 fcntl calls less per container
	// create+delete, ≈15% more of them per second) and the WAL index lives
	// in memory instead of a -shm file. Another process (a second edged on
	// the same root, the sqlite3 shell) cannot open the file meanwhile.
	// Reads then wait for a write in progress; a write transaction here
	// takes well under a millisecond.
	//
	// Positive: that many reader connections in shared locking mode, which
	// read a snapshot while a write is in progress, for the memory of one
	// more connection each (about 0.5 MiB).
	ReadConns int
	// BusyTimeout is how long a statement waits for a lock held by another
	// process (e.g. the sqlite3 CLI) before failing (default 5s).
	BusyTimeout time.Duration
	// ExtraSchema functions run at every Open, inside the migration
	// transaction and after edged's own migrations, so that other stores
	// sharing the file (the snapshotter's snapshots.InitSchema) create or
	// upgrade their tables atomically with ours. They must be idempotent
	// (CREATE TABLE IF NOT EXISTS, or their own version table).
	ExtraSchema []func(context.Context, *sql.Tx) error
	// CountSnapshots, when set, is called by DeleteNamespace inside its
	// transaction to count the snapshots a namespace still holds (the
	// snapshot tables belong to another package); a namespace with
	// snapshots cannot be deleted.
	CountSnapshots func(ctx context.Context, tx *sql.Tx, namespace string) (int, error)
	// Logger receives migration messages. Default slog.Default().
	Logger *slog.Logger

	// upto stops migrations at this version (tests create old schemas).
	upto int
	// pageSize overrides PageSize and checkpoint walAutocheckpointPages
	// (benchmarks compare settings).
	pageSize   int
	checkpoint int
	// plainVFS opens the file through SQLite's default VFS instead of
	// walVFS (benchmarks and tests compare the two).
	plainVFS bool
	// walSlowWrite overrides walSlowWrite, the duration of a slow raw
	// write to the WAL (tests).
	walSlowWrite time.Duration
	// walSlowTimeOnly makes a raw write slow on its duration alone,
	// whether or not its thread slept (tests, see walVFS.timeOnly).
	walSlowTimeOnly bool
	// walSlowPause overrides walSlowPause, how long raw writes stay off
	// after a slow one (tests).
	walSlowPause time.Duration
}

// DB is an open metadata database. It is safe for concurrent use.
type DB struct {
	path   string
	opts   Options
	log    *slog.Logger
	w      *sql.DB // single writer connection
	r      *sql.DB // reader connections; == w when ReadConns < 0
	wstmts *stmtCache
	// rstmts are the reader pool's statements, prepared by the first
	// View (under rmu); == wstmts when readers share the writer.
	rmu    sync.Mutex
	rstmts *stmtCache
	// specWriters are reusable deflate writers of encodeSpec (a writer
	// allocates about 200 KB of tables).
	specWriters   sync.Pool
	compressSpecs bool
	// wr runs the write transactions (see writer); nil until Open
	// succeeded.
	wr *writer
	// vfsName is the name of the database's walVFS and unregisterVFS
	// removes it from SQLite once no connection uses it; "" and nil with
	// Options.plainVFS.
	vfsName       string
	vfs           *walVFS // in SQLite memory, freed by unregisterVFS
	unregisterVFS func()
}

// Open opens (creating if needed) the database file at path, typically
// filepath.Join(root, FileName), and brings its schema up to date. The
// directory is created with mode 0700 and a new file with mode 0600.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	return open(ctx, path, opts)
}

func open(ctx context.Context, path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errdefs.InvalidArgument("path", "must not be empty")
	}
	sync := strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = "NORMAL"
	case "NORMAL", "FULL":
	default:
		return nil, errdefs.InvalidArgument("synchronous", "%q is not NORMAL or FULL", opts.Synchronous)
	}
	if opts.CacheSizeKiB < 0 {
		return nil, errdefs.InvalidArgument("cache size", "%d KiB is negative", opts.CacheSizeKiB)
	}
	if opts.CacheSizeKiB == 0 {
		opts.CacheSizeKiB = defaultCacheSizeKiB
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = defaultBusyTimeout
	}
	if opts.pageSize == 0 {
		opts.pageSize = PageSize
	}
	if opts.checkpoint == 0 {
		opts.checkpoint = walAutocheckpointPages
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("metadata: create directory: %w", err)
	}
	// Create the file ourselves so that it gets mode 0600; SQLite gives the
	// -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("metadata: open %s: %w", path, err)
	}
	f.Close()

	locking := "NORMAL"
	if opts.ReadConns <= 0 {
		locking = "EXCLUSIVE"
	}
	// Per-connection settings, run on every new connection.
	common := []string{
		fmt.Sprintf("PRAGMA busy_timeout = %d", opts.BusyTimeout.Milliseconds()),
		"PRAGMA foreign_keys = ON",
		"PRAGMA synchronous = " + sync,
		fmt.Sprintf("PRAGMA cache_size = -%d", opts.CacheSizeKiB),
		// No memory mapping: reads go through the small page cache, so the
		// file's pages do not count towards the RSS of the daemon.
		"PRAGMA mmap_size = 0",
		"PRAGMA temp_store = MEMORY",
	}
	writer := append([]string{
		// page_size only takes effect on a new, empty file and must come
		// before journal_mode, which writes the first page.
		fmt.Sprintf("PRAGMA page_size = %d", opts.pageSize),
		// Free pages go back to the filesystem at Vacuum (after garbage
		// collection), so deleted containers and images do not leave the
		// file at its high-water mark on a small flash card. Like
		// page_size it takes effect on a new file.
		"PRAGMA auto_vacuum = INCREMENTAL",
		// Before journal_mode: in exclusive mode the WAL index is kept in
		// memory (no -shm file) when WAL is entered on this connection.
		"PRAGMA locking_mode = " + locking,
		"PRAGMA journal_mode = WAL",
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", opts.checkpoint),
		fmt.Sprintf("PRAGMA journal_size_limit = %d", journalSizeLimit),
	}, common...)
	reader := append([]string{"PRAGMA query_only = ON"}, common...)

	dsn := "file:" + (&url.URL{Path: path}).EscapedPath()
	var (
		vfsName    string
		wvfs       *walVFS
		unregister func()
	)
	if !opts.plainVFS {
		// See walVFS: a commit's WAL frames in one write(2).
		name, vfs, unreg, err := registerWALVFS(opts.walSlowWrite)
		if err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		if opts.walSlowTimeOnly {
			vfs.timeOnly = 1
		}
		if opts.walSlowPause > 0 {
			vfs.pause = int64(opts.walSlowPause)
		}
		dsn += "?vfs=" + url.QueryEscape(name)
		vfsName, wvfs, unregister = name, vfs, unreg
	}
	// BEGIN IMMEDIATE: every write transaction takes the write lock up
	// front and never fails with SQLITE_BUSY half way through when it
	// upgrades from read to write.
	wconn, err := newConnector(dsn, writer, "IMMEDIATE")
	if err != nil {
		if unregister != nil {
			unregister()
		}
		return nil, fmt.Errorf("metadata: %w", err)
	}
	db := &DB{path: path, opts: opts, log: log, compressSpecs: opts.CompressSpecs, vfsName: vfsName, vfs: wvfs, unregisterVFS: unregister}
	db.w = sql.OpenDB(wconn)
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)
	db.r = db.w
	if opts.ReadConns > 0 {
		rconn, err := newConnector(dsn, reader, "")
		if err != nil {
			db.closeAll()
			return nil, fmt.Errorf("metadata: %w", err)
		}
		db.r = sql.OpenDB(rconn)
		db.r.SetMaxOpenConns(opts.ReadConns)
		db.r.SetMaxIdleConns(opts.ReadConns)
		// An idle daemon gives the readers' memory back.
		db.r.SetConnMaxIdleTime(time.Minute)
	}
	if err := db.migrate(ctx, opts.upto); err != nil {
		db.closeAll()
		if errors.Is(err, errdefs.ErrUnavailable) {
			return nil, fmt.Errorf("metadata: %s is in use by another process (another edged with the same root?): %w", path, err)
		}
		return nil, err
	}
	if opts.upto == 0 {
		if db.wstmts, err = newStmtCache(ctx, db.w, queries()); err != nil {
			db.closeAll()
			return nil, fmt.Errorf("metadata: %w", err)
		}
		// The readers' statements are prepared at the first View (see
		// readStmts): a daemon that only writes (a create+delete burst)
		// then never opens a reader connection, whose page cache, schema
		// and compiled statements cost about 0.5 MiB.
		if db.r == db.w {
			db.rstmts = db.wstmts
		}
	}
	db.wr = newWriter()
	db.wr.start(func(ctx context.Context, fn func(*Tx) error) error {
		return db.run(ctx, db.w, db.wstmts, true, fn)
	})
	return db, nil
}

// Path returns the database file's path.
func (db *DB) Path() string { return db.path }

// SQL returns the writer connection pool, for other stores that keep their
// tables in the same file (snapshots). Its transactions begin IMMEDIATE
// and are serialized with Update's, so they never conflict. Inside an
// Update, use Tx.SQL instead: the single writer connection is busy.
func (db *DB) SQL() *sql.DB { return db.w }

// Vacuum returns the database file's free pages to the filesystem (and
// checkpoints the WAL, so the space is released now). It is cheap when
// there is nothing to free; call it after deleting many objects.
func (db *DB) Vacuum(ctx context.Context) error {
	if _, err := db.w.ExecContext(ctx, "PRAGMA incremental_vacuum"); err != nil {
		return dbError("vacuum", err)
	}
	if _, err := db.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return dbError("checkpoint", err)
	}
	return nil
}

// Close closes the database. The last connection to close checkpoints the
// WAL into the database file.
func (db *DB) Close() error {
	// Let SQLite refresh its query planner statistics if it thinks they are
	// stale; cheap when nothing changed.
	_, _ = db.w.Exec("PRAGMA optimize")
	return db.closeAll()
}

func (db *DB) closeAll() error {
	if db.wr != nil {
		db.wr.stop()
	}
	db.wstmts.close()
	var errR error
	if db.r != db.w {
		db.rmu.Lock()
		if db.rstmts != db.wstmts {
			db.rstmts.close()
		}
		db.rmu.Unlock()
		errR = db.r.Close()
	}
	errW := db.w.Close()
	// SQLite keeps a pointer to the VFS in every open connection; a
	// connection still in use (through SQL()) after Close would close
	// later, so the VFS, a few hundred bytes, is then left registered.
	if db.unregisterVFS != nil && db.w.Stats().OpenConnections == 0 && db.r.Stats().OpenConnections == 0 {
		db.unregisterVFS()
		db.unregisterVFS, db.vfs = nil, nil
	}
	return errors.Join(errR, errW)
}

// Update runs fn in one write transaction. If fn returns an error or
// panics, the transaction is rolled back and nothing it did is kept;
// otherwise it is committed. fn must not call Update or View. fn runs on
// the database's writer goroutine (see writer), not the caller's; a panic
// in fn is raised again in the caller's goroutine.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	if db.wr == nil {
		// Only while Open migrates (tests holding an old schema).
		return db.run(ctx, db.w, db.wstmts, true, fn)
	}
	return db.wr.do(ctx, fn)
}

// View runs fn in one read transaction, which sees a consistent snapshot of
// the database. Write methods called on its Tx fail with
// ErrFailedPrecondition. fn must not call Update or View.
func (db *DB) View(ctx context.Context, fn func(*Tx) error) error {
	stmts, err := db.readStmts(ctx)
	if err != nil {
		return err
	}
	return db.run(ctx, db.r, stmts, false, fn)
}

// readStmts returns the reader pool's prepared statements, preparing the
// read-only ones (the only ones a View can run) on first use. Nil while a
// test holds the schema at an old version: statements then run unprepared.
func (db *DB) readStmts(ctx context.Context) (*stmtCache, error) {
	db.rmu.Lock()
	defer db.rmu.Unlock()
	if db.rstmts != nil || db.wstmts == nil {
		return db.rstmts, nil
	}
	var ro []string
	for _, q := range queries() {
		if strings.HasPrefix(q, "SELECT") {
			ro = append(ro, q)
		}
	}
	c, err := newStmtCache(ctx, db.r, ro)
	if err != nil {
		return nil, dbError("prepare read statements", err)
	}
	db.rstmts = c
	return c, nil
}

func (db *DB) run(ctx context.Context, pool *sql.DB, stmts *stmtCache, writable bool, fn func(*Tx) error) (err error) {
	var txo *sql.TxOptions
	bctx := ctx
	if writable {
		// A write transaction runs its statements with ctx's values but
		// without its cancellation (see Tx.stmtCtx): the driver would
		// otherwise start a goroutine watching ctx for every statement,
		// BEGIN and COMMIT. ctx is checked before BEGIN, before every
		// statement and before COMMIT instead, so a canceled request still
		// commits nothing.
		if err := ctx.Err(); err != nil {
			return dbError("begin transaction", err)
		}
		bctx = context.WithoutCancel(ctx)
	} else {
		txo = &sql.TxOptions{ReadOnly: true}
	}
	stx, err := pool.BeginTx(bctx, txo)
	if err != nil {
		return dbError("begin transaction", err)
	}
	tx := &Tx{db: db, tx: stx, stmts: stmts, writable: writable}
	done := false
	defer func() {
		if !done {
			_ = stx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		done = true
		_ = stx.Rollback()
		return err
	}
	done = true
	if err := ctx.Err(); err != nil {
		_ = stx.Rollback()
		return dbError("commit", err)
	}
	if err := stx.Commit(); err != nil {
		return dbError("commit", err)
	}
	return nil
}

// dbError wraps an error from SQLite itself (not a validation error): a
// busy database is ErrUnavailable, a corrupt one ErrDataLoss, a canceled
// context keeps its error.
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("metadata: %s: %w", op, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return fmt.Errorf("metadata: %s: %v: %w", op, err, errdefs.ErrUnavailable)
		case 11, 26: // SQLITE_CORRUPT, SQLITE_NOTADB
			return fmt.Errorf("metadata: %s: %v: %w", op, err, errdefs.ErrDataLoss)
		case 13: // SQLITE_FULL
			return fmt.Errorf("metadata: %s: %v: %w", op, err, errdefs.ErrResourceExhausted)
		}
	}
	return fmt.Errorf("metadata: %s: %w", op, err)
}

// isForeignKeyError reports whether err is SQLite's
// SQLITE_CONSTRAINT_FOREIGNKEY.
func isForeignKeyError(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == 787
}

// connector runs the setup statements on every new connection and gives
// it prepared transaction statements (see txConn); beginMode is the BEGIN
// variant of its write transactions.
type connector struct {
	base      driver.Connector
	setup     []string
	beginMode string
}

func newConnector(dsn string, setup []string, beginMode string) (*connector, error) {
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return &connector{base: base, setup: setup, beginMode: beginMode}, nil
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		conn.Close()
		return nil, errors.New("sqlite connection does not implement ExecerContext")
	}
	for _, q := range c.setup {
		if _, err := ex.ExecContext(ctx, q, nil); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	tc, err := newTxConn(ctx, conn, c.beginMode)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

func (c *connector) Driver() driver.Driver { return c.base.Driver() }

// stmtCache holds every statement of the package, prepared once per pool
// at Open (before any transaction: preparing on the pool inside a
// transaction would wait for the busy single writer connection). database/sql
// keeps a prepared statement per connection and Tx.StmtContext reuses it,
// so with the long-lived writer connection every statement is compiled
// exactly once. The map is read-only after Open.
type stmtCache struct {
	m map[string]*sql.Stmt
}

func newStmtCache(ctx context.Context, db *sql.DB, queries []string) (*stmtCache, error) {
	c := &stmtCache{m: make(map[string]*sql.Stmt, len(queries))}
	for _, q := range queries {
		if _, ok := c.m[q]; ok {
			continue
		}
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		c.m[q] = s
	}
	return c, nil
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	for _, s := range c.m {
		s.Close()
	}
}
