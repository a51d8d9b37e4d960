package announce

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
)

// BenchmarkReleaseOneClick releases one advisory at T to N subscribers with
// a per-subscriber RFC 8058 one-click List-Unsubscribe on every copy (one
// SMTP transaction per subscriber, the signed body shared), on a synced
// bbolt file and the real clocks: the Fanout's own Run loop waits for T.
// The copies go over the fan-out's own persistent connections
// (Options.SMTP), pipelined, BatchSize subscribers per batch and commit.
//
// contrib/bench/run drives it with -benchtime 1x and these variables:
//
//	EMBARGO_BENCH_SUBSCRIBERS  N (default 10000)
//	EMBARGO_BENCH_SINK         host:port of an outside SMTP sink (smtp-sink);
//	                           default a discarding go-smtp server in process
//	EMBARGO_BENCH_CONNECTIONS  connections (default 8)
//	EMBARGO_BENCH_DKIM         "rsa" (2048 bits) or "ed25519": sign every copy
//
// Metrics: msgs/s (copies accepted by the sink per second, from T to the
// job's last commit), first-copy-ms (from T to the sink's 250 for the first
// copy), rss-MB (peak resident memory of this process during the release
// above its idle level after setup, bbolt's mapped pages included),
// bytes/copy (a copy's size), connections and transactions/op.
func BenchmarkReleaseOneClick(b *testing.B) {
	n := envInt(b, "EMBARGO_BENCH_SUBSCRIBERS", benchSubscribers)
	conns := envInt(b, "EMBARGO_BENCH_CONNECTIONS", DefaultConnections)
	key := announceKey(b)
	msg := advisory(b, key, t0)
	db, _ := newDB(b)
	activateMany(b, db, n, t0)

	addr := os.Getenv("EMBARGO_BENCH_SINK")
	if addr == "" {
		addr = newSink(b).ln.Addr().String()
	}
	var dk *DKIM
	switch v := os.Getenv("EMBARGO_BENCH_DKIM"); v {
	case "":
	case "rsa", "ed25519":
		dk = &DKIM{Domain: "example.org", Selector: "embargo", Signer: testDKIMKeys(b)[v]}
	default:
		b.Fatalf("EMBARGO_BENCH_DKIM=%q: want rsa or ed25519", v)
	}
	fc := &firstCopy{}
	released := make(chan string, 1)
	o := Options{
		List: testList, Project: "example.org", Key: key,
		OneClick: true, OneClickBase: "https://security.example.org",
		SMTP:        &pipeline.Config{Addr: addr, HeloName: "embargo.test"},
		Connections: conns, DKIM: dk, Observe: fc.observe,
		Released: func(tx *bolt.Tx, j Job) error {
			tx.OnCommit(func() { released <- j.ID })
			return nil
		},
	}
	f := New(db, nil, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	idle := settledRSS()
	peak := sampleRSS()
	var sum, first time.Duration
	var transactions int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fc.reset()
		id := fmt.Sprintf("bench-%d", i)
		// T a little ahead, so that what is timed starts at T as in
		// production: the Fanout sleeps until then.
		at := time.Now().Add(200 * time.Millisecond).Round(0)
		startRelease(b, db, id, msg, at)
		f.Kick()
		select {
		case got := <-released:
			if got != id {
				b.Fatalf("released %s, want %s", got, id)
			}
		case <-time.After(6 * time.Hour):
			b.Fatalf("release %s not done after 6 h", id)
		}
		sum += time.Since(at)
		first += fc.first().Sub(at)
		j := job(b, db, id)
		if j.State != JobReleased || j.Sent != n {
			b.Fatalf("job %+v", j)
		}
		transactions += j.Transactions
	}
	b.StopTimer()
	top := peak()
	b.ReportMetric(float64(n*b.N)/sum.Seconds(), "msgs/s")
	b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "first-copy-ms")
	b.ReportMetric(float64(max(top.total-idle.total, 0))/(1<<20), "rss-MB")
	b.ReportMetric(float64(max(top.file-idle.file, 0))/(1<<20), "rss-file-MB")
	b.ReportMetric(float64(copySize(b, msg, dk)), "bytes/copy")
	b.ReportMetric(float64(conns), "connections")
	b.ReportMetric(float64(transactions)/float64(b.N), "transactions/op")
	b.ReportMetric(float64(n), "subscribers")
}

// copySize is the size of one one-click copy of msg.
func copySize(b *testing.B, msg []byte, dk *DKIM) int {
	body, err := prepareRelease(msg, testList, nil, Options{}.withDefaults(), t0)
	if err != nil {
		b.Fatal(err)
	}
	own, err := oneClickUnsubscribe(testList, "https://security.example.org", "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	if err != nil {
		b.Fatal(err)
	}
	n := len(own) + len(body)
	if dk != nil {
		s, err := newDKIMSigner(dk, body)
		if err != nil {
			b.Fatal(err)
		}
		sig, err := s.sign(own)
		if err != nil {
			b.Fatal(err)
		}
		n += len(sig)
	}
	return n
}

// firstCopy notes when the relay first accepted a copy of a round
// (Options.Observe).
type firstCopy struct {
	mu sync.Mutex
	at time.Time
}

func (r *firstCopy) observe(result string) {
	if result != "delivered" {
		return
	}
	r.mu.Lock()
	if r.at.IsZero() {
		r.at = time.Now()
	}
	r.mu.Unlock()
}

func (r *firstCopy) reset() {
	r.mu.Lock()
	r.at = time.Time{}
	r.mu.Unlock()
}

func (r *firstCopy) first() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

// activateMany subscribes n addresses, 10,000 per transaction, so that 10^6
// subscribers do not make one giant transaction.
func activateMany(b *testing.B, db *bolt.DB, n int, now time.Time) {
	b.Helper()
	const per = 10_000
	for lo := 0; lo < n; lo += per {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := lo; i < min(lo+per, n); i++ {
				if err := Activate(tx, fmt.Sprintf("sub%07d@s%d.example.net", i, i%7), now, Options{List: testList}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// settledRSS is the resident set after a collection returned what it could
// to the system: the idle level a release is measured against.
func settledRSS() rss {
	runtime.GC()
	debug.FreeOSMemory()
	return readRSS()
}

// rss is the resident set of this process: all of it, and the part that
// is file pages (bbolt's mapped store).
type rss struct{ total, file int64 }

// sampleRSS samples the resident set every 10 ms until the returned
// function is called, which returns the peak (and the file part then).
func sampleRSS() func() rss {
	var mu sync.Mutex
	peak := readRSS()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := readRSS(); v.total > peak.total {
					mu.Lock()
					peak = v
					mu.Unlock()
				}
			}
		}
	}()
	return func() rss {
		close(stop)
		<-done
		if v := readRSS(); v.total > peak.total {
			return v
		}
		return peak
	}
}

// readRSS reads VmRSS and RssFile of this process (zero where /proc is absent).
func readRSS() rss {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return rss{}
	}
	defer f.Close()
	var r rss
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		switch k {
		case "VmRSS":
			r.total = kb << 10
		case "RssFile":
			r.file = kb << 10
		}
	}
	return r
}
