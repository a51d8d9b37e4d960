package listd

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// waitWaiting waits until n transactions wait for the writer.
func waitWaiting(t *testing.T, s *Service, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.sh.writer.mu.Lock()
		w := len(s.sh.writer.waiting)
		s.sh.writer.mu.Unlock()
		if w >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transactions waiting, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// stored counts the archived messages and the queue rows.
func stored(t *testing.T, db *bolt.DB) (msgs, rows int, ids []string) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		for _, inc := range incs {
			recs, _ := incidentdb.Messages(tx, inc.ID)
			msgs += len(recs)
			for _, r := range recs {
				ids = append(ids, r.MessageID)
			}
		}
		rs, _ := queue.List(tx)
		rows = len(rs)
		return nil
	})
	return msgs, rows, ids
}

// report is a new report from rep-N@out.test, its Message-ID "rN@out.test".
func report(n int) (Envelope, []byte) {
	from := fmt.Sprintf("rep-%d@out.test", n)
	return Envelope{From: from, To: []string{"security@ex.test"}},
		plainMail(from, "security@ex.test", "report", fmt.Sprintf("r%d@out.test", n), "Steps to reproduce.\n")
}

// TestGroupCommitFails: the messages that wait while a commit runs are
// committed together in the next one; when that commit fails, each of them
// gets the error (451 for its client) and none of them is stored, while the
// message committed before stays.
func TestGroupCommitFails(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	release := make(chan struct{})
	var sizes []int
	var mu sync.Mutex
	s.SetTestHooks(TestHooks{GroupCommit: func(tx *bolt.Tx, n int) error {
		mu.Lock()
		sizes = append(sizes, n)
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release // the others queue up meanwhile
			return nil
		}
		return errors.New("injected: fdatasync: input/output error")
	}})
	errs := handleBehindFirst(t, s, 5, func() int { mu.Lock(); defer mu.Unlock(); return len(sizes) }, release)
	if fmt.Sprint(sizes) != "[1 4]" {
		t.Fatalf("group sizes %v, want [1 4]: the four that waited share one commit", sizes)
	}
	if errs[0] != nil {
		t.Fatalf("the first message: %v", errs[0])
	}
	for i := 1; i < 5; i++ {
		var st interface{ SMTPStatus() (int, string) }
		if errs[i] == nil || errors.As(errs[i], &st) {
			t.Errorf("message %d of the failed group: %v, want a storage error (451)", i, errs[i])
		}
	}
	msgs, rows, ids := stored(t, db)
	if msgs != 1 || rows != 3 || len(ids) != 1 || ids[0] != "r0@out.test" {
		t.Fatalf("stored %d messages %v and %d queue rows; want the first message alone and its 3 rows", msgs, ids, rows)
	}
}

// TestGroupCommitOneFails: a message whose transaction fails (or panics)
// in a group is taken out and the others of the group run again without
// it, in one commit: each gets its own outcome, the others are stored once.
func TestGroupCommitOneFails(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	release := make(chan struct{})
	var sizes []int
	var mu sync.Mutex
	s.SetTestHooks(TestHooks{
		BeforeCommit: func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("messages")).Cursor()
			_, last := c.Last()
			switch {
			case bytes.Contains(last, []byte("r2@out.test")):
				return errors.New("injected failure of one message")
			case bytes.Contains(last, []byte("r3@out.test")):
				panic("injected panic in one message")
			}
			return nil
		},
		GroupCommit: func(tx *bolt.Tx, n int) error {
			mu.Lock()
			sizes = append(sizes, n)
			first := len(sizes) == 1
			mu.Unlock()
			if first {
				<-release
			}
			return nil
		},
	})
	errs := handleBehindFirst(t, s, 6, func() int { mu.Lock(); defer mu.Unlock(); return len(sizes) }, release)
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Errorf("message %d: %v", i, err)
		}
	}
	// Message 3 panicked: kept in quarantine (its own transaction), the
	// sender answered 250; message 2 failed: 451, nothing stored.
	msgs, rows, ids := stored(t, db)
	if msgs != 4 || rows != 4*3+2 {
		t.Fatalf("stored %d messages %v and %d rows; want 4 reports (0, 1, 4, 5) with 3 rows each, and the quarantine alert to alice and bob", msgs, ids, rows)
	}
	var poison int
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("messages")).ForEach(func(_, v []byte) error {
			if bytes.Contains(v, []byte(`"note":"poison"`)) {
				poison++
			}
			return nil
		})
	})
	if poison != 1 {
		t.Errorf("%d messages in quarantine, want 1 (the one that panicked)", poison)
	}
	// The five that waited ran together; without 2, then without 3, the
	// other three committed in one group.
	if len(sizes) < 2 || sizes[1] != 3 {
		t.Errorf("group sizes %v, want [1 3 …]", sizes)
	}
}

// handleBehindFirst hands report 0 to s and, once its group is being
// committed (groups() is 1; the test's group hook then waits for release),
// reports 1 to n-1, which wait behind it; then it releases the first commit
// and returns each message's result.
func handleBehindFirst(t *testing.T, s *Service, n int, groups func() int, release chan struct{}) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	env, raw := report(0)
	wg.Go(func() { errs[0] = s.Handle(t.Context(), env, raw) })
	for groups() != 1 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		env, raw := report(i)
		wg.Go(func() { errs[i] = s.Handle(t.Context(), env, raw) })
	}
	waitWaiting(t, s, n-1)
	close(release)
	wg.Wait()
	return errs
}
