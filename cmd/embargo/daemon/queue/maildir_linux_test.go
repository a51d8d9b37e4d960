//go:build linux

package queue

import (
	"os"
	"path/filepath"
	"testing"
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
