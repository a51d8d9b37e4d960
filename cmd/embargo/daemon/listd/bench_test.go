package listd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
)

// BenchmarkHandleReply measures Handle on a member's signed and encrypted
// reply in an incident's thread: opened, threaded, stored, copied to the
// other member and answered with a receipt, in one transaction. Each
// iteration changes the outer Message-ID (new bytes, so no duplicate);
// the signature repeats, so from the second on the receipt says "replay".
func BenchmarkHandleReply(b *testing.B) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	ko := keys.Options{Now: func() time.Time { return now.Add(-time.Hour) }}
	gen := func(name, addr string) *keys.Key {
		k, err := keys.GenerateListKey(name, addr, ko)
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	list, alice, bob := gen("security", "security@ex.test"), gen("Alice", "alice@ex.test"), gen("Bob", "bob@ex.test")
	db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	})
	tmpl, _ := templates.New("")
	roster := &lists.Roster{
		Lists: []lists.List{{Name: lists.Security, Address: "security@ex.test", Encryption: "optional", OuterSubject: "Encrypted message"}},
		Members: []lists.Member{{Email: "alice@ex.test", Roles: []string{"src"}, Fingerprint: alice.Fingerprint()},
			{Email: "bob@ex.test", Roles: []string{"src"}, Fingerprint: bob.Fingerprint()}},
	}
	s := New(Options{DB: db, Roster: roster, Templates: tmpl, Project: "ex.test", ListKey: list,
		Members: keys.NewKeyring(alice, bob), Now: func() time.Time { return now }})
	ctx := context.Background()
	report := "From: rep@out.test\r\nTo: security@ex.test\r\nSubject: overflow\r\nMessage-ID: <r@out.test>\r\n\r\nSteps.\r\n"
	if err := s.Handle(ctx, Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}, []byte(report)); err != nil {
		b.Fatal(err)
	}
	var outer mail.Header
	outer.SetAddressList("From", []*mail.Address{{Address: "alice@ex.test"}})
	outer.SetAddressList("To", []*mail.Address{{Address: "security+SEC-2026-0001@ex.test"}})
	outer.SetSubject("...")
	outer.SetMessageID("MSGID-PLACEHOLDER@ex.test")
	inner := "Content-Type: text/plain; charset=utf-8\r\nSubject: Re: [SEC-2026-0001] overflow\r\n\r\n/severity high\r\n\r\n> quoted\r\n"
	raw, err := keys.Encrypt(outer, []byte(inner), list, alice, keys.Options{Now: func() time.Time { return now.Add(-time.Minute) }})
	if err != nil {
		b.Fatal(err)
	}
	env := Envelope{From: "alice@ex.test", To: []string{"security+SEC-2026-0001@ex.test"}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		msg := []byte(string(raw))
		copy(msg[indexOf(msg, "MSGID-PLACEHOLDER"):], fmt.Sprintf("%017d", i))
		if err := s.Handle(ctx, env, msg); err != nil {
			b.Fatal(err)
		}
	}
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	panic("not found")
}

// BenchmarkHandleReports measures Handle on new plaintext reports from 8
// goroutines at once, on a synced store (as the daemon runs it), without
// SMTP and without delivery: the list service's share of intake. It
// reports messages per second and per commit (the group commit's groups).
// The clock is the real one: the Message-IDs it makes file by the instant.
func BenchmarkHandleReports(b *testing.B) {
	k := newStoreKeys(b)
	s, db := storeService(b, k, func(o *Options) { o.Now = time.Now })
	db.NoSync = false
	var commits atomic.Int64
	s.SetTestHooks(TestHooks{GroupCommit: func(*bolt.Tx, int) error { commits.Add(1); return nil }})
	body := strings.Repeat("The parser overflows when given a long header line. ", 20)
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				from := fmt.Sprintf("rep%d@out.test", i)
				raw := plainMail(from, "security@ex.test", fmt.Sprintf("report %d", i), fmt.Sprintf("%d@out.test", i), body)
				if err := s.Handle(context.Background(), Envelope{From: from, To: []string{"security@ex.test"}}, raw); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	st := db.Stats().TxStats
	b.ReportMetric(float64(st.GetWrite())/float64(max(commits.Load(), 1)), "pages/commit")
	b.ReportMetric(float64(st.GetWriteTime().Microseconds())/float64(max(commits.Load(), 1)), "µs-write/commit")
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(max(commits.Load(), 1)), "msgs/commit")
}
