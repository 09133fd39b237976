package metadata

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// txConn is a SQLite connection whose BEGIN, COMMIT and ROLLBACK are
// statements prepared once, when the connection opens. The driver
// (modernc.org/sqlite) compiles each of them afresh for every transaction:
// parsing and code generation for two statements per transaction, about
// 4% of edged's CPU time in a container create+delete burst
// (BenchmarkContainerCreateDelete: 153-176 instead of 166-198 µs of CPU
// per pair). Everything else goes to the driver's connection unchanged.
type txConn struct {
	c  driver.Conn
	ex driver.ExecerContext
	qu driver.QueryerContext
	pc driver.ConnPrepareContext
	// begin starts a write transaction (BEGIN IMMEDIATE on the writer
	// connection, see Open), beginRead a read-only one; commit and
	// rollback end either.
	begin, beginRead, commit, rollback driver.StmtExecContext
	stmts                              []driver.Stmt
}

// newTxConn prepares the transaction statements on c; beginMode is the
// BEGIN variant of write transactions ("IMMEDIATE" or "").
func newTxConn(ctx context.Context, c driver.Conn, beginMode string) (*txConn, error) {
	t := &txConn{c: c}
	var ok bool
	if t.ex, ok = c.(driver.ExecerContext); !ok {
		return nil, errors.New("sqlite connection does not implement ExecerContext")
	}
	if t.qu, ok = c.(driver.QueryerContext); !ok {
		return nil, errors.New("sqlite connection does not implement QueryerContext")
	}
	if t.pc, ok = c.(driver.ConnPrepareContext); !ok {
		return nil, errors.New("sqlite connection does not implement ConnPrepareContext")
	}
	for _, p := range []struct {
		dst   *driver.StmtExecContext
		query string
	}{
		{&t.begin, "BEGIN " + beginMode},
		{&t.beginRead, "BEGIN"},
		{&t.commit, "COMMIT"},
		{&t.rollback, "ROLLBACK"},
	} {
		s, err := t.pc.PrepareContext(ctx, p.query)
		if err != nil {
			t.closeStmts()
			return nil, fmt.Errorf("prepare %s: %w", p.query, err)
		}
		t.stmts = append(t.stmts, s)
		if *p.dst, ok = s.(driver.StmtExecContext); !ok {
			t.closeStmts()
			return nil, errors.New("sqlite statement does not implement StmtExecContext")
		}
	}
	return t, nil
}

func (t *txConn) closeStmts() {
	for _, s := range t.stmts {
		s.Close()
	}
	t.stmts = nil
}

// BeginTx starts a transaction. A BEGIN that fails (its context ended)
// is followed by a ROLLBACK, so that the connection goes back to the pool
// outside any transaction whether or not the BEGIN took effect.
func (t *txConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.Isolation != driver.IsolationLevel(0) {
		return nil, errors.New("sqlite: isolation levels are not supported")
	}
	begin := t.begin
	if opts.ReadOnly {
		begin = t.beginRead
	}
	if _, err := begin.ExecContext(ctx, nil); err != nil {
		_, _ = t.rollback.ExecContext(context.Background(), nil)
		return nil, err
	}
	return (*txEnd)(t), nil
}

// txEnd is the driver.Tx of a txConn.
type txEnd txConn

// Commit commits. A COMMIT that fails leaves the transaction open in
// SQLite (SQLITE_BUSY, for one); it is rolled back, as database/sql
// expects the connection to be outside a transaction afterwards.
func (e *txEnd) Commit() error {
	if _, err := e.commit.ExecContext(context.Background(), nil); err != nil {
		_, _ = e.rollback.ExecContext(context.Background(), nil)
		return err
	}
	return nil
}

func (e *txEnd) Rollback() error {
	_, err := e.rollback.ExecContext(context.Background(), nil)
	return err
}

func (t *txConn) Begin() (driver.Tx, error) {
	return t.BeginTx(context.Background(), driver.TxOptions{})
}

func (t *txConn) Prepare(query string) (driver.Stmt, error) {
	return t.pc.PrepareContext(context.Background(), query)
}

func (t *txConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return t.pc.PrepareContext(ctx, query)
}

func (t *txConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return t.ex.ExecContext(ctx, query, args)
}

func (t *txConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return t.qu.QueryContext(ctx, query, args)
}

func (t *txConn) Close() error {
	t.closeStmts()
	return t.c.Close()
}

// ResetSession, IsValid and Ping pass database/sql's connection checks to
// the driver's connection.
func (t *txConn) ResetSession(ctx context.Context) error {
	if r, ok := t.c.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (t *txConn) IsValid() bool {
	if v, ok := t.c.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (t *txConn) Ping(ctx context.Context) error {
	if p, ok := t.c.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}
