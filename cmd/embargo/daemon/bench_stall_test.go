package daemon_test

import (
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// BenchmarkIntakeStalled is BenchmarkIntake with a relay that accepts
// connections and never greets (contrib/bench/load stall, the README's
// scenario 2d): the worker claims its first rows and waits on them, and
// every other copy stays queued, so the figure is the accept path alone,
// its commits holding no delivery's work. Besides reports a second, the
// store's work a report: the pages its commits allocated and the writes
// they made (bbolt's TxStats), which the machine's load does not change.
func BenchmarkIntakeStalled(b *testing.B) {
	intakeStore(b, stalledRelay(b))
}

// BenchmarkIntakeStore is BenchmarkIntake (the worker delivering every
// copy to a discarding relay) with the store's work a report.
func BenchmarkIntakeStore(b *testing.B) {
	intakeStore(b, newBenchRelay(b))
}

func intakeStore(b *testing.B, relay string) {
	h := daemontest.New(b, daemontest.Config{
		Extra: "max_connections_per_ip = 50\n[intake]\nacks_per_sender_per_day = 1000000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n",
		Relay: relay,
	}, daemon.Options{Logger: slog.New(slog.DiscardHandler)})
	time.Sleep(100 * time.Millisecond) // the worker's first claim, of nothing, done
	db := daemon.DB(h.D)
	before := db.Stats().TxStats
	b.ResetTimer()
	start := time.Now()
	n := loadReports(b, h.Addr(), b.N)
	el := time.Since(start)
	b.StopTimer()
	after := db.Stats().TxStats
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	if n > 0 {
		b.ReportMetric(float64(after.GetPageCount()-before.GetPageCount())/float64(n), "pages/report")
		b.ReportMetric(float64(after.GetWrite()-before.GetWrite())/float64(n), "writes/report")
	}
}

// stalledRelay listens on loopback and holds every connection open,
// silent, until the benchmark ends.
func stalledRelay(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}
