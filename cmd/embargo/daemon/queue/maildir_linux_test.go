//go:build linux

package queue

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
)

// TestSyncFS: on Linux the Maildir makes batches durable with syncfs(2),
// and a syncfs that cannot run is an error, never a silent success.
func TestSyncFS(t *testing.T) {
	m, err := NewMaildir(filepath.Join(t.TempDir(), "outbox"), RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.syncFS == nil {
		t.Fatal("no syncfs on Linux: every file would be synced on its own")
	}
	tmp, err := os.Open(filepath.Join(m.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syncFS(tmp); err != nil {
		t.Errorf("syncfs of a Maildir's tmp/: %v", err)
	}
	tmp.Close()
	if err := syncFS(tmp); err == nil {
		t.Error("syncfs of a closed descriptor succeeded")
	}
}

// TestSyncfsHonoured: the Maildir keeps syncfs where it makes files durable
// (the temporary directory's file system, ext4 or tmpfs here) and syncs each
// file on a FUSE file system, whose server syncfs never reaches
// (maildir_linux.go; TestMaildirPowerLoss shows the batches lost there
// otherwise), and says once which it does.
func TestSyncfsHonoured(t *testing.T) {
	var logs bytes.Buffer
	opts := RelayOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	local := t.TempDir()
	if ok, fs := syncfsHonoured(local); !ok {
		t.Skipf("the temporary directory is on %s, where syncfs is not honoured", fs)
	}
	m, err := NewMaildir(filepath.Join(local, "outbox"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.syncFS == nil {
		t.Error("no syncfs on a local file system")
	}
	if n := strings.Count(logs.String(), "maildir relay:"); n != 1 || !strings.Contains(logs.String(), "made durable by one syncfs") {
		t.Errorf("the log says %d times how batches are synced, want once, syncfs:\n%s", n, logs.String())
	}
	if ok, fs := syncfsHonoured(filepath.Join(local, "missing")); ok || !strings.Contains(fs, "statfs") {
		t.Errorf("a statfs that fails: honoured %v (%s), want each file synced", ok, fs)
	}

	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP the FUSE half: %v", err)
	}
	mnt := t.TempDir()
	pm, err := powerfs.New().Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Unmount()
	logs.Reset()
	if ok, fs := syncfsHonoured(mnt); ok || fs != "fuse" {
		t.Errorf("powerfs: honoured %v, type %q; want false, fuse", ok, fs)
	}
	m, err = NewMaildir(filepath.Join(mnt, "outbox"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.syncFS != nil {
		t.Error("syncfs kept on a FUSE file system")
	}
	if n := strings.Count(logs.String(), "maildir relay:"); n != 1 || !strings.Contains(logs.String(), "each file fsynced") || !strings.Contains(logs.String(), "fs=fuse") {
		t.Errorf("the log says %d times how batches are synced, want once, each file, fuse:\n%s", n, logs.String())
	}
	// A batch of three or more goes through syncAll: each file synced.
	var synced atomic.Int32 // syncAll syncs files at once
	m.syncFile = func(f *os.File) error { synced.Add(1); return f.Sync() }
	msgs := []Outgoing{{From: "a@src.test", To: []string{"x@src.test", "y@src.test", "z@src.test"}, Data: testMsg(1).Data}}
	if err := m.SendBatch(t.Context(), msgs)[0]; err != nil {
		t.Fatal(err)
	}
	if n := synced.Load(); n != 3 {
		t.Errorf("%d files synced of a batch of 3 on FUSE, want each", n)
	}
}
