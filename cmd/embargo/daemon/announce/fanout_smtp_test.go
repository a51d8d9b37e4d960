package announce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
)

// The fan-out over its own connections (Options.SMTP), against go-smtp's
// server in the recording relay.

func smtpConfig(rec *queuetest.Recorder) *pipeline.Config {
	return &pipeline.Config{Addr: rec.Addr(), HeloName: "embargo.test", CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second}
}

// smtpFanout is testFanout with the fan-out's own connections to rec.
func smtpFanout(t testing.TB, db *bolt.DB, rec *queuetest.Recorder, c *clock, mod func(*Options)) *Fanout {
	t.Helper()
	return testFanout(t, db, nil, c, func(o *Options) {
		o.SMTP = smtpConfig(rec)
		if mod != nil {
			mod(o)
		}
	})
}

func oneClick(o *Options) { o.OneClick, o.OneClickBase = true, "https://security.example.org" }

// TestSMTPFanout10000: 10,000 subscribers over 8 connections in batches
// of 100 recipients: every subscriber exactly once, 100 transactions with
// one body, PGP- and DKIM-signed once, and the job's cursor at the end.
func TestSMTPFanout10000(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 10_000, t0.Add(-time.Hour))
	rec := queuetest.NewRecorder(t)
	dk := testDKIMKeys(t)["rsa"]
	f := smtpFanout(t, db, rec, c, func(o *Options) {
		o.DKIM = &DKIM{Domain: "example.org", Selector: "embargo", Signer: dk}
	})
	startRelease(t, db, "SEC-2026-0001", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	msgs := rec.Messages()
	counts := rcptCounts(msgs)
	for _, a := range addrs {
		if counts[a] != 1 {
			t.Fatalf("%s got %d copies, want 1", a, counts[a])
		}
	}
	if len(msgs) != 100 {
		t.Errorf("%d transactions, want 100", len(msgs))
	}
	for _, m := range msgs {
		if !bytes.Equal(m.Data, msgs[0].Data) || len(m.To) != 100 {
			t.Fatal("transactions differ")
		}
	}
	if _, err := keys.Verify(msgs[0].Data, keys.NewKeyring(announceKey(t)), keys.Options{Now: c.Now}); err != nil {
		t.Errorf("copy does not verify: %v", err)
	}
	if _, err := verifyDKIM(t, msgs[0].Data, dk); err != nil {
		t.Errorf("DKIM: %v", err)
	}
	if lu := headerOf(msgs[0].Data, "List-Unsubscribe"); lu != "<mailto:announce+unsubscribe@example.org?subject=unsubscribe>" || headerOf(msgs[0].Data, "List-Unsubscribe-Post") != "" {
		t.Errorf("shared copy: List-Unsubscribe %q", lu)
	}
	j := job(t, db, "SEC-2026-0001")
	if j.State != JobReleased || j.Sent != 10_000 || j.Transactions != 100 || j.Cursor != j.UpTo {
		t.Errorf("job = %+v", j)
	}
}

// TestSMTPOneClickDKIM: one-click copies over 4 connections, each with
// its own URI, signed with DKIM that go-msgauth verifies, the PGP
// signature intact; Observe hears of each.
func TestSMTPOneClickDKIM(t *testing.T) {
	for name, k := range testDKIMKeys(t) {
		t.Run(name, func(t *testing.T) {
			db, _ := newDB(t)
			c := newClock(t0)
			addrs := addSubscribers(t, db, 250, t0)
			rec := queuetest.NewRecorder(t)
			var observed atomic.Int64
			f := smtpFanout(t, db, rec, c, func(o *Options) {
				oneClick(o)
				o.Connections, o.BatchSize = 4, 10
				o.DKIM = &DKIM{Domain: "example.org", Selector: "embargo", Signer: k}
				o.Observe = func(r string) {
					if r == "delivered" {
						observed.Add(1)
					}
				}
			})
			startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
			drain(t, f)
			msgs := rec.Messages()
			if len(msgs) != 250 || observed.Load() != 250 {
				t.Fatalf("%d transactions, %d observed, want 250", len(msgs), observed.Load())
			}
			tokens := map[string]string{}
			for _, m := range msgs {
				lu := headerOf(m.Data, "List-Unsubscribe")
				tok, _, _ := strings.Cut(strings.TrimPrefix(lu, "<https://security.example.org/unsubscribe/"), ">")
				if !validToken(tok) || headerOf(m.Data, "List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
					t.Fatalf("List-Unsubscribe = %q", lu)
				}
				tokens[tok] = m.To[0]
				if keys, err := verifyDKIM(t, m.Data, k); err != nil || !strings.Contains(strings.ToLower(strings.Join(keys, ":")), "list-unsubscribe-post") {
					t.Fatalf("DKIM: %v (h=%v)", err, keys)
				}
			}
			if _, err := keys.Verify(msgs[0].Data, keys.NewKeyring(announceKey(t)), keys.Options{Now: c.Now}); err != nil {
				t.Errorf("PGP signature: %v", err)
			}
			if len(tokens) != 250 {
				t.Errorf("%d distinct tokens", len(tokens))
			}
			// Each token is its subscriber's own.
			for tok, addr := range tokens {
				if addr == addrs[7] {
					if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, c.Now()) }); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, ok := subscriber(t, db, addrs[7]); ok {
				t.Error("the copy's token did not unsubscribe its subscriber")
			}
			if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 250 || j.Transactions != 250 {
				t.Errorf("job %+v", j)
			}
		})
	}
}

// TestSMTPRefusals: over the pipelined connections, a 550 at RCPT counts
// a bounce, a 450 goes to the retry set and is sent alone later, and a
// 554 at the end of data holds the job without moving anyone's count;
// Resume finishes it.
func TestSMTPRefusals(t *testing.T) {
	for _, mode := range []string{"batch", "oneclick"} {
		t.Run(mode, func(t *testing.T) {
			db, _ := newDB(t)
			c := newClock(t0)
			addrs := addSubscribers(t, db, 60, t0)
			rec := queuetest.NewRecorder(t)
			rec.FailRcpt(addrs[5], 550)
			rec.FailRcpt(addrs[40], 450)
			f := smtpFanout(t, db, rec, c, func(o *Options) {
				o.BatchSize, o.Connections = 10, 3
				if mode == "oneclick" {
					oneClick(o)
				}
			})
			startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
			drain(t, f)
			j := job(t, db, "r")
			if j.State != JobReleasing || j.Sent != 58 || j.Refused != 1 || j.Deferred != 1 || j.Cursor != j.UpTo {
				t.Fatalf("after the walk: %+v", j)
			}
			if s, _ := subscriber(t, db, addrs[5]); s.Bounces != 1 {
				t.Errorf("bounces %d, want 1", s.Bounces)
			}
			rec.FailRcpt(addrs[40], 0)
			c.Advance(2 * time.Minute)
			drain(t, f)
			if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 59 {
				t.Fatalf("after the retry: %+v", j)
			}
			for a, n := range rcptCounts(rec.Messages()) {
				if n != 1 {
					t.Errorf("%s: %d copies", a, n)
				}
			}

			// A message the relay refuses as a whole.
			rec.FailData(554)
			var reasons []string
			f = smtpFanout(t, db, rec, c, func(o *Options) {
				o.BatchSize, o.Connections = 10, 3
				o.Held = func(_ *bolt.Tx, _ Job, r string) error { reasons = append(reasons, r); return nil }
			})
			c.Advance(time.Minute)
			startRelease(t, db, "r2", advisory(t, announceKey(t), t0), c.Now())
			drain(t, f)
			j = job(t, db, "r2")
			if j.State != JobHeld || len(reasons) != 1 || !strings.Contains(reasons[0], "554") || j.Sent != 0 {
				t.Fatalf("refused message: %+v, %q", j, reasons)
			}
			rec.FailData(0)
			if err := f.Resume("r2"); err != nil {
				t.Fatal(err)
			}
			drain(t, f)
			if j := job(t, db, "r2"); j.State != JobReleased || j.Sent != 59 {
				t.Fatalf("after Resume: %+v", j)
			}
		})
	}
}

// TestSMTPRelayDown: the relay refuses connections: the job backs off,
// then goes on when the relay is back.
func TestSMTPRelayDown(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 30, t0)
	rec := queuetest.NewRecorder(t)
	f := smtpFanout(t, db, rec, c, func(o *Options) {
		o.SMTP = &pipeline.Config{Addr: "127.0.0.1:1", DialTimeout: time.Second}
	})
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleasing || j.Cursor != 0 || j.LastError == "" || len(jobRecordOf(t, db, "r").Done) != 0 {
		t.Fatalf("relay down: %+v", j)
	}
	f.o.SMTP = smtpConfig(rec)
	c.Advance(30 * time.Second)
	drain(t, f)
	if job(t, db, "r").Sent != 0 {
		t.Fatal("sent during the backoff")
	}
	c.Advance(time.Minute)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 30 || j.LastError != "" {
		t.Fatalf("relay back: %+v", j)
	}
}

// TestSMTPIdleConnectionClosed: the relay closes a connection that sat
// idle; the next batch goes at once on a new one, without a backoff.
func TestSMTPIdleConnectionClosed(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 20, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt("sub00003@s3.example.net", 450) // a retry keeps the job open
	f := smtpFanout(t, db, rec, c, func(o *Options) { o.Connections = 1 })
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	// Hold a session open by hand, then have the relay drop it.
	drain(t, f)
	s := f.pool.slots[0]
	cl, err := pipeline.Dial(context.Background(), *smtpConfig(rec))
	if err != nil {
		t.Fatal(err)
	}
	s.sess = cl
	rec.Close()
	rec2 := queuetest.NewRecorder(t)
	f.o.SMTP = smtpConfig(rec2)
	c.Advance(2 * time.Minute)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 20 {
		t.Fatalf("after the dropped connection: %+v", j)
	}
}

// TestResumeAllServed: a job held after its last batches were recorded
// (connections finish after the one that held it) has nothing left to
// send; Resume releases it.
func TestResumeAllServed(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 10, t0)
	rec := queuetest.NewRecorder(t)
	var released []string
	f := smtpFanout(t, db, rec, c, func(o *Options) {
		o.Released = func(_ *bolt.Tx, j Job) error { released = append(released, j.ID); return nil }
	})
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0.Add(time.Minute))
	drain(t, f)
	if err := db.Update(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		r, err := b.getJob(jobKey("r"))
		if err != nil {
			return err
		}
		r.State, r.Started, r.UpTo, r.Total, r.Prepared = JobReleasing, t0, b.lastSeq(), 10, false
		r.addDone(span{0, r.UpTo})
		return b.hold(tx, r, HoldRelay, "test", Options{}.withDefaults())
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.Resume("r"); err != nil {
		t.Fatal(err)
	}
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleased || len(released) != 1 || len(rec.Messages()) != 0 {
		t.Errorf("job %+v, released %v, %d copies", j, released, len(rec.Messages()))
	}
}

// TestAddDone: stretches finished out of order wait above the cursor and
// carry it forward once the gap closes.
func TestAddDone(t *testing.T) {
	var r jobRecord
	r.addDone(span{200, 300})
	r.addDone(span{400, 500})
	if r.Cursor != 0 || len(r.Done) != 2 {
		t.Fatalf("%d %v", r.Cursor, r.Done)
	}
	r.addDone(span{300, 400})
	if r.Cursor != 0 || len(r.Done) != 1 || r.Done[0] != (span{200, 500}) {
		t.Fatalf("%d %v", r.Cursor, r.Done)
	}
	r.addDone(span{0, 150})
	if r.Cursor != 150 {
		t.Fatalf("%d %v", r.Cursor, r.Done)
	}
	r.addDone(span{150, 200})
	if r.Cursor != 500 || r.Done != nil {
		t.Fatalf("%d %v", r.Cursor, r.Done)
	}
	r.addDone(span{100, 450}) // already done
	if r.Cursor != 500 || r.Done != nil {
		t.Fatalf("%d %v", r.Cursor, r.Done)
	}
}

// TestOldDeliveryIndex: index entries written before they carried the
// one-click token still get each subscriber's own, from its record.
func TestOldDeliveryIndex(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 5, t0)
	want := map[string]string{}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		return b.active.ForEach(func(k, v []byte) error {
			addr, tok := activeEntry(v)
			want[addr] = tok
			return b.active.Put(bytes.Clone(k), []byte(addr))
		})
	})
	rec := queuetest.NewRecorder(t)
	f := smtpFanout(t, db, rec, c, oneClick)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	for _, m := range rec.Messages() {
		if tok := want[m.To[0]]; tok == "" || !strings.Contains(headerOf(m.Data, "List-Unsubscribe"), tok) {
			t.Errorf("%s: %q, want token %q", m.To[0], headerOf(m.Data, "List-Unsubscribe"), tok)
		}
	}
	if len(rec.Messages()) != 5 {
		t.Errorf("%d copies", len(rec.Messages()))
	}
}

// TestSMTPNothingBeforeT: the same clock rules over the fan-out's own
// connections: nothing at T−1 s, everything at T, nothing again later.
func TestSMTPNothingBeforeT(t *testing.T) {
	db, _ := newDB(t)
	T := t0.Add(time.Hour)
	c := newClock(T.Add(-time.Minute))
	addSubscribers(t, db, 50, t0)
	rec := queuetest.NewRecorder(t)
	f := smtpFanout(t, db, rec, c, oneClick)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), T)
	drain(t, f)
	c.Advance(59 * time.Second)
	drain(t, f)
	if n := len(rec.Messages()); n != 0 {
		t.Fatalf("%d copies before T", n)
	}
	c.Advance(time.Second)
	drain(t, f)
	if n := len(rec.Messages()); n != 50 {
		t.Fatalf("%d copies at T, want 50", n)
	}
	c.Jump(-24 * time.Hour)
	drain(t, smtpFanout(t, db, rec, c, oneClick))
	if n := len(rec.Messages()); n != 50 {
		t.Errorf("%d copies after a backward jump and a restart", n)
	}
}

// TestStopRecordsAnswered: a fan-out stopped mid-release records what
// the relay had answered: after a graceful stop, only the transactions
// cut off mid-way (one per connection at most) can go twice.
func TestStopRecordsAnswered(t *testing.T) {
	db, _ := newDB(t)
	addSubscribers(t, db, 3000, t0)
	rec := queuetest.NewRecorder(t)
	const conns = 4
	o := Options{List: testList, SMTP: smtpConfig(rec), Connections: conns, BatchSize: 50}
	oneClick(&o)
	f := New(db, nil, o)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	rec.WaitFor(800, 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the recorder finishes what was in its buffers
	got := rcptCounts(rec.Messages())
	unrecorded := 0
	j := jobRecordOf(t, db, "r")
	for a := range got {
		if !covered(j, seqOf(a)) {
			unrecorded++
		}
	}
	if unrecorded > conns {
		t.Errorf("%d copies received and not recorded after a graceful stop, want at most %d (one per connection)", unrecorded, conns)
	}
	t.Logf("stopped after %d copies; %d unrecorded; cursor %d, done %v", len(got), unrecorded, j.Cursor, j.Done)
}

func jobRecordOf(t testing.TB, db *bolt.DB, id string) *jobRecord {
	t.Helper()
	var r *jobRecord
	if err := db.View(func(tx *bolt.Tx) (err error) {
		b, err := open(tx)
		if err == nil {
			r, err = b.getJob(jobKey(id))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

func covered(r *jobRecord, seq uint64) bool {
	if seq <= r.Cursor {
		return true
	}
	_, ok := within(r.Done, seq)
	return ok
}

// seqOf is the place of sub%05d@…: addSubscribers activates them in order
// from 1.
func seqOf(addr string) uint64 {
	n, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(addr, "@", 2)[0], "sub"))
	return uint64(n) + 1
}

// TestKillMidRelease: the fan-out runs in a child process (this test
// binary again) and is killed with SIGKILL mid-release, three times, then
// a last run finishes. After each kill, the copies the relay received but
// the store does not record (the ones that go again) are at most one
// batch per connection; every subscriber gets a copy, none more than one
// extra per kill.
func TestKillMidRelease(t *testing.T) {
	if os.Getenv("EMBARGO_FANOUT_CHILD") != "" {
		fanoutChild()
		return
	}
	if testing.Short() {
		t.Skip("kills a child process three times")
	}
	const n, conns, batch = 6000, 4, 50
	db, path := newDB(t)
	addSubscribers(t, db, n, t0)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), time.Now().Add(-time.Second))
	db.Close()
	rec := queuetest.NewRecorder(t)
	for kill, at := range []int{700, 2500, 4200} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillMidRelease$")
		cmd.Env = append(os.Environ(), "EMBARGO_FANOUT_CHILD=1", "EMBARGO_FANOUT_DB="+path,
			"EMBARGO_FANOUT_RELAY="+rec.Addr(), fmt.Sprintf("EMBARGO_FANOUT_SHAPE=%d,%d", conns, batch))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if got := len(rec.WaitFor(at, time.Minute)); got < at {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: the child sent %d copies, want %d: %s", kill+1, got, at, out.String())
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		time.Sleep(100 * time.Millisecond)
		db = openDB(t, path)
		j := jobRecordOf(t, db, "r")
		db.Close()
		unrecorded := 0
		for a := range rcptCounts(rec.Messages()) {
			if !covered(j, seqOf(a)) {
				unrecorded++
			}
		}
		t.Logf("kill %d after %d copies: cursor %d, %d stretches done above it, %d copies not recorded", kill+1, len(rec.Messages()), j.Cursor, len(j.Done), unrecorded)
		if unrecorded > conns*batch {
			t.Errorf("kill %d: %d copies sent and not recorded, want at most %d (one batch per connection)", kill+1, unrecorded, conns*batch)
		}
		if len(j.Done) > conns {
			t.Errorf("kill %d: %d done stretches above the cursor, want at most %d", kill+1, len(j.Done), conns)
		}
	}
	db = openDB(t, path)
	defer db.Close()
	o := Options{List: testList, SMTP: smtpConfig(rec), Connections: conns, BatchSize: batch}
	oneClick(&o)
	drain(t, New(db, nil, o))
	if j := job(t, db, "r"); j.State != JobReleased || j.Cursor != j.UpTo {
		t.Fatalf("job %+v", j)
	}
	counts := rcptCounts(rec.Messages())
	dups := 0
	for i := range n {
		a := fmt.Sprintf("sub%05d@s%d.example.net", i, i%7)
		switch c := counts[a]; {
		case c == 0:
			t.Errorf("%s got nothing", a)
		case c > 1+3:
			t.Errorf("%s got %d copies", a, c)
		default:
			dups += c - 1
		}
	}
	if dups > 3*conns*batch {
		t.Errorf("%d copies sent twice, want at most %d", dups, 3*conns*batch)
	}
	t.Logf("%d subscribers, %d copies, %d sent again after 3 kills", n, len(rec.Messages()), dups)
}

// fanoutChild is the child of TestKillMidRelease: it runs the fan-out on
// the store until it is killed. Without the parent's list key it checks no
// signature (Options.Key nil).
func fanoutChild() {
	db, err := bolt.Open(os.Getenv("EMBARGO_FANOUT_DB"), 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var conns, batch int
	fmt.Sscanf(os.Getenv("EMBARGO_FANOUT_SHAPE"), "%d,%d", &conns, &batch)
	o := Options{List: testList, Connections: conns, BatchSize: batch, MinBackoff: 10 * time.Millisecond,
		SMTP: &pipeline.Config{Addr: os.Getenv("EMBARGO_FANOUT_RELAY"), HeloName: "child.test"}}
	oneClick(&o)
	err = New(db, nil, o).Run(context.Background())
	fmt.Fprintln(os.Stderr, "fan-out ended:", err)
	os.Exit(4)
}
