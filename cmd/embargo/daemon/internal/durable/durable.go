// Package durable makes directories whose names survive a power loss: the
// store's data directory, the keys directory, the DKIM key's directory and
// the Maildir relay's tmp/, new/ and cur/ (docs/threat-model.md A1, A3).
//
// POSIX makes a file's name durable only once the directory holding it is
// synced; the files written into a directory are synced with it, not its own
// name in its parent. Without these syncs a power cut after the first start
// took the whole data directory away (cmd/embargo.TestPowerLoss), and one
// after the first Maildir deliveries the whole outbox, with its copies
// already recorded as sent (queue.TestMaildirPowerLoss).
package durable

import (
	"os"
	"path/filepath"
)

// MkdirAll makes dir, with any missing parents (mode 0700), and syncs the
// directory holding each one it made. The parent of dir is synced at every
// call, even when dir exists: an earlier start may have died between the
// mkdir and the sync.
func MkdirAll(dir string) error {
	dir = filepath.Clean(dir)
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if len(made) == 0 {
		made = []string{dir}
	}
	for _, d := range made {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
