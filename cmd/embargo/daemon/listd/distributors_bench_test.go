package listd

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// BenchmarkDistributors1000 sends one embargoed distributor notice to 1,000
// distributors, each copy encrypted to that distributor's pinned key alone
// and signed by the distributors list key (docs/threat-model.md D6, D7),
// and measures, copy by copy in alternation so that both meet the same
// load on a shared machine:
//
//	embargo  the daemon's path: the notice rendered and its 1,000 copies
//	         queued (a seal spec each over one shared body) in one synced
//	         bbolt Update, as /notify does; then every copy sealed (signed,
//	         encrypted, armored PGP/MIME) by Seal, as the delivery worker
//	         does for each row it sends
//	raw      the reference: go-crypto's openpgp.Encrypt of the same rendered
//	         notice to the same key, signed by the same list key, AES-256,
//	         binary, nothing else
//
// EMBARGO_BENCH_DISTRIBUTORS changes the number of distributors (default
// 1000). Metrics, per copy: ns/copy and copies/s (embargo, all of it),
// raw-ns/copy and raw-copies/s, raw/embargo (raw's time over embargo's,
// i.e. embargo's rate over raw's: the run's ratio, 1 = as fast as raw),
// build-ns/copy, commit-ns/copy and seal-ns/copy (embargo's parts: rows
// made and written, their synced commit, the sealing), bytes/copy (sealed).
func BenchmarkDistributors1000(b *testing.B) {
	n := 1000
	if v := os.Getenv("EMBARGO_BENCH_DISTRIBUTORS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("EMBARGO_BENCH_DISTRIBUTORS=%q: want a positive integer", v)
		}
	}
	s, db, inc := distributorsService(b, n)
	now := s.o.Now()
	notice := workflow.DistributorNotice{T: now.Add(8 * 24 * time.Hour)}
	raw := newRawEncrypter(b, s, inc, notice)

	var build, commit, seal, rawTime time.Duration
	var size int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		var t1 time.Time
		var queued []queue.Msg
		err := db.Update(func(tx *bolt.Tx) error {
			defer func() { t1 = time.Now() }()
			msgs, err := s.distributorNotice(inc, notice, now)
			if err != nil {
				return err
			}
			if len(msgs) != n {
				return fmt.Errorf("%d copies, want %d", len(msgs), n)
			}
			queued = msgs
			return queue.Enqueue(tx, now, msgs...)
		})
		if err != nil {
			b.Fatal(err)
		}
		build += t1.Sub(t0)
		commit += time.Since(t1)
		size = 0
		for k, m := range queued {
			t2 := time.Now()
			r := queue.Row{Msg: m, BodySize: len(m.Body), Size: len(m.Body)}
			out, err := s.Seal(&r, bytes.NewReader(m.Body))
			if err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			raw.encrypt(b, k)
			seal += t3.Sub(t2)
			rawTime += time.Since(t3)
			size += len(out)
		}
	}
	b.StopTimer()
	copies := float64(n * b.N)
	emb := build + commit + seal
	b.ReportMetric(float64(emb.Nanoseconds())/copies, "ns/copy")
	b.ReportMetric(copies/emb.Seconds(), "copies/s")
	b.ReportMetric(float64(rawTime.Nanoseconds())/copies, "raw-ns/copy")
	b.ReportMetric(copies/rawTime.Seconds(), "raw-copies/s")
	b.ReportMetric(rawTime.Seconds()/emb.Seconds(), "raw/embargo")
	b.ReportMetric(float64(build.Nanoseconds())/copies, "build-ns/copy")
	b.ReportMetric(float64(commit.Nanoseconds())/copies, "commit-ns/copy")
	b.ReportMetric(float64(seal.Nanoseconds())/copies, "seal-ns/copy")
	b.ReportMetric(float64(size)/float64(n), "bytes/copy")
}

// rawEncrypter is the reference of BenchmarkDistributors1000: go-crypto's
// openpgp.Encrypt of the rendered notice, signed, to each distributor's key.
type rawEncrypter struct {
	plain  []byte
	signer *openpgp.Entity
	to     []*openpgp.Entity
	cfg    *packet.Config
}

func newRawEncrypter(b testing.TB, s *Service, inc *workflow.Incident, notice workflow.DistributorNotice) *rawEncrypter {
	d := s.advisory(inc)
	d.T = workflow.FormatInstant(notice.T)
	body, err := s.o.Templates.Render("distributor-notice", d)
	if err != nil {
		b.Fatal(err)
	}
	signer, to := rawEntities(b, s.o.DistributorsKey, s.o.Members.Keys())
	return &rawEncrypter{plain: []byte(body), signer: signer, to: to,
		cfg: &packet.Config{Time: s.o.Now, DefaultHash: crypto.SHA256, DefaultCipher: packet.CipherAES256, DefaultCompressionAlgo: packet.CompressionNone}}
}

// encrypt makes the reference copy for the k-th distributor.
func (e *rawEncrypter) encrypt(b testing.TB, k int) {
	var out bytes.Buffer
	w, err := openpgp.Encrypt(&out, []*openpgp.Entity{e.to[k%len(e.to)]}, e.signer, &openpgp.FileHints{IsBinary: true}, e.cfg)
	if err != nil {
		b.Fatal(err)
	}
	w.Write(e.plain)
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// distributorsService is a Service on a synced store with n distributors,
// each with its own pinned key, and an incident ready for /notify.
func distributorsService(b testing.TB, n int) (*Service, *bolt.DB, *workflow.Incident) {
	b.Helper()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "embargo.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	}); err != nil {
		b.Fatal(err)
	}
	tmpl, err := templates.New("")
	if err != nil {
		b.Fatal(err)
	}
	ko := keys.Options{Now: func() time.Time { return mon.Add(-time.Hour) }}
	gen := func(name, addr string) *keys.Key {
		k, err := keys.GenerateListKey(name, addr, ko)
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	roster := &lists.Roster{Lists: []lists.List{
		{Name: lists.Security, Address: "security@ex.test", Encryption: "optional", OuterSubject: "Encrypted message"},
		{Name: lists.Distributors, Address: "distributors@ex.test", Encryption: "required", OuterSubject: "Encrypted message"},
	}}
	var ring []*keys.Key
	for i := range n {
		addr := fmt.Sprintf("security%04d@vendor%d.test", i, i)
		k := gen(fmt.Sprintf("Vendor %d", i), addr)
		ring = append(ring, k)
		roster.Members = append(roster.Members, lists.Member{Email: addr, Roles: []string{workflow.RoleDistributor}, Fingerprint: k.Fingerprint()})
	}
	s := New(Options{DB: db, Roster: roster, Templates: tmpl, Project: "ex.test",
		ListKey: gen("security", "security@ex.test"), DistributorsKey: gen("distributors", "distributors@ex.test"),
		Members: keys.NewKeyring(ring...), Now: func() time.Time { return mon }})
	inc := &workflow.Incident{ID: "SEC-2026-0001", CVEs: []string{"CVE-2026-12345"}, CVSSVector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
		Advisory: workflow.Advisory{
			Summary: "heap overflow in the parser", Actor: "A remote attacker", Impact: "execute code as the server user",
			Condition: "the parser is enabled", Affected: "libfoo 1.0.0 - 1.2.2", Fixed: "libfoo 1.2.3",
			Mitigation: "Disable the parser until you upgrade.", Credit: "Rita Reporter",
		}}
	return s, db, inc
}

// rawEntities reads the list key and the recipients' keys into go-crypto
// entities through their armored exports.
func rawEntities(b testing.TB, list *keys.Key, recips []*keys.Key) (*openpgp.Entity, []*openpgp.Entity) {
	b.Helper()
	read := func(armored []byte, err error) *openpgp.Entity {
		if err != nil {
			b.Fatal(err)
		}
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
		if err != nil || len(el) != 1 {
			b.Fatalf("read key: %v (%d entities)", err, len(el))
		}
		return el[0]
	}
	signer := read(list.ArmoredPrivate(nil, keys.Options{}))
	to := make([]*openpgp.Entity, len(recips))
	for i, r := range recips {
		to[i] = read(r.ArmoredPublic())
	}
	return signer, to
}

// BenchmarkSealCopy is Seal alone on one distributor copy of the notice
// (the delivery worker's per-copy cost, without building the rows), and
// raw the reference copy of BenchmarkDistributors1000 alone.
func BenchmarkSealCopy(b *testing.B) {
	s, _, inc := distributorsService(b, 1)
	now := s.o.Now()
	notice := workflow.DistributorNotice{T: now.Add(8 * 24 * time.Hour)}
	msgs, err := s.distributorNotice(inc, notice, now)
	if err != nil || len(msgs) != 1 {
		b.Fatalf("%d copies, %v", len(msgs), err)
	}
	r := queue.Row{Msg: msgs[0], BodySize: len(msgs[0].Body), Size: len(msgs[0].Body)}
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Seal(&r, bytes.NewReader(r.Body)); err != nil {
				b.Fatal(err)
			}
		}
	})
	raw := newRawEncrypter(b, s, inc, notice)
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			raw.encrypt(b, 0)
		}
	})
}

// BenchmarkDistributorsDrain delivers one distributor notice to 1,000
// distributors end to end from the queue: the copies queued as /notify
// queues them, then the delivery worker (default Options, synced bbolt)
// sealing each copy as it sends it (Seal on the critical path) to
// EMBARGO_BENCH_SINK (host:port, e.g. smtp-sink), or to a recording server
// in process if unset. EMBARGO_BENCH_DISTRIBUTORS changes the number.
// Metric: copies/s, from the worker's start to the last outcome recorded.
func BenchmarkDistributorsDrain(b *testing.B) {
	n := 1000
	if v := os.Getenv("EMBARGO_BENCH_DISTRIBUTORS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("EMBARGO_BENCH_DISTRIBUTORS=%q: want a positive integer", v)
		}
	}
	s, db, inc := distributorsService(b, n)
	now := s.o.Now()
	addr := os.Getenv("EMBARGO_BENCH_SINK")
	if addr == "" {
		addr = queuetest.NewRecorder(b).Addr()
	}
	relay, err := queue.NewRelay("smtp://"+addr, queue.RelayOptions{HeloName: "embargo.test"})
	if err != nil {
		b.Fatal(err)
	}
	var el time.Duration
	for i := 0; i < b.N; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			msgs, err := s.distributorNotice(inc, workflow.DistributorNotice{T: now.Add(8 * 24 * time.Hour)}, now)
			if err != nil {
				return err
			}
			return queue.Enqueue(tx, now, msgs...)
		})
		if err != nil {
			b.Fatal(err)
		}
		var delivered atomic.Int64
		w := queue.New(db, relay, queue.Options{Now: s.o.Now, Sealer: s,
			Failed: func(_ *bolt.Tx, r queue.Row, reason string) error {
				return fmt.Errorf("row %d failed: %s", r.ID, reason)
			},
			Delivered: func(queue.Row, time.Time) { delivered.Add(1) }})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- w.Run(ctx) }()
		for last, since := int64(0), time.Now(); delivered.Load() < int64(n); time.Sleep(time.Millisecond) {
			if d := delivered.Load(); d != last {
				last, since = d, time.Now()
			} else if time.Since(since) > time.Minute {
				b.Fatalf("%d copies of %d delivered, then none for a minute", d, n)
			}
		}
		el += time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/el.Seconds(), "copies/s")
}
