package announce

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// FuzzOperatorNotice puts addresses on the list as an operator does: the
// entries of a members listing (ParseListing: a Mailman 3 listing or a
// Google Groups export, whose names and addresses the earlier list's
// members wrote) through Import, then one address and display name
// through Add (`embargo subscribers add`), with one-click unsubscribe on
// or off. Every notice is checked by checkAnswer as the mail its
// recipient reads: clean CRLF (docs/threat-model.md B2), only the
// composer's fields and the list's List-Unsubscribe (and, one-click,
// List-Unsubscribe-Post), no decoded field with a control character,
// exactly one To naming the address (B10), its text naming it, signed by
// the list key. With one-click, the notice's URI carries the token the
// store keeps for that address, and a POST of it (Unsubscribe) removes
// that address and no other, and sends nothing; the stored display name
// is one clean line (CleanName). An address Add must take (a plain
// address, not the list's own) must end up on the list: an execution
// that checks nothing fails.
func FuzzOperatorNotice(f *testing.F) {
	key := announceKey(f)
	db, err := bolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { return Init(tx) }); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("Anne Example <anne@example.com>\n=?utf-8?b?SsO8cmdlbg==?= <j@example.de>\n"), "reader@example.net", "Reader", true)
	// More in testdata/fuzz/FuzzOperatorNotice: Google Groups exports,
	// names with CR LF, encoded words that decode to CR LF, quotes, angle
	// brackets and bidi controls, "/" and "=?" local parts, very long
	// values, invalid UTF-8.
	f.Fuzz(func(t *testing.T, listing []byte, addr, name string, oneClick bool) {
		o := Options{List: testList, Project: "example.org", Key: key, OneClick: oneClick, OneClickBase: "https://security.example.org",
			IsOurs: func(a string) bool { return strings.HasSuffix(strings.ToLower(a), "@example.org") }}
		// Each execution in a transaction rolled back: a fresh list.
		tx, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var notices []queue.Msg
		if l, err := ParseListing(listing); err == nil {
			_, out, err := Import(tx, l.Entries, t0, o)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			notices = append(notices, out...)
		}
		oc, why, out, err := Add(tx, Entry{Address: addr, Name: name}, t0, o)
		if err != nil {
			t.Fatalf("Add(%q): %v", addr, err)
		}
		notices = append(notices, out...)
		if a, key, ok := normAddress(addr); ok && !o.IsOurs(a) && !isListAddress(testList, key) {
			if s, ok := subscriberIn(t, tx, key); !ok || s.State != StateActive {
				t.Fatalf("Add(%q) = %s (%s), and the address is not on the list", addr, oc, why)
			}
		}
		for _, m := range notices {
			checkNotice(t, tx, m, o)
		}
	})
}

// checkNotice checks one notice (see FuzzOperatorNotice) and, with
// one-click, unsubscribes its recipient with the token of its URI.
func checkNotice(t *testing.T, tx *bolt.Tx, m queue.Msg, o Options) {
	t.Helper()
	if len(m.To) != 1 {
		t.Fatalf("a notice to %v", m.To)
	}
	to := m.To[0]
	h := checkAnswer(t, "notice", m, KindNotice, to, o.Key, t0, "List-Unsubscribe", "List-Unsubscribe-Post")
	_, key, _ := normAddress(to)
	s, ok := subscriberIn(t, tx, key)
	if !ok || s.State != StateActive {
		t.Fatalf("a notice to %s, who is not on the list", to)
	}
	if n := s.Name; n != CleanName(n) || utf8.RuneCountInString(n) > maxName ||
		strings.IndexFunc(n, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
		t.Fatalf("%s: stored name %q is not one clean line", to, n)
	}
	mailto := mailtoUnsubscribe(o.List)
	lu, post := h.Get("List-Unsubscribe"), h.Get("List-Unsubscribe-Post")
	if !o.OneClick {
		if lu != mailto || post != "" {
			t.Fatalf("%s: List-Unsubscribe %q, -Post %q, want %q alone", to, lu, post, mailto)
		}
		return
	}
	tok, _ := oneClickTokenIn(t, tx, key)
	if want := "<" + OneClickURL(o.OneClickBase, tok) + ">, " + mailto; !validToken(tok) || lu != want || post != "List-Unsubscribe=One-Click" {
		t.Fatalf("%s: List-Unsubscribe %q, -Post %q, want %q", to, lu, post, want)
	}
	before, err := Count(tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := Unsubscribe(tx, tok, t0); err != nil {
		t.Fatalf("%s: one-click: %v", to, err)
	}
	after, err := Count(tx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := subscriberIn(t, tx, key); ok || after != before-1 {
		t.Fatalf("%s: after its one-click still on the list (%v), or others gone (%d → %d)", to, ok, before, after)
	}
}

// subscriberIn reads one subscriber in tx.
func subscriberIn(t *testing.T, tx *bolt.Tx, key string) (*subRecord, bool) {
	t.Helper()
	b, err := open(tx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.getSub(key)
	if err != nil {
		t.Fatal(err)
	}
	return r, r != nil
}

// oneClickTokenIn is the one-click token the store keeps for key.
func oneClickTokenIn(t *testing.T, tx *bolt.Tx, key string) (string, bool) {
	r, ok := subscriberIn(t, tx, key)
	if !ok {
		return "", false
	}
	return r.OneClick, true
}
