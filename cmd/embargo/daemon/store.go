package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// DBFile is the store's file name in the data directory.
const DBFile = "embargo.db"

// CreatedFile, beside the store, records that a store was created in this
// data directory. While it exists a missing or empty store is refused instead
// of being created again: a new store would number incidents from
// SEC-YYYY-0001 again and forget every open one.
const CreatedFile = DBFile + ".created"

// ErrLocked means another process (a running daemon) holds the store.
var ErrLocked = errors.New("the store is locked by another process (is `embargo serve` running?)")

// StoreError is a store that embargo refuses to open, with the steps that
// restore it. Every opener returns it for the same damage.
type StoreError struct {
	Path   string
	Reason string // what is wrong, one clause
	// Gone: the marker says a store was created here, and it is missing or
	// empty. Created is what the marker says.
	Gone    bool
	Created string
	// NoMarker: an empty file with no marker (a new installation that never
	// ran could have left it).
	NoMarker bool
}

func (e *StoreError) Error() string {
	var b strings.Builder
	dir := filepath.Dir(e.Path)
	if e.Gone {
		fmt.Fprintf(&b, "the store %s %s, but %s says one was created here (%s): the store was here and is gone: restore it.\n"+
			"embargo will not create an empty store in its place: it would number incidents from SEC-YYYY-0001 again and forget every open one.\n",
			e.Path, e.Reason, filepath.Join(dir, CreatedFile), e.Created)
	} else {
		fmt.Fprintf(&b, "the store %s failed its consistency check: %s.\n"+
			"embargo will not open it and has changed nothing: mail stays queued at the sending servers meanwhile.\n", e.Path, e.Reason)
	}
	fmt.Fprintf(&b, "To restore it from your latest backup (a file made by `embargo backup`, e.g. in /var/backups/embargo/):\n"+
		"    systemctl stop embargo\n"+
		"    embargo restore BACKUP.db --data %s\n"+
		"    systemctl start embargo\n"+
		"`embargo restore` checks the backup and keeps what is there now as %s.replaced-<time>", dir, DBFile)
	switch {
	case e.Gone:
		fmt.Fprintf(&b, ".\nTo start over with an empty store instead, remove %s", filepath.Join(dir, CreatedFile))
	case e.NoMarker:
		fmt.Fprintf(&b, ".\nIf this is a new installation that never ran, remove the empty file %s and start again", e.Path)
	default:
		b.WriteString("; `bbolt check` and `bbolt surgery` may recover from the damaged file what the backup lacks")
	}
	return b.String()
}

// openMode says what an opener may do.
type openMode int

const (
	modeRead   openMode = iota // the read-only commands: the store must exist
	modeWrite                  // queue retry/drop without a daemon: the store must exist
	modeCreate                 // serve: a store is created if none ever was
)

// OpenStore opens the store in dir for the daemon (creating it if this data
// directory never had one) or, with readOnly, for the admin commands.
// Warnings go to the default logger.
func OpenStore(dir string, readOnly bool) (*bolt.DB, error) {
	mode := modeCreate
	if readOnly {
		mode = modeRead
	}
	return openStore(dir, mode, slog.Default())
}

// openStore is the one way into a store (docs/threat-model.md A5): every
// opener (serve, the read-only commands, queue, backup, restore, drill)
// comes here. Before bbolt maps the file it must be a regular file, mode
// 0600, and pass the pre-open check (storecheck.go); then bbolt's tx.Check
// must pass. A missing or empty store is created only where none ever was
// (CreatedFile), and only by the daemon. Warnings (one damaged meta page,
// which bbolt works around) go to log.
func openStore(dir string, mode openMode, log *slog.Logger) (*bolt.DB, error) {
	path := filepath.Join(dir, DBFile)
	created, hadStore := readMarker(dir)
	size, err := statStore(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && hadStore:
		return nil, &StoreError{Path: path, Reason: "is missing", Gone: true, Created: created}
	case errors.Is(err, os.ErrNotExist) && mode != modeCreate:
		return nil, fmt.Errorf("no store at %s: `embargo serve` creates it at its first start", path)
	case errors.Is(err, os.ErrNotExist):
		if err := createStore(dir); err != nil {
			return nil, err
		}
		// Open what is there now (ours, or one another process linked
		// first) as any existing store; never create twice.
		return openStore(dir, modeWrite, log)
	case err != nil:
		var d *storeDamage
		if errors.As(err, &d) {
			return nil, &StoreError{Path: path, Reason: d.reason}
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	case size == 0 && hadStore:
		return nil, &StoreError{Path: path, Reason: "is empty (0 bytes)", Gone: true, Created: created}
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// docs/threat-model.md D10: the store holds embargoed reports.
		return nil, fmt.Errorf("%s is readable by group or others (mode %v): run `chmod 600 %s` and start again", path, fi.Mode().Perm(), path)
	}
	db, warnings, err := openChecked(path, mode == modeRead)
	for _, w := range warnings {
		log.Warn("store damaged, opened anyway: "+w, "path", path)
	}
	if err != nil {
		var se *StoreError
		if errors.As(err, &se) && size == 0 {
			se.NoMarker = true
		}
		return nil, err
	}
	if mode == modeRead {
		return db, nil
	}
	if !hadStore {
		// A store made before the marker existed, or restored into a new
		// data directory: from now on it may not silently disappear.
		if err := writeMarker(dir, "found in place"); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := db.Update(initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise store: %w", err)
	}
	return db, nil
}

func initBuckets(tx *bolt.Tx) error {
	if err := incidentdb.Init(tx); err != nil {
		return err
	}
	if err := announce.Init(tx); err != nil {
		return err
	}
	return queue.Init(tx)
}

// openChecked opens the store file at path after the pre-open check, and
// runs bbolt's consistency check on it. Damage is a *StoreError.
func openChecked(path string, readOnly bool) (db *bolt.DB, warnings []string, err error) {
	if warnings, err = precheckFile(path); err != nil {
		return nil, warnings, err
	}
	// The pre-open check bounds everything bbolt reads; should it miss
	// something, a fault in this goroutine becomes a panic, and a panic the
	// same refusal as a failed check.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, &StoreError{Path: path, Reason: fmt.Sprint(r)}
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
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, warnings, ErrLocked
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			return nil, warnings, &StoreError{Path: path, Reason: err.Error()}
		}
		return nil, warnings, fmt.Errorf("open store %s: %w", path, err)
	}
	// Durability rests on fsync (docs/threat-model.md §3 promise 1): never
	// run without it.
	if db.NoSync || db.NoGrowSync {
		db.Close()
		return nil, warnings, fmt.Errorf("store opened without fsync; refusing")
	}
	if err := db.View(checkTx); err != nil {
		db.Close()
		return nil, warnings, &StoreError{Path: path, Reason: "bbolt's check: " + err.Error()}
	}
	return db, warnings, nil
}

// checkTx runs bbolt's consistency check and returns its first finding. The
// channel is drained: the checker goroutine must end before the transaction.
func checkTx(tx *bolt.Tx) error {
	var first error
	for err := range tx.Check() {
		if first == nil {
			first = err
		}
	}
	return first
}

// precheckFile runs the pre-open check on the file at path under a shared
// lock: a daemon holding the store (bbolt's exclusive flock) is writing it,
// and what it writes must not be mistaken for damage.
func precheckFile(path string) ([]string, error) {
	size, err := statStore(path)
	if err != nil {
		var d *storeDamage
		if errors.As(err, &d) {
			return nil, &StoreError{Path: path, Reason: d.reason}
		}
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			return nil, ErrLocked
		}
	}
	// Closing f releases the lock, before bbolt takes its own.
	warnings, err := precheck(f, size)
	var d *storeDamage
	if errors.As(err, &d) {
		return warnings, &StoreError{Path: path, Reason: d.reason}
	}
	return warnings, err
}

// createStore makes a new, empty store in dir: built under a temporary name
// and linked into place, so that a crash leaves no half-made embargo.db
// (an empty or partial one is refused, never taken as new), and a store
// that appeared meanwhile is never replaced. Then the marker.
func createStore(dir string) error {
	if err := durable.MkdirAll(dir); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+DBFile+".new-*")
	if err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	db, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{Timeout: time.Second})
	if err == nil {
		err = db.Update(initBuckets)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	if err := os.Link(tmp.Name(), filepath.Join(dir, DBFile)); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // another process created it first; open that one
		}
		return fmt.Errorf("create store: %w", err)
	}
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	return writeMarker(dir, "created")
}

// readMarker reports whether dir ever had a store, and what the marker says.
func readMarker(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, CreatedFile))
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if first == "" {
		first = "the marker is unreadable or empty"
	}
	return first, true
}

// writeMarker records that dir has a store, synced.
func writeMarker(dir, how string) error {
	text := fmt.Sprintf("store %s on %s\n\n"+
		"embargo wrote this file when the store %s appeared in this directory.\n"+
		"While it exists, embargo refuses to run without that store instead of\n"+
		"creating an empty one. Remove it only to start over with an empty store.\n",
		how, time.Now().UTC().Format(time.RFC3339), DBFile)
	if err := WriteFileAtomic(filepath.Join(dir, CreatedFile), []byte(text)); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}
