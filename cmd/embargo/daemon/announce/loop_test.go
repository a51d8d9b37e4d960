package announce

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/smtpd"
)

// ownListener is embargo's own SMTP listener (smtpd) on loopback, taking
// every recipient; it counts the connections it accepted and the copies
// it took.
type ownListener struct {
	addr    string
	accepts atomic.Int32
	mu      sync.Mutex
	rcpts   int
}

func (l *ownListener) Recipient(context.Context, string, string) error { return nil }
func (l *ownListener) Handle(_ context.Context, env smtpd.Envelope, _ []byte) error {
	l.mu.Lock()
	l.rcpts += len(env.To)
	l.mu.Unlock()
	return nil
}

func (l *ownListener) taken() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rcpts
}

// countingListener counts the connections a net.Listener accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (c countingListener) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.n.Add(1)
	}
	return conn, err
}

func startOwnListener(t *testing.T) *ownListener {
	t.Helper()
	h := &ownListener{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	srv := smtpd.New(smtpd.Options{Domain: "mx.embargo.test"}, h, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(countingListener{ln, &h.accepts}) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return h
}

// syncBuffer is a bytes.Buffer a logger may write from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReleaseLoopToOwnListener: a release whose relay is this process's
// own listener (a real smtpd on loopback, whose EHLO reply carries
// smtpd.InstanceToken, and the fan-out's own SMTP connections checking
// for it) sends nothing: every connection fails with pipeline.ErrLoop,
// temporarily, so the job stays releasing with its cursor at the start,
// nothing counted sent, and backs off. The fan-out says so once per
// release, at error level and with IDs only, however many connections
// and batches failed over several rounds (docs/threat-model.md B9). A
// listener whose token differs is another embargo, and takes every copy.
func TestReleaseLoopToOwnListener(t *testing.T) {
	for _, tc := range []struct {
		name     string
		instance string
		loop     bool
	}{
		{"own listener", smtpd.InstanceToken(), true},
		{"another instance", strings.Repeat("0", 24), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startOwnListener(t)
			db, _ := newDB(t)
			c := newClock(t0)
			addrs := addSubscribers(t, db, 5, t0.Add(-time.Hour))
			var logs syncBuffer
			f := testFanout(t, db, nil, c, func(o *Options) {
				o.SMTP = &pipeline.Config{Addr: h.addr, HeloName: "embargo.test", Instance: tc.instance, CommandTimeout: 5 * time.Second}
				o.Connections, o.BatchSize = 3, 2
				o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			startRelease(t, db, "SEC-2026-0001", advisory(t, announceKey(t), t0), t0)
			startRelease(t, db, "SEC-2026-0002", advisory(t, announceKey(t), t0), t0)
			drain(t, f)
			if !tc.loop {
				for _, id := range []string{"SEC-2026-0001", "SEC-2026-0002"} {
					if j := job(t, db, id); j.State != JobReleased || j.Sent != len(addrs) {
						t.Errorf("%s: %+v, want released to %d", id, j, len(addrs))
					}
				}
				if n := h.taken(); n != 2*len(addrs) {
					t.Errorf("the listener took %d copies, want %d", n, 2*len(addrs))
				}
				if strings.Contains(logs.String(), "loop") {
					t.Errorf("a loop logged:\n%s", logs.String())
				}
				return
			}
			// Three rounds, each after the backoff: every batch of both
			// releases tries anew, on new connections.
			if h.accepts.Load() == 0 {
				t.Fatal("round 1: no connection to the listener")
			}
			for round := 2; round <= 3; round++ {
				before := h.accepts.Load()
				c.Advance(2 * time.Hour)
				drain(t, f)
				if h.accepts.Load() == before {
					t.Fatalf("round %d: no connection to the listener", round)
				}
			}
			if n := h.taken(); n != 0 {
				t.Errorf("the listener took %d copies, want none", n)
			}
			for _, id := range []string{"SEC-2026-0001", "SEC-2026-0002"} {
				j := job(t, db, id)
				if j.State != JobReleasing || j.Sent != 0 || j.Refused != 0 || j.Cursor != 0 || !strings.Contains(j.LastError, "mail would loop") {
					t.Errorf("%s: %+v, want releasing, nothing sent or done, the loop as last error", id, j)
				}
			}
			var loops []string
			for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(l, "loop") {
					loops = append(loops, l)
				}
			}
			all := strings.Join(loops, "\n")
			if len(loops) != 2 || strings.Count(all, `"level":"ERROR"`) != 2 ||
				!strings.Contains(all, `"release":"SEC-2026-0001"`) || !strings.Contains(all, `"release":"SEC-2026-0002"`) {
				t.Errorf("%d log lines about the loop, want one at error level per release:\n%s", len(loops), strings.Join(loops, "\n"))
			}
			if strings.Contains(logs.String(), "example.net") {
				t.Errorf("a subscriber's address logged:\n%s", logs.String())
			}
		})
	}
}
