//go:build linux

package listd

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkWriterCPU measures what one report costs the group commit's one
// writer, which every message waits for (commit.go): groups of six new
// plaintext reports (about what eight SMTP sessions give) are opened
// outside, then stored in one transaction on a synced file, and the CPU
// time of the OS thread that runs the transaction and its commit (user and
// system, getrusage) is read around it. Unlike wall time it leaves out the
// wait for the disk and for other processes on a shared machine, so runs
// compare while other work goes on. It reports that CPU and the
// allocations (the heap's count, read around the commit) per report, and
// the pages each commit writes.
func BenchmarkWriterCPU(b *testing.B) {
	const group = 6
	s, db := storeService(b, newStoreKeys(b), func(o *Options) { o.Now = time.Now })
	db.NoSync = false
	s = s.current()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	body := strings.Repeat("The parser overflows when given a long header line. ", 20)
	var cpu time.Duration
	var ms runtime.MemStats
	var mallocs uint64
	i := 0
	for b.Loop() {
		ds := make([]*delivery, group)
		for j := range ds {
			i++
			from := fmt.Sprintf("rep%d@out.test", i)
			raw := plainMail(from, "security@ex.test", fmt.Sprintf("report %d", i), fmt.Sprintf("%d@out.test", i), body)
			d, err := s.openOnce(Envelope{From: from, To: []string{"security@ex.test"}}, raw, sha256.Sum256(raw))
			if err != nil {
				b.Fatal(err)
			}
			ds[j] = d
		}
		runtime.ReadMemStats(&ms)
		mallocs -= ms.Mallocs
		start := threadCPU(b)
		err := s.sh.writer.do(func(tx *bolt.Tx) error {
			for _, d := range ds {
				if _, err := s.store(tx, d); err != nil {
					return err
				}
			}
			return nil
		})
		cpu += threadCPU(b) - start
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*group), "writer-CPU-µs/report")
	b.ReportMetric(float64(mallocs)/float64(b.N*group), "writer-allocs/report")
	st := db.Stats().TxStats
	b.ReportMetric(float64(st.GetWrite())/float64(b.N), "pages/commit")
}

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
