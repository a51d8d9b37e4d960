package listd

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// countRelay takes every message and keeps only the count of bytes.
type countRelay struct{ n, bytes atomic.Int64 }

func (c *countRelay) Send(_ context.Context, _ string, _ []string, data []byte) error {
	c.n.Add(1)
	c.bytes.Add(int64(len(data)))
	return nil
}

// BenchmarkLargeReport takes in a 9.5 MB report (a 7 MB attachment) for a
// committee of six and delivers its seven messages (six sealed copies and
// the acknowledgement), per iteration, on one store. It reports the peak
// heap above the start (sampled every millisecond, GOGC 10: about what is
// live), the store's growth per report and the bytes delivered per report.
func BenchmarkLargeReport(b *testing.B) {
	w := newSealWorld(b, 6)
	raw := largeReport(7_000_000)
	id := bytes.Index(raw, []byte("<large.")) + len("<large.")
	relay := &countRelay{}
	stop := w.worker(relay)
	defer stop()
	before := w.used()
	heap := watchHeap()
	b.ResetTimer()
	for i := range b.N {
		copy(raw[id:], fmt.Sprintf("%07d", i+1)) // new bytes: not a duplicate delivery
		if err := w.s.Handle(context.Background(), reporterEnv, raw); err != nil {
			b.Fatal(err)
		}
		w.settle()
	}
	b.StopTimer()
	peak := heap.end()
	b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
	b.ReportMetric(float64(peak)/float64(len(raw)), "peak/report")
	b.ReportMetric(float64(w.used()-before)/float64(b.N)/1e6, "store-MB/report")
	b.ReportMetric(float64(relay.bytes.Load())/float64(b.N)/1e6, "sent-MB/report")
}
