package daemon_test

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// benchClients is the number of parallel SMTP clients in the intake benchmarks.
const benchClients = 10

// loadReports sends n reports from benchClients parallel connections, each
// reusing its connection, and returns the accepted count.
func loadReports(b *testing.B, addr string, n int) int64 {
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < benchClients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cl, err := smtp.Dial(addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer cl.Close()
			if err := cl.Hello("bench.test"); err != nil {
				b.Error(err)
				return
			}
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				from := fmt.Sprintf("rep%d@out.test", i)
				msg := fmt.Sprintf("From: %s\r\nTo: security@ex.test\r\nSubject: report %d\r\nMessage-ID: <%d.%d@out.test>\r\n\r\n%s\r\n",
					from, i, i, time.Now().UnixNano(), benchBody)
				if err := cl.SendMail(from, []string{"security@ex.test"}, strings.NewReader(msg)); err != nil {
					b.Errorf("message %d: %v", i, err)
					return
				}
				ok.Add(1)
			}
		}(c)
	}
	wg.Wait()
	return ok.Load()
}

// A 1 KB report body.
var benchBody = func() string {
	s := ""
	for len(s) < 1000 {
		s += "The parser overflows when given a long header line. "
	}
	return s
}()

// BenchmarkIntake measures accepted reports per second through the whole
// daemon: strict SMTP, MIME parsing, one synced bbolt commit per message
// holding the archive, the incident and 3 outbound rows, while the delivery
// worker drains the queue to a recording relay.
func BenchmarkIntake(b *testing.B) {
	h := newBenchHarness(b)
	b.ResetTimer()
	start := time.Now()
	n := loadReports(b, h.Addr(), b.N)
	el := time.Since(start)
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}

// BenchmarkReferenceGoSMTP is the same load against a bare go-smtp server that
// discards every message: the ceiling of the SMTP layer on this machine, for a
// ratio measured in the same run.
func BenchmarkReferenceGoSMTP(b *testing.B) {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	srv.Domain = "ref.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	b.ResetTimer()
	start := time.Now()
	n := loadReports(b, l.Addr().String(), b.N)
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

// newBenchHarness starts the daemon like the tests' harness, on a discarding
// relay, quiet. The acknowledgement limit is raised so every report causes
// the same work.
func newBenchHarness(b *testing.B) *daemontest.Harness {
	b.Helper()
	return daemontest.New(b, daemontest.Config{
		Extra: "max_connections_per_ip = 50\n[intake]\nacks_per_sender_per_day = 1000000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n",
		Relay: newBenchRelay(b),
	}, daemon.Options{Logger: slog.New(slog.DiscardHandler)})
}

// newBenchRelay is a discarding relay for the delivery worker.
func newBenchRelay(b *testing.B) string {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	srv.Domain = "relay.test"
	// Quiet: a connection the worker drops at shutdown logs a read error
	// that would land in the middle of the benchmark's result line, which
	// contrib/bench/run parses.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}
