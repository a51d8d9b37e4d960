package announce

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// sink is a discarding SMTP server on loopback: it reads every message and
// keeps only counts, so a benchmark measures embargo, not the recorder.
type sink struct {
	srv          *smtp.Server
	ln           net.Listener
	transactions atomic.Int64
	rcpts        atomic.Int64
}

func newSink(b testing.TB) *sink {
	s := &sink{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.test"
	s.srv.ReadTimeout, s.srv.WriteTimeout = time.Minute, time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s.ln = ln
	go s.srv.Serve(ln)
	b.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *sink) relay(b testing.TB) queue.Relay {
	r, err := queue.NewRelay("smtp://"+s.ln.Addr().String(), queue.RelayOptions{HeloName: "embargo.test"})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

type sinkSession struct {
	s *sink
	n int64
}

func (x *sinkSession) Mail(string, *smtp.MailOptions) error { x.n = 0; return nil }
func (x *sinkSession) Rcpt(string, *smtp.RcptOptions) error { x.n++; return nil }
func (x *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	x.s.transactions.Add(1)
	x.s.rcpts.Add(x.n)
	return nil
}
func (x *sinkSession) Reset()        { x.n = 0 }
func (x *sinkSession) Logout() error { return nil }

const benchSubscribers = 10_000

// BenchmarkRelease10000 releases one advisory to 10,000 subscribers through
// a local SMTP server per iteration, with the store synced as in
// production (bbolt, NoSync false):
//
//   - batch100, batch1000: the fan-out, one transaction per batch and one
//     commit per batch (the default is 100);
//   - oneclick: the fan-out with a per-subscriber RFC 8058 header, one
//     transaction per subscriber, one commit per 100;
//   - smtp-batch100, smtp-oneclick: the same over the fan-out's own 8
//     persistent, pipelined connections (Options.SMTP), as the daemon
//     sends to an SMTP relay; the ones above go through the queue's relay,
//     a connection per transaction, one batch at a time;
//   - queue-rows: the reference, one daemon/queue row per subscriber
//     (written in one Update, then delivered by the queue worker, 4 at a
//     time, each outcome in its own commit).
//
// msgs/s counts delivered recipients; transactions/op the SMTP transactions.
func BenchmarkRelease10000(b *testing.B) {
	key := announceKey(b)
	msg := advisory(b, key, t0)
	run := func(b *testing.B, mod func(*Options)) {
		db, _ := newDB(b)
		addSubscribers(b, db, benchSubscribers, t0)
		s := newSink(b)
		c := newClock(t0)
		f := testFanout(b, db, s.relay(b), c, mod)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("bench-%d", i)
			startRelease(b, db, id, msg, c.Now())
			drain(b, f)
			if j := job(b, db, id); j.State != JobReleased || j.Sent != benchSubscribers {
				b.Fatalf("job %+v", j)
			}
		}
		b.StopTimer()
		report(b, s, start)
	}
	b.Run("batch100", func(b *testing.B) { run(b, nil) })
	b.Run("batch1000", func(b *testing.B) { run(b, func(o *Options) { o.BatchSize = 1000 }) })
	b.Run("oneclick", func(b *testing.B) {
		run(b, func(o *Options) { o.OneClick, o.OneClickBase = true, "https://security.example.org" })
	})
	b.Run("smtp-batch100", func(b *testing.B) { runSMTP(b, msg, func(*Options) {}) })
	b.Run("smtp-oneclick", func(b *testing.B) {
		runSMTP(b, msg, func(o *Options) { o.OneClick, o.OneClickBase = true, "https://security.example.org" })
	})
	b.Run("queue-rows", func(b *testing.B) {
		db, _ := newDB(b)
		addrs := addSubscribers(b, db, benchSubscribers, t0)
		s := newSink(b)
		w := queue.New(db, s.relay(b), queue.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		defer func() { cancel(); <-done }()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			want := s.rcpts.Load() + benchSubscribers
			err := db.Update(func(tx *bolt.Tx) error {
				msgs := make([]queue.Msg, len(addrs))
				for j, a := range addrs {
					msgs[j] = queue.Msg{From: "announce+bounces@example.org", To: []string{a}, Data: msg, MessageID: "advisory.0123456789@example.org", Kind: "advisory"}
				}
				return queue.Enqueue(tx, time.Now(), msgs...)
			})
			if err != nil {
				b.Fatal(err)
			}
			w.Kick()
			for s.rcpts.Load() < want {
				time.Sleep(time.Millisecond)
			}
			// Wait until every outcome is recorded, so that the next
			// round starts on an empty queue.
			for {
				var st queue.Counts
				db.View(func(tx *bolt.Tx) (err error) { st, err = queue.Stats(tx); return err })
				if st.Queued+st.Sending == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		b.StopTimer()
		report(b, s, start)
	})
}

// runSMTP releases msg to benchSubscribers over the fan-out's own
// connections to a discarding server, b.N times.
func runSMTP(b *testing.B, msg []byte, mod func(*Options)) {
	db, _ := newDB(b)
	addSubscribers(b, db, benchSubscribers, t0)
	s := newSink(b)
	c := newClock(t0)
	f := testFanout(b, db, nil, c, func(o *Options) {
		o.SMTP = &pipeline.Config{Addr: s.ln.Addr().String()}
		mod(o)
	})
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-%d", i)
		startRelease(b, db, id, msg, c.Now())
		drain(b, f)
		if j := job(b, db, id); j.State != JobReleased || j.Sent != benchSubscribers {
			b.Fatalf("job %+v", j)
		}
	}
	b.StopTimer()
	report(b, s, start)
}

func report(b *testing.B, s *sink, start time.Time) {
	el := time.Since(start)
	b.ReportMetric(float64(s.rcpts.Load())/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(s.transactions.Load())/float64(b.N), "transactions/op")
}
