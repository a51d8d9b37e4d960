package queue

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// BenchmarkDeliver pushes b.N committed rows through the worker to the
// recording relay over loopback SMTP (connections reused), with a
// synced bbolt file as in production. It reports messages per second.
func BenchmarkDeliver(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(map[int]string{1: "concurrency=1", 4: "concurrency=4"}[conc], func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "embargo.db"), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(Init); err != nil {
				b.Fatal(err)
			}
			rec := queuetest.NewRecorder(b)
			relay := smtpRelayTo(b, rec)
			for i := 0; i < b.N; i += 1000 {
				msgs := make([]Msg, 0, 1000)
				for j := i; j < min(i+1000, b.N); j++ {
					msgs = append(msgs, testMsg(j))
				}
				if err := db.Update(func(tx *bolt.Tx) error { return Enqueue(tx, time.Now(), msgs...) }); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			w := start(b, db, relay, Options{Concurrency: conc})
			rec.WaitFor(b.N, 10*time.Minute)
			waitUntil(b, "empty queue", func() bool {
				var s Counts
				db.View(func(tx *bolt.Tx) error { s, err = Stats(tx); return err })
				return s.Queued+s.Sending == 0
			})
			b.StopTimer()
			w.stop(b)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
