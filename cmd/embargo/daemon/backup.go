package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// Backup copies the store of dataDir to dst, through the running daemon (one
// read transaction: mail keeps flowing) or from the file when none runs, and
// reports which. The copy is written to a temporary file, synced, checked
// with bbolt's consistency check and only then renamed to dst, so an
// interrupted backup never replaces a good one.
func Backup(dataDir, dst string) (online bool, err error) {
	if dst == filepath.Join(dataDir, DBFile) {
		return false, fmt.Errorf("%s is the store itself: back up to another file", dst)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return false, fmt.Errorf("backup: %w", err)
	}
	if c := DialCtl(dataDir); c != nil {
		defer c.Close()
		if err := backupOnline(c, tmp, dst); err != nil {
			return true, err
		}
		online = true
	} else if err := backupOffline(dataDir, tmp); err != nil {
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	if err := CheckStoreFile(tmp.Name()); err != nil {
		return online, fmt.Errorf("backup: the copy fails its check (%v); nothing replaced %s", err, dst)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	return online, durable.SyncDir(filepath.Dir(dst))
}

// backupOnline receives the daemon's stream: exactly the size it announced.
func backupOnline(c *Ctl, w io.Writer, dst string) error {
	status, br, err := c.Call("backup", nil)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	size, err := strconv.ParseInt(status, 10, 64)
	if err != nil {
		return fmt.Errorf("backup: bad size %q from the daemon", status)
	}
	n, err := io.Copy(w, io.LimitReader(br, size))
	if err == nil && n != size {
		err = fmt.Errorf("got %d of %d bytes", n, size)
	}
	if err != nil {
		return fmt.Errorf("backup: the copy was cut short (%v); nothing replaced %s", err, dst)
	}
	return nil
}

func backupOffline(dataDir string, w io.Writer) error {
	db, err := OpenStore(dataDir, true)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(w)
		return err
	}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// CheckStoreFile runs the store's checks on the file at path (a backup):
// the pre-open check, then bbolt's, as for the store itself.
func CheckStoreFile(path string) error {
	db, _, err := openChecked(path, true)
	if err != nil {
		return err
	}
	return db.Close()
}

// StoreSummary counts what a store holds, to compare a backup with its source.
type StoreSummary struct {
	Incidents, Messages, QueueRows int
}

func (s StoreSummary) String() string {
	return fmt.Sprintf("%d incidents, %d archived messages, %d queue rows", s.Incidents, s.Messages, s.QueueRows)
}

// DescribeStore counts what the store file at path holds.
func DescribeStore(path string) (StoreSummary, error) {
	db, _, err := openChecked(path, true)
	if err != nil {
		return StoreSummary{}, err
	}
	defer db.Close()
	var s StoreSummary
	err = db.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			return err
		}
		s.Incidents = len(incs)
		for _, inc := range incs {
			s.Messages += inc.Messages
		}
		rows, err := queue.List(tx)
		s.QueueRows = len(rows)
		return err
	})
	return s, err
}

// Restore puts the backup src in place of the store of dataDir. The daemon
// must be stopped. The copy that will be installed is checked first, with the
// same checks as the store itself; the current store, if any, is never
// opened (it is usually damaged: that is when a restore is needed) and is
// kept beside it as embargo.db.replaced-<time>, named in kept.
func Restore(dataDir, src string, now time.Time) (kept string, err error) {
	if Running(dataDir) {
		return "", errors.New("the daemon is running: stop it first (systemctl stop embargo), then restore")
	}
	if err := durable.MkdirAll(dataDir); err != nil {
		return "", err
	}
	dst := filepath.Join(dataDir, DBFile)
	// Take the store's lock (bbolt's flock) while swapping: a daemon that holds
	// it is refused, one starting meanwhile waits.
	if cur, err := os.Open(dst); err == nil {
		defer cur.Close()
		if err := syscall.Flock(int(cur.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return "", fmt.Errorf("the store %s is in use (%v): stop the daemon first", dst, err)
		}
	}
	tmp, err := copyToTemp(src, dataDir)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(tmp)
	if err := CheckStoreFile(tmp); err != nil {
		var se *StoreError
		if errors.As(err, &se) {
			err = errors.New(se.Reason)
		}
		return "", fmt.Errorf("%s is not a usable backup: %v. Nothing was changed; restore an older backup", src, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		kept = dst + ".replaced-" + now.UTC().Format("20060102T150405Z")
		if err := os.Rename(dst, kept); err != nil {
			return "", fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return kept, fmt.Errorf("restore: %w", err)
	}
	if err := durable.SyncDir(dataDir); err != nil {
		return kept, err
	}
	if _, had := readMarker(dataDir); !had {
		return kept, writeMarker(dataDir, "restored")
	}
	return kept, nil
}

// copyToTemp copies src to a new file in dir, mode 0600, synced.
func copyToTemp(src, dir string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	return writeTemp(dir, ".restore", in)
}

// writeTemp writes r to a new file in dir named after name, with mode 0600,
// synced, and returns its path.
func writeTemp(dir, name string, r io.Reader) (string, error) {
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// WriteFileAtomic writes data to path with mode 0600, synced, and replaces
// any file there in one rename: a crash leaves the old file or the new one,
// never a part. embargo init writes the configuration and keys with it.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := writeTemp(filepath.Dir(path), "."+filepath.Base(path), bytes.NewReader(data))
	if err == nil {
		if err = os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
