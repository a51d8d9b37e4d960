//go:build unix

package queue

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSMTPRelay sends BenchmarkDrain's copies through the SMTP relay
// alone, no queue or store: one Send a copy (batch=1, a trickle) and in
// the worker's batches (batch=8, a backlog), to EMBARGO_BENCH_SINK
// (host:port, e.g. smtp-sink) or to a discarding go-smtp server in process.
// It reports the CPU time of this process per copy, user and system
// (cpu-µs/copy): against an outside sink that is the client's alone, the
// number to compare, since other processes share the machine.
func BenchmarkSMTPRelay(b *testing.B) {
	addr := os.Getenv("EMBARGO_BENCH_SINK")
	if addr == "" {
		addr = discardServer(b)
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			r, err := NewRelay("smtp://"+addr, RelayOptions{HeloName: "embargo.test"})
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]Outgoing, n)
			copies := 0
			cpu0 := cpuTime(b)
			start := time.Now()
			for b.Loop() {
				for i := range msgs {
					m := drainMsg(copies + i)
					msgs[i] = Outgoing{From: m.From, To: m.To, Data: m.Data}
				}
				for i, err := range sendAll(b, r, msgs) {
					if err != nil {
						b.Fatalf("copy %d: %v", copies+i, err)
					}
				}
				copies += n
			}
			el := time.Since(start)
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(copies), "cpu-µs/copy")
			b.ReportMetric(float64(copies)/el.Seconds(), "copies/s")
		})
	}
}

// sendAll sends msgs as the worker does: in one SendBatch if the relay
// takes batches, else one Send each.
func sendAll(b *testing.B, r Relay, msgs []Outgoing) []error {
	if br, ok := r.(BatchRelay); ok && br.MaxBatch() > 1 {
		return br.SendBatch(b.Context(), msgs)
	}
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = r.Send(b.Context(), m.From, m.To, m.Data)
	}
	return errs
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
