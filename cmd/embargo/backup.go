package main

import (
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
)

const backupHelp = `Usage: embargo backup FILE [--config FILE] [--data DIR]

Writes a consistent copy of the store to FILE (mode 0600), while the daemon
runs (through its control socket, in one read transaction: mail keeps
flowing) or while it is stopped. The copy is synced to disk, checked with
bbolt's consistency check, and only then renamed to FILE, so an interrupted
backup never replaces a good one. It prints what the copy holds.

The copy holds embargoed reports in clear: keep it on encrypted storage, or
encrypt it before it leaves the host (gpg --encrypt). Restore with
embargo restore.

Examples:
  embargo backup /var/backups/embargo/embargo-$(date +%F).db
  embargo backup /tmp/embargo.db --config /etc/embargo/embargo.toml
  embargo backup /tmp/embargo.db && gpg --encrypt -r backup@example.org /tmp/embargo.db

Flags:
`

func cmdBackup(args []string, stdout io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("backup", backupHelp, &cf, false)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("usage: embargo backup FILE")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	dst, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if dst == filepath.Join(cfg.DataDir, dbFile) {
		return fmt.Errorf("%s is the store itself: back up to another file", dst)
	}
	online, err := backup(cfg.DataDir, dst)
	if err != nil {
		return err
	}
	sum, err := describeStore(dst)
	if err != nil {
		return err
	}
	how := "from the store file (no daemon running)"
	if online {
		how = "through the running daemon"
	}
	fmt.Fprintf(stdout, "backup written to %s %s: %s\n", dst, how, sum)
	return nil
}

// backup copies the store to dst and reports whether the daemon did it.
func backup(dataDir, dst string) (online bool, err error) {
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
	if c := ctlDial(dataDir); c != nil {
		defer c.Close()
		online = true
		status, br, err := ctlSend(c, "backup", nil)
		if err != nil {
			return true, fmt.Errorf("backup: %w", err)
		}
		size, err := strconv.ParseInt(status, 10, 64)
		if err != nil {
			return true, fmt.Errorf("backup: bad size %q from the daemon", status)
		}
		n, err := io.Copy(tmp, io.LimitReader(br, size))
		if err == nil && n != size {
			err = fmt.Errorf("got %d of %d bytes", n, size)
		}
		if err != nil {
			return true, fmt.Errorf("backup: the copy was cut short (%v); nothing replaced %s", err, dst)
		}
	} else {
		db, err := openStore(dataDir, true)
		if err != nil {
			return false, err
		}
		err = db.View(func(tx *bolt.Tx) error {
			_, err := tx.WriteTo(tmp)
			return err
		})
		db.Close()
		if err != nil {
			return false, fmt.Errorf("backup: %w", err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	if err := checkStoreFile(tmp.Name()); err != nil {
		return online, fmt.Errorf("backup: the copy fails its check (%v); nothing replaced %s", err, dst)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return online, fmt.Errorf("backup: %w", err)
	}
	return online, syncDir(filepath.Dir(dst))
}

// checkStoreFile opens a store file read-only and runs bbolt's check on it.
func checkStoreFile(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// storeSummary counts what a store holds, to compare a backup with its source.
type storeSummary struct {
	Incidents, Messages, QueueRows int
}

func (s storeSummary) String() string {
	return fmt.Sprintf("%d incidents, %d archived messages, %d queue rows", s.Incidents, s.Messages, s.QueueRows)
}

func summarize(tx *bolt.Tx) (storeSummary, error) {
	var s storeSummary
	incs, err := incidentdb.List(tx)
	if err != nil {
		return s, err
	}
	s.Incidents = len(incs)
	for _, inc := range incs {
		s.Messages += inc.Messages
	}
	rows, err := queue.List(tx)
	s.QueueRows = len(rows)
	return s, err
}

func describeStore(path string) (storeSummary, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return storeSummary{}, err
	}
	defer db.Close()
	var s storeSummary
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		s, err = summarize(tx)
		return err
	})
	return s, err
}

const restoreHelp = `Usage: embargo restore FILE [--config FILE] [--data DIR]

Puts a backup made with embargo backup in place of the store. The daemon must
be stopped. The backup is checked first; the current store, if any, is kept
beside it as embargo.db.replaced-<time>. The restored store has mode 0600.
Mail that arrived after the backup was taken is not in it: the senders' copies
and the committee's mailboxes are where to find it.

Examples:
  systemctl stop embargo
  embargo restore /var/backups/embargo/embargo-2026-11-23.db --config /etc/embargo/embargo.toml
  systemctl start embargo

Flags:
`

func cmdRestore(args []string, stdout io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("restore", restoreHelp, &cf, false)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("usage: embargo restore FILE")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if c := ctlDial(cfg.DataDir); c != nil {
		c.Close()
		return errors.New("the daemon is running: stop it first (systemctl stop embargo), then restore")
	}
	src := pos[0]
	if err := checkStoreFile(src); err != nil {
		return fmt.Errorf("%s is not a usable backup: %v", src, err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	dst := filepath.Join(cfg.DataDir, dbFile)
	// Take the store's lock (bbolt's flock) while swapping: a daemon that holds
	// it is refused, one starting meanwhile waits. The store is not opened as
	// a database: it may be the damaged file being replaced.
	if cur, err := os.Open(dst); err == nil {
		defer cur.Close()
		if err := syscall.Flock(int(cur.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return fmt.Errorf("the store %s is in use (%v): stop the daemon first", dst, err)
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(cfg.DataDir, ".restore-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, in)
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
		return fmt.Errorf("restore: %w", err)
	}
	kept := ""
	if _, err := os.Stat(dst); err == nil {
		kept = dst + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(dst, kept); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(cfg.DataDir); err != nil {
		return err
	}
	sum, err := describeStore(dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s to %s: %s\n", src, dst, sum)
	if kept != "" {
		fmt.Fprintf(stdout, "the previous store is kept as %s\n", kept)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
