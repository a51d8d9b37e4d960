package queue

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkMaildirBatch writes batches of 1.2 KB messages straight into a
// Maildir (no queue): the file system's share of BenchmarkDrain's maildir
// case. sync=fs is the relay on Linux, a batch made durable by one syncfs
// (from maildirFSMin files); sync=file syncs each file, as the relay does
// with smaller batches and where there is no syncfs. Metric: files/s.
//
// One Maildir serves every case and is removed at the end: ext4 without a
// journal passes over inodes freed in the last half minute or so when it
// allocates one, so a case run just after the removal of another's files
// would mostly measure that.
func BenchmarkMaildirBatch(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "Maildir")
	for _, n := range []int{1, 16, maildirBatch} {
		for _, mode := range []string{"fs", "file"} {
			m, err := NewMaildir(dir, RelayOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if mode == "file" {
				m.syncFS = nil
			} else if m.syncFS == nil || n < maildirFSMin {
				continue
			}
			b.Run(fmt.Sprintf("batch=%d/sync=%s", n, mode), func(b *testing.B) {
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
}
