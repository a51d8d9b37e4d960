package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// DBFile is the store's file name in the data directory.
const DBFile = "embargo.db"

// ErrLocked means another process (a running daemon) holds the store.
var ErrLocked = errors.New("the store is locked by another process (is `embargo serve` running?)")

// OpenStore opens the bbolt file in dir, verifies it and creates every
// package's buckets in one transaction. It refuses a store that fails the
// consistency check before any listener opens (docs/threat-model.md A5). The
// admin commands open it read-only when no daemon runs.
func OpenStore(dir string, readOnly bool) (db *bolt.DB, err error) {
	path := filepath.Join(dir, DBFile)
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no store at %s: %w", path, err)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// threats.md D10: the store holds embargoed reports.
		return nil, fmt.Errorf("%s is readable by group or others (mode %v): run `chmod 600 %s` and start again", path, fi.Mode().Perm(), path)
	}
	// A damaged file can make bbolt panic while reading pages; turn that into
	// the same refusal as a failed check.
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, corrupt(path, fmt.Errorf("%v", r))
		}
	}()
	opts := &bolt.Options{Timeout: time.Second, ReadOnly: readOnly}
	if !readOnly {
		// 1 GiB of address space (not memory) mapped up front: a commit that
		// outgrows the map makes bbolt remap, and first copy every value the
		// transaction holds into the heap, once per doubling of the map (a
		// 10 MB report on a young store took 5.6 times its size in heap
		// instead of 3.9). Readers then never hold up a remap either.
		opts.InitialMmapSize = 1 << 30
	}
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, ErrLocked
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			return nil, corrupt(path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// Durability rests on fsync (threats.md §3 promise 1): never run without it.
	if db.NoSync || db.NoGrowSync {
		db.Close()
		return nil, fmt.Errorf("store opened without fsync; refusing")
	}
	if err := db.View(func(tx *bolt.Tx) error {
		// Drain the channel: the checker goroutine must finish before the
		// transaction closes.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		db.Close()
		return nil, corrupt(path, err)
	}
	if readOnly {
		return db, nil
	}
	// Concurrent inbound messages share a commit (group commit): one fsync
	// pair for all of them, and a lone message waits at most this long.
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.Init(tx); err != nil {
			return err
		}
		if err := announce.Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise store: %w", err)
	}
	return db, nil
}

func corrupt(path string, cause error) error {
	return fmt.Errorf("the store %s failed its consistency check (%v).\n"+
		"embargo will not start on it: mail stays queued at the sending servers meanwhile.\n"+
		"To restore: stop embargo, move the damaged file aside (mv %s %s.damaged),\n"+
		"copy your latest backup (made with `embargo backup FILE`) to %s with mode 0600, and start again.\n"+
		"`bbolt check %s.damaged` and `bbolt surgery` can help recover data from the damaged copy", path, cause, path, path, path, path)
}
