package queue

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkMaildirBatch writes batches of 1.2 KB messages straight into a
// Maildir (no queue): the file system's share of BenchmarkDrain's maildir
// case. Metric: files/s.
func BenchmarkMaildirBatch(b *testing.B) {
	for _, n := range []int{1, 16, maildirBatch} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			m, err := NewMaildir(filepath.Join(b.TempDir(), "Maildir"), RelayOptions{})
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]Outgoing, n)
			for i := range msgs {
				d := drainMsg(i)
				msgs[i] = Outgoing{From: d.From, To: d.To, Data: d.Data}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, err := range m.SendBatch(b.Context(), msgs) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
