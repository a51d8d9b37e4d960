package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v, %v", dir, st, err)
	}
	if err := MkdirAll(dir); err != nil { // exists: the parent synced again
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(root, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}
