package queue

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkDrain commits a backlog of copies to the queue (2,000 by default,
// 20,000 in contrib/bench/run), then times the worker (default Options, a
// synced bbolt file) delivering all of them and recording every outcome: the
// rate at which a backlog leaves, to compare with Postfix flushing the same
// number of queued messages to the same sink.
// Each copy is ~1.2 KB (a 1 KB body, as smtp-source -l 1024 sends) to one
// recipient.
//
//	relay=smtp     to EMBARGO_BENCH_SINK (host:port, e.g. smtp-sink), or to
//	               a discarding go-smtp server in process if unset
//	relay=maildir  to a Maildir in a temporary directory (a batch's files
//	               made durable by one syncfs on Linux, the directory synced
//	               once per batch)
//
// EMBARGO_BENCH_ROWS sets the number of copies (default 2000).
// contrib/bench/run drives it with -benchtime 1x. Metrics: copies/s, and
// sends/op (relay calls: one per copy over SMTP, one per batch of files to
// the Maildir).
func BenchmarkDrain(b *testing.B) {
	rows := 2000
	if v := os.Getenv("EMBARGO_BENCH_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("EMBARGO_BENCH_ROWS=%q: want a positive integer", v)
		}
		rows = n
	}
	b.Run("relay=smtp", func(b *testing.B) {
		addr := os.Getenv("EMBARGO_BENCH_SINK")
		if addr == "" {
			addr = discardServer(b)
		}
		r, err := NewRelay("smtp://"+addr, RelayOptions{HeloName: "embargo.test"})
		if err != nil {
			b.Fatal(err)
		}
		drainBench(b, r, rows)
	})
	b.Run("relay=maildir", func(b *testing.B) {
		r, err := NewMaildir(filepath.Join(b.TempDir(), "Maildir"), RelayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		drainBench(b, r, rows)
	})
}

func drainBench(b *testing.B, relay Relay, rows int) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "embargo.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(Init); err != nil {
		b.Fatal(err)
	}
	cr := &countingRelay{Relay: relay}
	b.ResetTimer()
	var el time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for lo := 0; lo < rows; lo += 1000 {
			msgs := make([]Msg, 0, 1000)
			for j := lo; j < min(lo+1000, rows); j++ {
				msgs = append(msgs, drainMsg(i*rows+j))
			}
			if err := db.Update(func(tx *bolt.Tx) error { return Enqueue(tx, time.Now(), msgs...) }); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		w := New(db, cr, benchOptions(b))
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		waitDrained(b, db, cr, int64(rows*(i+1)))
		el += time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := cr.ok.Load(); got != int64(rows*b.N) {
		b.Fatalf("relay accepted %d copies, want %d", got, rows*b.N)
	}
	b.ReportMetric(float64(rows*b.N)/el.Seconds(), "copies/s")
	b.ReportMetric(float64(cr.sends.Load())/float64(b.N), "sends/op")
}

// waitDrained waits until the relay accepted want copies in all, watching
// a counter (Stats decodes every row: polling it would load the machine
// it measures), then until the last outcomes are committed. It gives up
// after a minute without progress.
func waitDrained(b *testing.B, db *bolt.DB, cr *countingRelay, want int64) {
	last, since := cr.ok.Load(), time.Now()
	for n := last; n < want; n = cr.ok.Load() {
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > time.Minute {
			b.Fatalf("the relay accepted %d copies of %d, then none for a minute", n, want)
		}
		time.Sleep(time.Millisecond)
	}
	for {
		var s Counts
		if err := db.View(func(tx *bolt.Tx) (err error) { s, err = Stats(tx); return err }); err != nil {
			b.Fatal(err)
		}
		if s.Failed != 0 {
			b.Fatalf("%d copies failed", s.Failed)
		}
		if s.Queued+s.Sending == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// drainBody is a 1 KB body of 78-character lines.
var drainBody = strings.Repeat(strings.Repeat("X", 76)+"\r\n", 13)

func drainMsg(n int) Msg {
	id := fmt.Sprintf("<drain.%d@embargo.test>", n)
	to := fmt.Sprintf("member%d@drain.test", n%100)
	data := "From: security@embargo.test\r\nTo: " + to + "\r\nSubject: [SEC-2026-0001] copy\r\n" +
		"Message-ID: " + id + "\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\n" + drainBody
	return Msg{From: "security+bounces@embargo.test", To: []string{to}, Data: []byte(data), MessageID: id, Kind: "report-copy"}
}

// countingRelay counts relay calls and accepted copies. It passes batches
// on to a BatchRelay (a batch is one call).
type countingRelay struct {
	Relay
	sends, ok atomic.Int64
}

func (r *countingRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	r.sends.Add(1)
	err := r.Relay.Send(ctx, from, to, data)
	if err == nil {
		r.ok.Add(int64(len(to)))
	}
	return err
}

func (r *countingRelay) MaxBatch() int { return batchSize(r.Relay) }

func (r *countingRelay) SendBatch(ctx context.Context, msgs []Outgoing) []error {
	r.sends.Add(1)
	errs := r.Relay.(BatchRelay).SendBatch(ctx, msgs)
	for i, err := range errs {
		if err == nil {
			r.ok.Add(int64(len(msgs[i].To)))
		}
	}
	return errs
}

// discardServer is a go-smtp server on loopback that reads and drops every
// message; it returns its address.
func discardServer(b *testing.B) string {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	srv.Domain = "sink.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

// benchOptions are the worker's defaults, or what EMBARGO_BENCH_CONCURRENCY
// and EMBARGO_BENCH_MAX_CLAIMED say, to try others.
func benchOptions(b *testing.B) Options {
	var o Options
	for env, v := range map[string]*int{"EMBARGO_BENCH_CONCURRENCY": &o.Concurrency, "EMBARGO_BENCH_MAX_CLAIMED": &o.MaxClaimed} {
		if s := os.Getenv(env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				b.Fatalf("%s=%q: want a positive integer", env, s)
			}
			*v = n
		}
	}
	return o
}
