package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// syncTrace records a Maildir's durability steps in order: "syncfs",
// "sync <name>" (one file), "rename <name>", "syncdir". At a syncfs it also
// notes the files then complete in tmp/, and at the directory sync those in
// new/, so that a test can tell what each step covered.
type syncTrace struct {
	mu        sync.Mutex
	steps     []string
	atSyncfs  []string // complete files in tmp/ at the last syncfs
	newAtSync []string // files in new/ at the last directory sync
}

func (s *syncTrace) add(step string) {
	s.mu.Lock()
	s.steps = append(s.steps, step)
	s.mu.Unlock()
}

// tracedMaildir is a Maildir whose steps go to tr. Where the system has no
// syncfs, a stand-in that does nothing takes its place, so that the order
// of the batch's steps is still checked. fsErr, if set, is what syncfs
// returns instead of syncing.
func tracedMaildir(t *testing.T, tr *syncTrace, fsErr error) (*Maildir, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outbox")
	m, err := NewMaildir(dir, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	realFS := m.syncFS
	if realFS == nil {
		realFS = func(*os.File) error { return nil }
	}
	m.syncFS = func(tmp *os.File) error {
		complete := completeFiles(t, filepath.Join(dir, "tmp"))
		tr.mu.Lock()
		tr.steps = append(tr.steps, "syncfs")
		tr.atSyncfs = complete
		tr.mu.Unlock()
		if fsErr != nil {
			return fsErr
		}
		return realFS(tmp)
	}
	m.syncFile = func(f *os.File) error {
		tr.add("sync " + filepath.Base(f.Name()))
		return f.Sync()
	}
	m.rename = func(oldpath, newpath string) error {
		tr.add("rename " + filepath.Base(oldpath))
		return os.Rename(oldpath, newpath)
	}
	m.syncDir = func(d string) error {
		names := fileNames(t, d)
		tr.mu.Lock()
		tr.steps = append(tr.steps, "syncdir")
		tr.newAtSync = names
		tr.mu.Unlock()
		return durable.SyncDir(d)
	}
	return m, dir
}

// completeFiles lists the files in dir that hold a whole test message.
func completeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	for _, name := range fileNames(t, dir) {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			// Renamed into new/ between the listing and the read by a
			// batch running beside this one (Concurrency > 1), after
			// that batch's own sync: not this sync's to count.
			continue
		}
		if err != nil {
			t.Error(err)
		}
		if bytes.HasSuffix(raw, []byte("Grüße\n")) {
			names = append(names, name)
		}
	}
	return names
}

func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Error(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// batchOf makes n messages with rcpts[i] recipients each.
func batchOf(rcpts ...int) []Outgoing {
	var msgs []Outgoing
	for i, n := range rcpts {
		var to []string
		for j := range n {
			to = append(to, fmt.Sprintf("m%d.%d@src.test", i, j))
		}
		m := testMsg(i, to...)
		msgs = append(msgs, Outgoing{From: m.From, To: m.To, Data: m.Data})
	}
	return msgs
}

// TestMaildirBatchSyncOrder: a batch of several files is made durable by
// one syncfs, run once every file is complete in tmp/ and before the first
// rename; new/ is synced after the last rename, as the last step before
// SendBatch reports the messages delivered (the Maildir protocol: a file
// reaches new/ only complete and durable; docs/design.md §1, Outbound). A
// batch of one or two files has each file synced instead, in the same
// order.
func TestMaildirBatchSyncOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rcpts  []int
		syncfs bool
		nfiles int
	}{
		{"one file", []int{1}, false, 1},
		{"two files", []int{2}, false, 2},
		{"three files", []int{1, 1, 1}, true, 3},
		{"a full batch", slices.Repeat([]int{1}, maildirBatch), true, maildirBatch},
		{"several recipients", []int{1, 3, 2, 1}, true, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr syncTrace
			m, dir := tracedMaildir(t, &tr, nil)
			for i, err := range m.SendBatch(t.Context(), batchOf(tc.rcpts...)) {
				if err != nil {
					t.Errorf("message %d: %v", i, err)
				}
			}
			delivered := fileNames(t, filepath.Join(dir, "new"))
			if len(delivered) != tc.nfiles {
				t.Fatalf("new/ holds %d files, want %d", len(delivered), tc.nfiles)
			}
			if tmp := fileNames(t, filepath.Join(dir, "tmp")); len(tmp) != 0 {
				t.Errorf("tmp/ still holds %q", tmp)
			}

			// The steps, in order: the syncs (one syncfs, or each file's),
			// every rename, the directory sync.
			var syncs, renames []string
			if tc.syncfs {
				syncs = []string{"syncfs"}
			}
			for _, name := range delivered {
				if !tc.syncfs {
					syncs = append(syncs, "sync "+name)
				}
				renames = append(renames, "rename "+name)
			}
			steps := slices.Clone(tr.steps)
			if len(steps) != len(syncs)+len(renames)+1 {
				t.Fatalf("steps %q, want %d syncs, %d renames, one directory sync", steps, len(syncs), len(renames))
			}
			// Files are synced concurrently and renamed in the batch's order:
			// compare each group as a set.
			slices.Sort(steps[:len(syncs)])
			slices.Sort(steps[len(syncs) : len(syncs)+len(renames)])
			want := append(append(syncs, renames...), "syncdir")
			if !slices.Equal(steps, want) {
				t.Errorf("steps %q\nwant %q", tr.steps, want)
			}
			if tc.syncfs {
				slices.Sort(tr.atSyncfs)
				if !slices.Equal(tr.atSyncfs, delivered) {
					t.Errorf("complete in tmp/ at the syncfs: %q\nwant every file delivered: %q", tr.atSyncfs, delivered)
				}
			}
			slices.Sort(tr.newAtSync)
			if !slices.Equal(tr.newAtSync, delivered) {
				t.Errorf("in new/ at its sync: %q\nwant every file delivered: %q", tr.newAtSync, delivered)
			}
		})
	}
}

// TestMaildirSyncfsFailure: when the syncfs fails, any file of the batch
// may be short on disk, so every message of the batch gets a temporary
// error (the queue keeps its row and retries it), nothing is renamed into
// new/, and tmp/ is left clean.
func TestMaildirSyncfsFailure(t *testing.T) {
	var tr syncTrace
	m, dir := tracedMaildir(t, &tr, errors.New("writeback failed"))
	msgs := batchOf(1, 2, 1)
	for i, err := range m.SendBatch(t.Context(), msgs) {
		if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "syncfs: writeback failed") {
			t.Errorf("message %d after a failed syncfs: %v, want a temporary syncfs error", i, err)
		}
	}
	if !slices.Equal(tr.steps, []string{"syncfs"}) {
		t.Errorf("steps %q, want only the failed syncfs: no rename, no directory sync", tr.steps)
	}
	for _, sub := range []string{"new", "tmp"} {
		if names := fileNames(t, filepath.Join(dir, sub)); len(names) != 0 {
			t.Errorf("%s/ holds %q after a failed syncfs, want nothing", sub, names)
		}
	}

	// A message that fails on its own (a bare LF) fails alone; the others
	// of the batch are delivered.
	var tr2 syncTrace
	m, dir = tracedMaildir(t, &tr2, nil)
	msgs = batchOf(1, 1, 1)
	msgs[1].Data = []byte("Subject: x\n\nbare LF\n")
	errs := m.SendBatch(t.Context(), msgs)
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Errorf("errors %v, want only message 1's", errs)
	}
	if names := fileNames(t, filepath.Join(dir, "new")); len(names) != 2 {
		t.Errorf("new/ holds %d files, want the other two", len(names))
	}
}
