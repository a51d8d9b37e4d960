package daemon

import (
	"path/filepath"
	"testing"
)

// TestFreeSpaceCache: a flood of MAIL commands costs one statfs per second,
// not one per command; statfs reads a real file system and reports a
// missing directory as an error (which smtpd logs and accepts).
func TestFreeSpaceCache(t *testing.T) {
	calls := 0
	f := &freeSpace{dir: "/x", stat: func(string) (uint64, error) { calls++; return 42, nil }}
	for range 1000 {
		if n, err := f.get(); n != 42 || err != nil {
			t.Fatalf("get() = %d, %v", n, err)
		}
	}
	if calls != 1 {
		t.Errorf("%d stat calls for 1000 MAILs within a second, want 1", calls)
	}

	dir := t.TempDir()
	if n, err := statfsFree(dir); err != nil || n == 0 {
		t.Errorf("statfsFree(%s) = %d, %v; want the bytes free", dir, n, err)
	}
	if _, err := statfsFree(filepath.Join(dir, "missing")); err == nil {
		t.Error("statfsFree of a missing directory: no error")
	}
}
