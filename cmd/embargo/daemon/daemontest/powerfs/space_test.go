package powerfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func statfsFree(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestCapacity: writes beyond the capacity fail with ENOSPC, statfs reports
// what is free, ftruncate makes a sparse file, and a truncation or a larger
// capacity frees space at once.
func TestCapacity(t *testing.T) {
	d, _, dir := mount(t)
	d.SetCapacity(16 * PageSize)
	if got := statfsFree(t, dir); got != 16*PageSize {
		t.Fatalf("statfs of an empty disk: %d free, want %d", got, 16*PageSize)
	}
	f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil || d.Used() != 0 {
		t.Fatalf("a sparse ftruncate: %v, %d bytes used", err, d.Used())
	}
	page := bytes.Repeat([]byte("x"), PageSize)
	n := 0
	for ; n < 20; n++ {
		if _, err = f.WriteAt(page, int64(n)*PageSize); err != nil {
			break
		}
	}
	if n != 16 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("%d pages written, then %v; want 16, then ENOSPC", n, err)
	}
	if got := statfsFree(t, dir); got != 0 {
		t.Errorf("statfs of a full disk: %d free", got)
	}
	if _, err := f.WriteAt([]byte("over"), 0); err != nil {
		t.Errorf("overwriting an allocated page of a full disk: %v", err)
	}
	if err := f.Truncate(8 * PageSize); err != nil {
		t.Fatal(err)
	}
	if got := statfsFree(t, dir); got != 8*PageSize {
		t.Errorf("after truncating to half: %d free, want %d", got, 8*PageSize)
	}
	d.SetCapacity(32 * PageSize)
	if got := statfsFree(t, dir); got != 24*PageSize {
		t.Errorf("with a larger capacity: %d free, want %d", got, 24*PageSize)
	}
}

// TestBoltFull: a bbolt commit on a full disk fails with ENOSPC and is
// rolled back; the database stays usable in the same process, and once
// there is room the next commits succeed and all of them are there after
// a reopen (docs/threat-model.md A7). bbolt runs in a child: a page fault
// on its mmap in the process that serves the file system would stop the
// Go runtime's stop-the-world with the server's goroutines.
func TestBoltFull(t *testing.T) {
	d, _, dir := mount(t)
	d.SetCapacity(1 << 20)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POWERFS_CHILD=bolt-full", "POWERFS_DIR="+dir)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	out := bufio.NewScanner(outp)
	line := func() string {
		if !out.Scan() {
			t.Fatalf("the child said nothing more: %v", out.Err())
		}
		return out.Text()
	}
	full := line()
	var committed int
	if _, err := fmt.Sscanf(full, "full %d", &committed); err != nil || !strings.Contains(full, "no space left on device") {
		t.Fatalf("the child: %q, want its commits, then ENOSPC", full)
	}
	if after := line(); after != fmt.Sprint("keys ", committed) {
		t.Fatalf("after the failed commit the child's database holds %q, want %d keys", after, committed)
	}
	t.Logf("%s (%d bytes used)", full, d.Used())
	d.SetCapacity(d.Used() + 4<<20)
	fmt.Fprintln(in, "room")
	if got, want := line(), fmt.Sprint("reopened ", committed+5, " keys, check ok"); got != want {
		t.Errorf("with room again the child said %q, want %q", got, want)
	}
}

// childBoltFull fills the disk with bbolt commits, says how many succeeded
// and what the failed one met, waits for room, commits five more, and
// checks the database after a reopen.
func childBoltFull(dir string) error {
	path := filepath.Join(dir, "bolt.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	put := func(i int) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put(fmt.Appendf(nil, "%06d", i), bytes.Repeat([]byte{byte(i)}, 8<<10))
		})
	}
	count := func() (n int) {
		db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket([]byte("b")); b != nil {
				n = b.Stats().KeyN
			}
			return nil
		})
		return n
	}
	n := 0
	for ; n < 10000; n++ {
		if err = put(n); err != nil {
			break
		}
	}
	fmt.Printf("full %d: %v\n", n, err)
	fmt.Println("keys", count())
	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := n; i < n+5; i++ {
		if err := put(i); err != nil {
			return fmt.Errorf("with room again, commit %d: %w", i, err)
		}
	}
	if err := db.Close(); err != nil {
		return err
	}
	if db, err = bolt.Open(path, 0o600, nil); err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			return e
		}
		fmt.Println("reopened", count(), "keys, check ok")
		return nil
	})
}
