package daemon

import (
	"os"
	"path/filepath"
)

// mkdirDurable makes dir, with any missing parents, and syncs the directory
// holding each one it made and the one holding dir, so that a power loss
// cannot take away the directory with what is written into it afterwards:
// the files in it are synced with it, not its name in its parent
// (docs/threat-model.md A1, found by cmd/embargo.TestPowerLoss). Without it,
// a power cut after the first start took the data directory (store, marker
// and all) or the keys directory away, and the next start began afresh or
// generated keys other than those reporters were given. The parent of dir is
// synced at every call: an earlier start may have died between the mkdir and
// the sync.
func mkdirDurable(dir string) error {
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
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
