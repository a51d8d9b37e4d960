//go:build linux

package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

// The child's environment in TestMaildirPowerLoss: the store, the Maildir,
// and "drain" for the last run, which ends when the queue is empty.
// EMBARGO_MAILDIR_FORCE_SYNCFS=1 makes the child's Maildir use syncfs(2)
// although its file system does not honour it: the test must then fail.
const (
	mdChildStore   = "EMBARGO_MAILDIR_CHILD_STORE"
	mdChildDir     = "EMBARGO_MAILDIR_CHILD_DIR"
	mdChildDrain   = "EMBARGO_MAILDIR_CHILD_DRAIN"
	mdForceSyncfs  = "EMBARGO_MAILDIR_FORCE_SYNCFS"
	mdRows         = 400
	mdConcurrency  = 2
	mdCuts         = 3
	mdMessageBytes = 9000 // three pages: a torn cut can keep part of a file
)

// TestMaildirPowerLoss is the Maildir relay under power loss
// (docs/threat-model.md A3): the queue's worker runs in a child process
// with its store and its Maildir on powerfs, a FUSE file system that keeps
// what was not fsynced in memory and discards it at a cut. syncfs(2) never
// reaches a FUSE server, so there the Maildir must sync each file
// (maildir_linux.go). The child delivers 400 rows of 9 KB, one recipient
// each, and is killed and the power cut three times: at a random instant,
// at a random fsync (powerfs.FailAtSync), and torn (a random part of the
// unsynced pages kept). After each cut: every row the store no longer holds
// (delivered, crossed off) has its complete file in new/; no file in new/
// is partial; the files the run put in new/ whose rows are still queued
// (to be sent again: duplicates) are at most MaxClaimed. A last run drains the queue: every
// message is in new/, complete, and at most MaxClaimed per cut twice.
// EMBARGO_POWERLOSS_SEED sets the random choices (logged).
func TestMaildirPowerLoss(t *testing.T) {
	if os.Getenv(mdChildStore) != "" {
		maildirChild(t)
		return
	}
	if testing.Short() {
		t.Skip("kills a child process and cuts the power three times")
	}
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the power-loss file system needs FUSE: %v", err)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EMBARGO_POWERLOSS_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (EMBARGO_POWERLOSS_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))

	local := filepath.Join(t.TempDir(), "embargo.db")
	db, err := bolt.Open(local, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := Init(tx); err != nil {
			return err
		}
		msgs := make([]Msg, mdRows)
		for i := range msgs {
			msgs[i] = powerMsg(i)
		}
		return Enqueue(tx, time.Now(), msgs...)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	disk := powerfs.New()
	mnt := t.TempDir()
	m, err := disk.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	store, outbox := filepath.Join(mnt, "embargo.db"), filepath.Join(mnt, "data", "outbox")
	if err := copySynced(local, store); err != nil {
		t.Fatal(err)
	}
	env := []string{mdChildStore + "=" + store, mdChildDir + "=" + outbox}
	before := map[string]int{} // complete files by Message-ID at the last cut
	for cut := range mdCuts {
		cmd, out := maildirChildProcess(t, env)
		// Cut once the child has delivered some more.
		target := countNew(outbox) + mdRows/(mdCuts+2)
		for end := time.Now().Add(30 * time.Second); countNew(outbox) < target && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
		if got := countNew(outbox); got < target {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("cut %d: %d files in new/, want %d:\n%s", cut+1, got, target, out)
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if cut == 1 {
			disk.FailAtSync(1 + rng.IntN(8))
			for end := time.Now().Add(5 * time.Second); !disk.Failed() && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
		}
		var tear *rand.Rand
		if cut == 2 {
			tear = rng
		}
		r, err := m.KillAndCut(cmd, tear)
		if err != nil {
			t.Fatal(err)
		}
		if m, err = disk.Mount(mnt); err != nil {
			t.Fatal(err)
		}
		before = checkCut(t, cut, r, tear != nil, store, outbox, before)
	}

	cmd, out := maildirChildProcess(t, append(env, mdChildDrain+"=1"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the last run: %v\n%s", err, out)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the last run did not drain the queue:\n%s", out)
	}
	if q := queuedIDs(t, store); len(q) != 0 {
		t.Fatalf("%d rows left after the last run", len(q))
	}
	checkDrained(t, outbox)
}

// checkCut checks the store and the Maildir after cut: every row crossed
// off has its complete file in new/, no file in new/ is partial, and the
// files this run delivered whose rows are still queued are at most
// MaxClaimed. before holds the complete files by Message-ID at the last
// cut; checkCut returns the current ones.
func checkCut(t *testing.T, cut int, r powerfs.CutReport, torn bool, store, outbox string, before map[string]int) map[string]int {
	t.Helper()
	queued := queuedIDs(t, store)
	files := maildirFiles(t, outbox)
	lost, unrecorded := 0, 0
	for i := range mdRows {
		id := powerID(i)
		switch _, inQueue := queued[id]; {
		case !inQueue && files.complete[id] == 0:
			lost++
			if lost <= 5 {
				t.Errorf("cut %d: %s is crossed off the queue and not in new/", cut+1, id)
			}
		case inQueue && files.complete[id] > before[id]:
			unrecorded++ // delivered by this run, not recorded
		}
	}
	t.Logf("cut %d (torn %v): %d unsynced bytes, %d pages dropped, %d kept torn; %d rows queued, %d files in new/, %d partial, %d delivered by this run and still queued",
		cut+1, torn, r.Unsynced, r.DroppedPages, r.TornPages, len(queued), files.total, files.partial, unrecorded)
	if lost > 0 {
		t.Errorf("cut %d: %d messages crossed off the queue are missing from new/", cut+1, lost)
	}
	if files.partial > 0 {
		t.Errorf("cut %d: %d partial files in new/ (a reader would take them for mail)", cut+1, files.partial)
	}
	if unrecorded > DefaultMaxClaimed {
		t.Errorf("cut %d: %d files delivered into new/ by this run whose rows are still queued, want at most %d (the rows claimed)", cut+1, unrecorded, DefaultMaxClaimed)
	}
	return files.complete
}

// checkDrained checks the Maildir once the queue is empty: every message
// delivered, complete, again at most MaxClaimed copies per cut.
func checkDrained(t *testing.T, outbox string) {
	t.Helper()
	files := maildirFiles(t, outbox)
	dups := 0
	for i := range mdRows {
		switch n := files.complete[powerID(i)]; {
		case n == 0:
			t.Errorf("%s never delivered", powerID(i))
		case n > 1+mdCuts:
			t.Errorf("%s delivered %d times", powerID(i), n)
		default:
			dups += n - 1
		}
	}
	if files.partial > 0 {
		t.Errorf("%d partial files in new/ after the last run", files.partial)
	}
	if dups > mdCuts*DefaultMaxClaimed {
		t.Errorf("%d copies delivered twice, want at most %d (the rows claimed at each cut)", dups, mdCuts*DefaultMaxClaimed)
	}
	t.Logf("%d messages, %d files in new/, %d delivered again after %d power cuts", mdRows, files.total, dups, mdCuts)
}

// maildirChild is the worker of TestMaildirPowerLoss: until it is killed,
// or, draining, until the queue is empty.
func maildirChild(t *testing.T) {
	db, err := bolt.Open(os.Getenv(mdChildStore), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	md, err := NewMaildir(os.Getenv(mdChildDir), RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(mdForceSyncfs) == "1" {
		md.syncFS = syncFS // as if syncfs made the files durable
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := New(db, md, Options{Concurrency: mdConcurrency, MinBackoff: 20 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for os.Getenv(mdChildDrain) == "" || len(listRows(t, db)) > 0 {
		select {
		case err := <-done:
			t.Fatalf("the worker stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// maildirChildProcess starts this test in a child process with env.
func maildirChildProcess(t *testing.T, env []string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMaildirPowerLoss$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

func powerID(i int) string { return fmt.Sprintf("<%d.power@embargo.test>", i) }

// powerMsg is message i: mdMessageBytes long, its last line naming it.
func powerMsg(i int) Msg {
	var b strings.Builder
	fmt.Fprintf(&b, "From: security@embargo.test\r\nTo: member%d@src.test\r\nSubject: copy %d\r\nMessage-ID: %s\r\n\r\n", i, i, powerID(i))
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < mdMessageBytes-len(line)-40 {
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "END OF MESSAGE %d\r\n", i)
	return Msg{From: "security-bounces@embargo.test", To: []string{fmt.Sprintf("member%d@src.test", i)},
		Data: []byte(b.String()), MessageID: powerID(i), Kind: "report-copy", Incident: "SEC-2026-0001"}
}

// powerFile is what the Maildir writes for message i: its envelope lines,
// then the message with LF line ends.
func powerFile(i int) []byte {
	m := powerMsg(i)
	head := fmt.Sprintf("Return-Path: <%s>\nDelivered-To: %s\n", m.From, m.To[0])
	return append([]byte(head), bytes.ReplaceAll(m.Data, []byte("\r\n"), []byte("\n"))...)
}

// countNew counts the files in new/ (0 while it does not exist).
func countNew(outbox string) int {
	ents, _ := os.ReadDir(filepath.Join(outbox, "new"))
	return len(ents)
}

type mdFiles struct {
	complete       map[string]int // Message-ID → complete files
	total, partial int
}

var powerIDRE = regexp.MustCompile(`END OF MESSAGE (\d+)\n$`)

// maildirFiles reads every file in new/: complete ones (exactly what the
// Maildir writes for their message) by Message-ID, and the others.
func maildirFiles(t *testing.T, outbox string) mdFiles {
	t.Helper()
	f := mdFiles{complete: map[string]int{}}
	ents, err := os.ReadDir(filepath.Join(outbox, "new"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		f.total++
		raw, err := os.ReadFile(filepath.Join(outbox, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sm := powerIDRE.FindSubmatch(raw)
		if sm == nil {
			f.partial++
			continue
		}
		i, _ := strconv.Atoi(string(sm[1]))
		if !bytes.Equal(raw, powerFile(i)) {
			f.partial++
			continue
		}
		f.complete[powerID(i)]++
	}
	return f
}

// queuedIDs returns the Message-IDs of the rows in the store at path, read
// in a copy (bbolt maps its file, and a page fault on a FUSE mount this
// process serves can deadlock it), after bbolt's consistency check.
func queuedIDs(t *testing.T, path string) map[string]bool {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "embargo.db")
	if err := copySynced(path, cp); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(cp, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("the store after the cut: %v", err)
	}
	defer db.Close()
	ids := map[string]bool{}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("bbolt check: %w", err)
		}
		rows, err := List(tx)
		for _, r := range rows {
			ids[r.MessageID] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// copySynced copies src to dst and syncs dst and its directory.
func copySynced(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Sync(), out.Close()); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(dst))
}
