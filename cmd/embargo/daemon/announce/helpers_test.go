package announce

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

var testList = lists.List{Name: lists.Announce, Address: "announce@example.org"}

// t0 is a Monday, 2026-11-23 09:30 UTC.
var t0 = time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)

var (
	keyOnce sync.Once
	testKey *keys.Key
	keyErr  error
)

// announceKey is the list key of every test (generated once: ~ms).
func announceKey(t testing.TB) *keys.Key {
	t.Helper()
	keyOnce.Do(func() {
		testKey, keyErr = keys.GenerateListKey("example.org Security Announcements", testList.Address, keys.Options{Now: func() time.Time { return t0.Add(-time.Hour) }})
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	return testKey
}

// openDB opens (or reopens) a real bbolt file with the package's buckets.
func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

func newDB(t testing.TB) (*bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "embargo.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	return db, path
}

// clock is a fake wall clock with a monotonic companion: Advance moves
// both, Jump only the wall clock.
type clock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func newClock(t time.Time) *clock { return &clock{wall: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.mono = c.wall.Add(d), c.mono+d
}

func (c *clock) Jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = c.wall.Add(d)
}

// detRand is a deterministic byte stream for tests that compare outputs.
type detRand struct{ r *rand.ChaCha8 }

func newDetRand(seed byte) *detRand {
	var s [32]byte
	s[0] = seed
	return &detRand{rand.NewChaCha8(s)}
}

func (d *detRand) Read(p []byte) (int, error) { return d.r.Read(p) }

// inbound parses a request mail as smtpd would hand it over.
func inbound(t testing.TB, from string, extra ...string) *message.Message {
	t.Helper()
	raw := "From: " + from + "\r\nTo: announce+subscribe@example.org\r\nSubject: subscribe\r\n" +
		"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <req." + fmt.Sprint(time.Now().UnixNano()) + "@example.net>\r\n"
	for _, e := range extra {
		raw += e + "\r\n"
	}
	raw += "\r\nplease\r\n"
	m, err := message.Parse([]byte(raw), message.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var advisorySeq atomic.Int64

// advisory is a release message as daemon/listd builds it: signed by key.
func advisory(t testing.TB, key *keys.Key, now time.Time) []byte {
	t.Helper()
	var h mail.Header
	h.Set("List-Unsubscribe", "<mailto:stale@example.org>") // replaced by the package
	h.Set("Precedence", "bulk")
	// Each release its own Message-ID, as listd gives it: the recording
	// relay checks that no Message-ID names two messages.
	h.SetMessageID(fmt.Sprintf("advisory.%d@example.org", advisorySeq.Add(1)))
	h.SetDate(now)
	h.SetSubject("[SECURITY] CVE-2026-12345: heap overflow in the parser")
	h.SetAddressList("To", []*mail.Address{{Address: testList.Address}})
	h.SetAddressList("From", []*mail.Address{{Name: "example.org Security Announcements", Address: testList.Address}})
	ent, err := textEntity("Hello example.org community,\n\nA heap overflow in the parser.\n\nFrom now on, upgrade.\n.\n")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := keys.Sign(h, ent, key, keys.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// addSubscribers activates n addresses sub0000@sN.example.net, …
func addSubscribers(t testing.TB, db *bolt.DB, n int, now time.Time) []string {
	t.Helper()
	addrs := make([]string, n)
	err := db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			addrs[i] = fmt.Sprintf("sub%05d@s%d.example.net", i, i%7)
			if err := Activate(tx, addrs[i], now, Options{List: testList}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

func recorderRelay(t testing.TB, rec *queuetest.Recorder) queue.Relay {
	t.Helper()
	r, err := queue.NewRelay(rec.URL("", ""), queue.RelayOptions{HeloName: "embargo.test"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// testFanout builds a Fanout on the fake clock.
func testFanout(t testing.TB, db *bolt.DB, relay queue.Relay, c *clock, mod func(*Options)) *Fanout {
	t.Helper()
	o := Options{List: testList, Project: "example.org", Key: announceKey(t), Now: c.Now, Mono: c.Mono,
		MinBackoff: time.Minute, MaxBackoff: time.Hour}
	if mod != nil {
		mod(&o)
	}
	return New(db, relay, o)
}

// drain runs steps until the fan-out has nothing to do at once.
func drain(t testing.TB, f *Fanout) {
	t.Helper()
	for i := 0; ; i++ {
		wait, err := f.step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if wait > 0 {
			return
		}
		if i > 1_000_000 {
			t.Fatal("fan-out does not settle")
		}
	}
}

func job(t testing.TB, db *bolt.DB, id string) Job {
	t.Helper()
	var j Job
	if err := db.View(func(tx *bolt.Tx) (err error) { j, err = GetJob(tx, id); return err }); err != nil {
		t.Fatal(err)
	}
	return j
}

func startRelease(t testing.TB, db *bolt.DB, id string, msg []byte, at time.Time) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		return StartRelease(tx, id, BounceAddress(testList, id), msg, at)
	}); err != nil {
		t.Fatal(err)
	}
}

func subscriber(t testing.TB, db *bolt.DB, addr string) (Subscriber, bool) {
	t.Helper()
	var s Subscriber
	var ok bool
	if err := db.View(func(tx *bolt.Tx) (err error) { s, ok, err = Lookup(tx, addr); return err }); err != nil {
		t.Fatal(err)
	}
	return s, ok
}

// rcptCounts counts, per recipient, the copies a recorder accepted.
func rcptCounts(msgs []queuetest.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		for _, r := range m.To {
			n[r]++
		}
	}
	return n
}

// headerOf returns the value of field k in the header of msg.
func headerOf(msg []byte, k string) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return ""
	}
	var out []string
	lines := strings.Split(string(msg[:end]), "\r\n")
	for i := 0; i < len(lines); i++ {
		name, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(name, k) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += lines[i]
		}
		out = append(out, strings.TrimSpace(v))
	}
	return strings.Join(out, "\n")
}
