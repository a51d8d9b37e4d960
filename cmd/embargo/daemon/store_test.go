package daemon_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// goodStore makes a store the daemon created (with its marker), plus
// daemontest.AddFiller's pages, and returns its data directory.
func goodStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := daemon.OpenStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(dir, daemon.CreatedFile)); err != nil {
		t.Fatalf("a new store has no marker: %v", err)
	}
	daemontest.AddFiller(t, filepath.Join(dir, daemon.DBFile))
	return dir
}

// snapshot is what the data directory holds, to show a refusal changed nothing.
func snapshot(dir string) string {
	var b strings.Builder
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fi, _ := e.Info()
		b.WriteString(e.Name() + " " + fi.Mode().String() + " " + string(data) + "\n")
	}
	return b.String()
}

// captureLog makes slog's default logger (the admin commands' warnings) write
// to a buffer for the test.
func captureLog(t *testing.T) *daemontest.SyncBuffer {
	buf := &daemontest.SyncBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

// TestStoreDamage is the table of store damage (docs/threat-model.md A5):
// for each case, the daemon (serve), the read-only openers (incident, status,
// queue list, backup) and the writing one (queue retry) either all refuse it
// with the same sentence and the restore steps, changing nothing and binding
// no listener, or all open it; a backup with that damage is refused by
// restore; and restore from a good backup repairs every case.
func TestStoreDamage(t *testing.T) {
	good := goodStore(t)
	backup := filepath.Join(t.TempDir(), "good-backup.db")
	if _, err := daemon.Backup(good, backup); err != nil {
		t.Fatal(err)
	}
	for _, c := range daemontest.StoreCases() {
		t.Run(c.Name, func(t *testing.T) {
			// Each opener gets its own damaged copy: a writing one may repair.
			fresh := func() (string, string) {
				dir := daemontest.CopyStoreDir(t, good)
				c.Break(t, dir)
				return dir, snapshot(dir)
			}
			dir, before := fresh()
			logs := captureLog(t)
			// The read-only openers: incident, status, queue list (daemon.Read)
			// and an offline backup all come through OpenStore(dir, true).
			db, err := daemon.OpenStore(dir, true)
			checkOutcome(t, "read-only open", c.Refused, err)
			if err == nil {
				if c.Warn != "" && !strings.Contains(logs.String(), c.Warn) {
					t.Errorf("read-only open logged %q, want a warning with %q", logs.String(), c.Warn)
				}
				db.Close()
				checkFiller(t, c, dir)
			}
			_, err = daemon.Backup(dir, filepath.Join(t.TempDir(), "b.db"))
			checkOutcome(t, "backup", c.Refused, err)
			restoreDamaged(t, c, dir)
			if snapshot(dir) != before {
				t.Errorf("the read-only openers changed the data directory")
			}

			dir, before = fresh()
			_, err = daemon.QueueRetry(dir, 1, time.Now())
			if err != nil && strings.Contains(err.Error(), "no queue row 1") {
				err = nil // it opened the store and looked
			}
			checkOutcome(t, "queue retry", c.Refused, err)
			if err != nil && snapshot(dir) != before {
				t.Errorf("queue retry changed the data directory while refusing")
			}

			dir, before = fresh()
			serveCase(t, c, dir, before)
			restoreOver(t, c, dir, backup)
		})
	}
}

// checkFiller: an opened store holds what AddFiller left.
func checkFiller(t *testing.T, c daemontest.StoreCase, dir string) {
	t.Helper()
	want := daemontest.FillerKeys
	if c.Filler != 0 {
		want = c.Filler
	}
	if n := daemontest.CountFiller(t, filepath.Join(dir, daemon.DBFile)); n != want {
		t.Errorf("the opened store holds %d filler keys, want %d", n, want)
	}
}

// serveCase starts the daemon on the damaged directory.
func serveCase(t *testing.T, c daemontest.StoreCase, dir, before string) {
	t.Helper()
	logs := &daemontest.SyncBuffer{}
	cfg := storeConfig(t, dir)
	d := daemon.New(cfg, daemon.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	err := d.Start(context.Background())
	if c.ServeCreates {
		if err != nil {
			t.Fatalf("serve on %s: %v, want a new store", c.Name, err)
		}
		d.Stop(context.Background())
		return
	}
	checkOutcome(t, "serve", c.Refused, err)
	if err != nil {
		if d.Addr() != nil {
			t.Errorf("serve refused the store but listens on %v", d.Addr())
		}
		if snapshot(dir) != before {
			t.Errorf("serve changed the data directory while refusing")
		}
		return
	}
	if c.Warn != "" && !strings.Contains(logs.String(), c.Warn) {
		t.Errorf("serve logged %q, want a warning with %q", logs.String(), c.Warn)
	}
	d.Stop(context.Background())
	// A damaged meta page is repaired by the daemon's first write.
	warn := captureLog(t)
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("after serve: %v", err)
	}
	db.Close()
	if strings.Contains(warn.String(), "damaged") {
		t.Errorf("the damage is still there after serve wrote: %s", warn)
	}
	checkFiller(t, c, dir)
}

// restoreDamaged: the damaged file, given to restore as a backup, is
// refused unless the store would open.
func restoreDamaged(t *testing.T, c daemontest.StoreCase, dir string) {
	t.Helper()
	damagedFile := filepath.Join(dir, daemon.DBFile)
	if fi, err := os.Stat(damagedFile); err == nil && fi.Mode().IsRegular() {
		target := t.TempDir()
		_, err := daemon.Restore(target, damagedFile, time.Now())
		switch {
		case c.Refused != "" && c.Name != "world-readable":
			if err == nil || !strings.Contains(err.Error(), "not a usable backup") {
				t.Errorf("restore of a %s backup = %v, want a refusal", c.Name, err)
			}
			if _, serr := os.Stat(filepath.Join(target, daemon.DBFile)); serr == nil {
				t.Errorf("the refused restore installed a store")
			}
		case err != nil:
			t.Errorf("restore of a %s backup: %v", c.Name, err)
		}
	}
}

// restoreOver: restore from a good backup repairs the damage.
func restoreOver(t *testing.T, c daemontest.StoreCase, dir, backup string) {
	t.Helper()
	damagedFile := filepath.Join(dir, daemon.DBFile)
	kept, err := daemon.Restore(dir, backup, time.Now())
	if err != nil {
		t.Fatalf("restore over a %s store: %v", c.Name, err)
	}
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("open after restore: %v", err)
	}
	db.Close()
	if n := daemontest.CountFiller(t, damagedFile); n != daemontest.FillerKeys {
		t.Errorf("the restored store holds %d filler keys, want %d", n, daemontest.FillerKeys)
	}
	if _, err := os.Lstat(kept); kept != "" && err != nil {
		t.Errorf("restore did not keep the damaged file: %v", err)
	}
}

// checkOutcome: err is the refusal the case wants (with the restore steps
// when the store is damaged or gone), or nil when the store should open.
func checkOutcome(t *testing.T, who, refused string, err error) {
	t.Helper()
	if refused == "" {
		if err != nil {
			t.Errorf("%s: %v, want the store opened", who, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s opened the store, want a refusal with %q", who, refused)
		return
	}
	if !strings.Contains(err.Error(), refused) {
		t.Errorf("%s: %v\nwant %q", who, err, refused)
	}
	var se *daemon.StoreError
	if errors.As(err, &se) && !strings.Contains(err.Error(), daemontest.SentenceRestore) {
		t.Errorf("%s: the refusal does not say how to restore:\n%v", who, err)
	}
}

// storeConfig is a daemon configuration on the data directory dir, with
// outbound mail to a Maildir.
func storeConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	toml := "data_dir = \"" + dir + "\"\ndomain = \"ex.test\"\n" + daemontest.DefaultMembers +
		"[smtp]\nlisten = \"127.0.0.1:0\"\n[relay]\nurl = \"maildir://" + filepath.Join(t.TempDir(), "out") + "\"\n"
	cfg, err := config.Parse([]byte(toml), "store.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Resolve(); err != nil {
		t.Fatal(err)
	}
	return cfg
}
