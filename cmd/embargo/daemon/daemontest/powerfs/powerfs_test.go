package powerfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mount mounts a new disk at a fresh directory, or skips the test with the
// reason this machine cannot.
func mount(t *testing.T) (*Disk, *Mount, string) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("SKIP power-loss file system: %v", err)
	}
	d := New()
	dir := t.TempDir()
	m, err := d.Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	return d, m, dir
}

// cut cuts the power and mounts what survived at the same directory.
func cut(t *testing.T, d *Disk, m *Mount, dir string, rng *rand.Rand) (*Mount, CutReport) {
	t.Helper()
	r, err := m.Cut(rng)
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	m2, err := d.Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Unmount() })
	return m2, r
}

func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

// TestCutDropsUnsynced: what was written and not synced is gone after a cut;
// what was synced (with its directory) stays; a synced file whose name was
// never synced is gone, one whose data was never synced is empty.
func TestCutDropsUnsynced(t *testing.T) {
	d, m, dir := mount(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	writeFile(t, p("kept"), []byte("synced"), true)
	writeFile(t, p("empty"), []byte("never synced"), false)
	syncDir(t, dir)
	writeFile(t, p("nameless"), []byte("synced, directory not"), true)
	f, err := os.OpenFile(p("kept"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(" and more")
	f.Close()
	if got := readFile(p("kept")); got != "synced and more" {
		t.Fatalf("before the cut: %q", got)
	}

	m, r := cut(t, d, m, dir, nil)
	if got := readFile(p("kept")); got != "synced" {
		t.Errorf("kept after the cut: %q, want %q", got, "synced")
	}
	if got := readFile(p("empty")); got != "" {
		t.Errorf("a file never synced, its name synced: %q, want empty", got)
	}
	if _, err := os.Stat(p("nameless")); !os.IsNotExist(err) {
		t.Errorf("a file whose directory was never synced survived: %v", err)
	}
	if r.Unsynced != int64(len("never synced")+len(" and more")) || len(r.LostNames) != 1 || r.DirtyFiles != 2 {
		t.Errorf("report %+v", r)
	}

	// Written again, synced and renamed over with the directory synced: kept.
	writeFile(t, p("tmp"), []byte("new"), true)
	if err := os.Rename(p("tmp"), p("kept")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dir)
	os.Remove(p("empty")) // not synced: back after the cut
	cut(t, d, m, dir, nil)
	if got := readFile(p("kept")); got != "new" {
		t.Errorf("renamed and synced: %q", got)
	}
	if _, err := os.Stat(p("tmp")); !os.IsNotExist(err) {
		t.Errorf("the rename's old name is back: %v", err)
	}
	if _, err := os.Stat(p("empty")); err != nil {
		t.Errorf("an unlink whose directory was not synced stuck: %v", err)
	}
}

// TestMmapSeesUnsynced: a shared read-only mapping (as bbolt reads its file)
// shows data written and not synced, and what a later write changed. The
// mapping is read by a child process: a page fault on a FUSE mount served by
// the same Go process can deadlock with the garbage collector.
func TestMmapSeesUnsynced(t *testing.T) {
	_, _, dir := mount(t)
	if out, err := runChild(t, "mmap", dir); err != nil || out != "ok\n" {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func childMmap(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "db"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	page := bytes.Repeat([]byte{'a'}, 2*PageSize)
	if _, err := f.WriteAt(page, 0); err != nil {
		return err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 2*PageSize, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return err
	}
	defer syscall.Munmap(mem)
	if !bytes.Equal(mem, page) {
		return errors.New("the mapping does not show the unsynced write")
	}
	if _, err := f.WriteAt([]byte("bbbb"), PageSize); err != nil {
		return err
	}
	if got := string(mem[PageSize : PageSize+5]); got != "bbbba" {
		return fmt.Errorf("the mapping after a second write: %q", got)
	}
	return nil
}

// TestTornCut: a torn cut keeps some unsynced pages and drops others, each
// whole; a plain cut keeps none.
func TestTornCut(t *testing.T) {
	d, m, dir := mount(t)
	p := filepath.Join(dir, "f")
	writeFile(t, p, bytes.Repeat([]byte{'0'}, 64*PageSize), true)
	syncDir(t, dir)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{'1'}, 64*PageSize), 0)
	f.Close()
	_, r := cut(t, d, m, dir, rand.New(rand.NewPCG(1, 2)))
	b, _ := os.ReadFile(p)
	ones := bytes.Count(b, []byte{'1'})
	if ones%PageSize != 0 || ones == 0 || ones == len(b) || len(b) != 64*PageSize {
		t.Errorf("torn cut kept %d bytes of the new data out of %d (want whole pages, some but not all)", ones, len(b))
	}
	if r.TornPages*PageSize != ones || r.TornPages+r.DroppedPages != 64 {
		t.Errorf("report %+v, %d new bytes kept", r, ones)
	}
}

// TestFailAtSync: the power fails at a chosen fsync: it persists nothing,
// and it and every later operation wait for the cut, which answers them EIO.
func TestFailAtSync(t *testing.T) {
	d, m, dir := mount(t)
	p := filepath.Join(dir, "f")
	writeFile(t, p, []byte("one"), true)
	syncDir(t, dir)
	d.FailAtSync(2)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(" two")
	if err := f.Sync(); err != nil {
		t.Fatalf("the first sync failed: %v", err)
	}
	f.WriteString(" three")
	synced, wrote := make(chan error, 1), make(chan error, 1)
	go func() { synced <- f.Sync() }()
	for !d.Failed() {
		time.Sleep(time.Millisecond)
	}
	go func() { _, err := f.WriteString(" four"); wrote <- err }()
	select {
	case err := <-synced:
		t.Fatalf("the sync at the power failure returned before the cut: %v", err)
	case err := <-wrote:
		t.Fatalf("a write after the power failure returned before the cut: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	r, err := m.Cut(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-synced; !errors.Is(err, syscall.EIO) {
		t.Errorf("the sync at the power failure: %v, want EIO", err)
	}
	if err := <-wrote; !errors.Is(err, syscall.EIO) {
		t.Errorf("a write after the power failure: %v, want EIO", err)
	}
	f.Close()
	m2, err := d.Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Unmount() })
	if got := readFile(p); got != "one two" {
		t.Errorf("after the failure: %q, want %q (cut: %+v)", got, "one two", r)
	}
}

// TestIgnoreSync: a disk that lies about fsync loses synced data.
func TestIgnoreSync(t *testing.T) {
	d, m, dir := mount(t)
	d.IgnoreSync(true)
	writeFile(t, filepath.Join(dir, "f"), []byte("synced"), true)
	syncDir(t, dir)
	cut(t, d, m, dir, nil)
	if _, err := os.Stat(filepath.Join(dir, "f")); !os.IsNotExist(err) {
		t.Errorf("with IgnoreSync, a synced file survived: %v", err)
	}
	if d.Syncs() != 2 {
		t.Errorf("%d syncs counted, want 2", d.Syncs())
	}
}

// TestBoltSurvivesCut: a child process commits bbolt transactions on the
// file system, printing each count once its commit returned, until it is
// killed at a random moment and the power is cut, torn; the next child finds
// every commit it reported (and at most the one in flight more), and the file
// passes bbolt's check. Then IgnoreSync shows the test can fail.
func TestBoltSurvivesCut(t *testing.T) {
	d, m, dir := mount(t)
	rng := rand.New(rand.NewPCG(3, 4))
	committed := 0
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "POWERFS_CHILD=bolt", "POWERFS_DIR="+dir, fmt.Sprint("POWERFS_MIN=", committed))
		out := &lines{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The kill falls at a random moment of the commits, counted from
		// the child's first line: a loaded machine can take longer than
		// the whole window to start a race-built child.
		out.waitLine(t, round)
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		got := out.last()
		n, err := strconv.Atoi(got)
		if err != nil {
			t.Fatalf("round %d: the child said %q", round, out.String())
		}
		committed = n
		var r CutReport
		m, r = cut(t, d, m, dir, rng)
		t.Logf("round %d: %d commits reported; cut %+v", round, n, r)
	}
	if committed < 20 {
		t.Errorf("only %d commits: the test proves little", committed)
	}

	// The control broken: a disk that ignores fsync loses reported commits.
	d.IgnoreSync(true)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POWERFS_CHILD=bolt", "POWERFS_DIR="+dir, fmt.Sprint("POWERFS_MIN=", committed))
	out := &lines{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.waitLine(t, -1)
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	m, _ = cut(t, d, m, dir, nil)
	d.IgnoreSync(false)
	reported, _ := strconv.Atoi(out.last())
	out2, err := runChild(t, "bolt-count", dir)
	// The last round's commit in flight at its kill may have been synced.
	got, _ := strconv.Atoi(strings.TrimSpace(out2))
	if err != nil || got < committed || got > committed+1 || reported <= got {
		t.Errorf("with IgnoreSync, %d commits reported, the store after the cut says %q (%v), want %d or one more", reported, out2, err, committed)
	}
}

// childBolt opens the store, checks it holds at least POWERFS_MIN keys and
// at most one more, and commits until killed, printing each key count.
func childBolt(dir string) error {
	path := filepath.Join(dir, "bolt.db")
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	if statErr != nil {
		d, err := os.Open(dir) // bbolt does not sync the directory of a new file
		if err == nil {
			err = d.Sync()
			d.Close()
		}
		if err != nil {
			return err
		}
	}
	want, _ := strconv.Atoi(os.Getenv("POWERFS_MIN"))
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("b")); b != nil {
			n = b.Stats().KeyN
		}
		if n < want || n > want+1 {
			return fmt.Errorf("%d keys after the cut, %d were reported committed", n, want)
		}
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	fmt.Println(n)
	for {
		err := db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists([]byte("b"))
			return b.Put(fmt.Appendf(nil, "k%06d", n), bytes.Repeat([]byte{'v'}, 1000+n%7*1500))
		})
		if err != nil {
			return err
		}
		n++
		fmt.Println(n)
	}
}

// TestMain runs a child's part when the test binary is started as one.
func TestMain(m *testing.M) {
	var err error
	switch os.Getenv("POWERFS_CHILD") {
	case "":
		os.Exit(m.Run())
	case "mmap":
		if err = childMmap(os.Getenv("POWERFS_DIR")); err == nil {
			fmt.Println("ok")
		}
	case "bolt-full":
		err = childBoltFull(os.Getenv("POWERFS_DIR"))
	case "bolt":
		err = childBolt(os.Getenv("POWERFS_DIR"))
	case "bolt-count":
		var db *bolt.DB
		if db, err = bolt.Open(filepath.Join(os.Getenv("POWERFS_DIR"), "bolt.db"), 0o600, &bolt.Options{ReadOnly: true}); err == nil {
			db.View(func(tx *bolt.Tx) error {
				fmt.Println(tx.Bucket([]byte("b")).Stats().KeyN)
				return nil
			})
			db.Close()
		}
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(t *testing.T, op, dir string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POWERFS_CHILD="+op, "POWERFS_DIR="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lines is a child's output, safe to read while it writes.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitLine waits up to a minute for the child's first complete line (its
// count, printed once the store is open and checked).
func (l *lines) waitLine(t *testing.T, round int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(l.String(), "\n"); {
		if time.Now().After(deadline) {
			t.Fatalf("round %d: the child printed nothing in a minute: %q", round, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// last is the last complete line.
func (l *lines) last() string {
	s := strings.TrimSuffix(l.String(), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
