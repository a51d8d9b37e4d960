package announce

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
)

func importOptions(t testing.TB) Options {
	return Options{List: testList, Project: "example.org", Key: announceKey(t), OneClick: true, OneClickBase: "https://security.example.org",
		IsOurs: func(a string) bool { return strings.HasSuffix(a, "@example.org") && !strings.HasPrefix(a, "reader") }}
}

// importEntries runs Import in its own Update.
func importEntries(t testing.TB, db *bolt.DB, now time.Time, o Options, es ...Entry) (ImportResult, []queue.Msg) {
	t.Helper()
	var res ImportResult
	var out []queue.Msg
	if err := db.Update(func(tx *bolt.Tx) (err error) {
		res, out, err = Import(tx, es, now, o)
		return err
	}); err != nil {
		t.Fatalf("Import = %v", err)
	}
	return res, out
}

func oneClickToken(t testing.TB, db *bolt.DB, addr string) string {
	t.Helper()
	var tok string
	db.View(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		r, _ := b.getSub(strings.ToLower(addr))
		if r != nil {
			tok = r.OneClick
		}
		return nil
	})
	return tok
}

// TestImportNotice: each imported address gets one notice, signed by the
// list key, from the null sender, telling where advisories come from and
// how to leave, with its own RFC 8058 one-click URI in the header and the
// body; the token in it unsubscribes that address and no other.
func TestImportNotice(t *testing.T) {
	db, _ := newDB(t)
	o := importOptions(t)
	res, out := importEntries(t, db, t0, o, Entry{Line: 1, Address: "Ann@Example.net", Name: "Ann"}, Entry{Line: 2, Address: "bob@example.com"})
	if res.Subscribed != 2 || res.Already != 0 || len(res.Skipped) != 0 || len(out) != 2 {
		t.Fatalf("Import = %+v, %d notices", res, len(out))
	}
	m := out[0]
	if m.From != "" || len(m.To) != 1 || m.To[0] != "Ann@Example.net" || m.Kind != KindNotice || !m.NoAlert {
		t.Errorf("notice envelope: from %q to %v kind %s noalert %v", m.From, m.To, m.Kind, m.NoAlert)
	}
	tok := oneClickToken(t, db, "ann@example.net")
	url := "https://security.example.org/unsubscribe/" + tok
	for k, want := range map[string]string{
		"Auto-Submitted":        "auto-generated",
		"List-Unsubscribe":      "<" + url + ">, <mailto:announce+unsubscribe@example.org?subject=unsubscribe>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"List-Id":               "<announce.example.org>",
		"Reply-To":              "",
	} {
		if got := headerOf(m.Data, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	v, err := keys.Verify(m.Data, keys.NewKeyring(announceKey(t)), keys.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("notice does not verify: %v", err)
	}
	qp, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(v.Bytes)))
	body := string(qp)
	for _, want := range []string{"Ann@Example.net is subscribed", url, "announce+unsubscribe@example.org", groupFingerprint(announceKey(t).Fingerprint())} {
		if !strings.Contains(body, want) {
			t.Errorf("notice body lacks %q:\n%s", want, body)
		}
	}
	if other := oneClickToken(t, db, "bob@example.com"); other == tok || !strings.Contains(headerOf(out[1].Data, "List-Unsubscribe"), other) {
		t.Errorf("bob's notice does not carry bob's own token")
	}
	if s, _ := subscriber(t, db, "ann@example.net"); s.State != StateActive || s.Name != "Ann" || s.Via != ViaImport {
		t.Errorf("ann = %+v", s)
	}
	// The URI in the notice unsubscribes ann, and only ann.
	if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, t0) }); err != nil {
		t.Fatal(err)
	}
	if _, ok := subscriber(t, db, "ann@example.net"); ok {
		t.Error("ann is still subscribed after her one-click")
	}
	if _, ok := subscriber(t, db, "bob@example.com"); !ok {
		t.Error("bob lost his subscription")
	}

	// Without one-click, the notice names the mailto URI alone.
	o.OneClick = false
	_, out = importEntries(t, db, t0, o, Entry{Address: "carol@example.com"})
	if got := headerOf(out[0].Data, "List-Unsubscribe"); got != "<mailto:announce+unsubscribe@example.org?subject=unsubscribe>" || headerOf(out[0].Data, "List-Unsubscribe-Post") != "" {
		t.Errorf("without one-click: List-Unsubscribe %q, -Post %q", got, headerOf(out[0].Data, "List-Unsubscribe-Post"))
	}
	if strings.Contains(string(out[0].Data), "https://") {
		t.Error("a notice without one-click holds a link")
	}
}

// TestImportIdempotent: importing the same entries again sends nothing and
// changes nothing; an address pending a confirmation by mail is taken on
// the operator's word (one notice); a name learnt later is kept.
func TestImportIdempotent(t *testing.T) {
	db, _ := newDB(t)
	o := importOptions(t)
	handle(t, db, "subscribe", "pending@example.net", inbound(t, "pending@example.net"), t0, o)
	es := []Entry{{Address: "a@example.net"}, {Address: "pending@example.net", Name: "Pen Ding"}, {Address: "b@example.net"}}
	if res, out := importEntries(t, db, t0, o, es...); res.Subscribed != 3 || len(out) != 3 {
		t.Fatalf("first import: %+v, %d notices", res, len(out))
	}
	seq := func() uint64 { s, _ := subscriber(t, db, "a@example.net"); return s.Seq }
	before := seq()
	es[0].Name = "Late Name"
	res, out := importEntries(t, db, t0.Add(time.Hour), o, es...)
	if res.Subscribed != 0 || res.Already != 3 || len(out) != 0 {
		t.Fatalf("second import: %+v, %d notices; want all already subscribed and nothing sent", res, len(out))
	}
	if s, _ := subscriber(t, db, "a@example.net"); s.Name != "Late Name" || s.Seq != before {
		t.Errorf("after the second import: %+v (seq was %d)", s, before)
	}
	var n int
	db.View(func(tx *bolt.Tx) error { n, _ = Count(tx); return nil })
	if n != 3 {
		t.Errorf("%d active, want 3", n)
	}
}

// TestImportDoesNotBringBack: an address that left (one-click, confirmed
// unsubscribe by mail, an operator's removal) or was disabled after bounces
// is not subscribed again by an import, which says why; Add brings it back
// on the operator's word, and a confirmed subscription by mail lets imports
// count it again. Addresses of the server itself are never subscribed.
func TestImportDoesNotBringBack(t *testing.T) {
	db, _ := newDB(t)
	o := importOptions(t)
	all := []Entry{{Line: 1, Address: "oneclick@example.net"}, {Line: 2, Address: "bymail@example.net"}, {Line: 3, Address: "removed@example.net"},
		{Line: 4, Address: "bounced@example.net"}, {Line: 5, Address: "security@example.org"}, {Line: 6, Address: "announce+subscribe@example.org"}}
	res, _ := importEntries(t, db, t0, o, all...)
	if res.Subscribed != 4 || len(res.Skipped) != 2 || !strings.Contains(res.Skipped[0].Reason, "address of this server") || res.Skipped[1].Line != 6 {
		t.Fatalf("first import: %+v", res)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, oneClickToken(t, db, "oneclick@example.net"), t0) }); err != nil {
		t.Fatal(err)
	}
	out := handle(t, db, "unsubscribe", "bymail@example.net", inbound(t, "bymail@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, out[0]), "bymail@example.net", inbound(t, "bymail@example.net"), t0, o)
	if err := db.Update(func(tx *bolt.Tx) error { _, err := Remove(tx, "removed@example.net", t0); return err }); err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		for _, job := range []string{"r1", "r2", "r3"} {
			b, _ := open(tx)
			if _, err := b.bounce("bounced@example.net", job, o.withDefaults()); err != nil {
				return err
			}
		}
		return nil
	})
	if s, _ := subscriber(t, db, "bounced@example.net"); s.State != StateDisabled {
		t.Fatalf("bounced = %+v", s)
	}

	res, out = importEntries(t, db, t0.Add(time.Hour), o, all[:4]...)
	if res.Subscribed != 0 || len(out) != 0 || len(res.Skipped) != 4 {
		t.Fatalf("second import: %+v, %d notices; want 4 skipped", res, len(out))
	}
	for i, want := range []string{"left the list on 2026-11-23 (one-click unsubscribe)", "(confirmed unsubscribe by mail)", "(removed by an operator)", "disabled after 3 bounced releases"} {
		if r := res.Skipped[i].Reason; !strings.Contains(r, want) || !strings.Contains(r, "embargo subscribers add "+all[i].Address) {
			t.Errorf("line %d: %q, want %q and how to add it back", i+1, r, want)
		}
	}

	// Add brings them back: a notice for those who had left, none for the
	// disabled one (it had its notice).
	for i, e := range all[:4] {
		var oc Outcome
		var msgs []queue.Msg
		if err := db.Update(func(tx *bolt.Tx) (err error) { oc, _, msgs, err = Add(tx, e, t0.Add(2*time.Hour), o); return err }); err != nil {
			t.Fatal(err)
		}
		want, n := OutcomeSubscribed, 1
		if i == 3 {
			want, n = OutcomeEnabled, 0
		}
		if oc != want || len(msgs) != n {
			t.Errorf("Add(%s) = %s with %d notices, want %s with %d", e.Address, oc, len(msgs), want, n)
		}
	}
	if s, _ := subscriber(t, db, "removed@example.net"); s.State != StateActive || s.Via != ViaOperator {
		t.Errorf("removed@ after Add = %+v", s)
	}
	var oc Outcome
	var why string
	db.Update(func(tx *bolt.Tx) (err error) {
		oc, why, _, err = Add(tx, Entry{Address: "nonsense"}, t0, o)
		return err
	})
	if oc != OutcomeSkipped || !strings.Contains(why, "not a plain address") {
		t.Errorf("Add(nonsense) = %s, %q", oc, why)
	}

	// Leaving and coming back by mail: imports count the address again.
	db.Update(func(tx *bolt.Tx) error { _, err := Remove(tx, "removed@example.net", t0); return err })
	out = handle(t, db, "subscribe", "removed@example.net", inbound(t, "removed@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, out[0]), "removed@example.net", inbound(t, "removed@example.net"), t0, o)
	db.Update(func(tx *bolt.Tx) error { _, err := Remove(tx, "removed@example.net", t0); return err })
	if res, _ := importEntries(t, db, t0, o, all[2]); res.Subscribed != 0 {
		t.Errorf("removed again: import subscribed it")
	}
	out = handle(t, db, "subscribe", "removed@example.net", inbound(t, "removed@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, out[0]), "removed@example.net", inbound(t, "removed@example.net"), t0, o)
	if s, _ := subscriber(t, db, "removed@example.net"); s.Via != ViaMail || s.State != StateActive {
		t.Errorf("confirmed by mail: %+v", s)
	}
}

// TestLeftStoresNoAddress: what the store remembers of an address that left
// does not contain the address (docs/threat-model.md F3 spirit: nothing to leak).
func TestLeftStoresNoAddress(t *testing.T) {
	db, _ := newDB(t)
	o := importOptions(t)
	importEntries(t, db, t0, o, Entry{Address: "gone@example.net"})
	db.Update(func(tx *bolt.Tx) error { _, err := Remove(tx, "gone@example.net", t0); return err })
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, v []byte) error {
				if strings.Contains(string(k)+string(v), "gone@") {
					t.Errorf("bucket %s still holds the address: %q", name, k)
				}
				return nil
			})
		})
	})
}

// TestLeftSaysWhenAndHow: Left finds an address that left by its address
// in any case, with the instant and the way; not one that never did, nor
// one added back.
func TestLeftSaysWhenAndHow(t *testing.T) {
	db, _ := newDB(t)
	o := importOptions(t)
	importEntries(t, db, t0, o, Entry{Address: "gone@example.net"}, Entry{Address: "stays@example.net"})
	db.Update(func(tx *bolt.Tx) error { _, err := Remove(tx, "gone@example.net", t0.Add(time.Hour)); return err })
	left := func(addr string) (at time.Time, how string, ok bool) {
		db.View(func(tx *bolt.Tx) error {
			var err error
			if at, how, ok, err = Left(tx, addr); err != nil {
				t.Fatal(err)
			}
			return nil
		})
		return at, how, ok
	}
	if at, how, ok := left("Gone@Example.NET"); !ok || !at.Equal(t0.Add(time.Hour)) || how != LeftOperator {
		t.Errorf("Left(gone) = %v, %q, %v", at, how, ok)
	}
	for _, a := range []string{"stays@example.net", "never@example.net", "not an address"} {
		if _, _, ok := left(a); ok {
			t.Errorf("Left(%q) found a record", a)
		}
	}
	db.Update(func(tx *bolt.Tx) error {
		_, _, _, err := Add(tx, Entry{Address: "gone@example.net"}, t0, o)
		return err
	})
	if _, _, ok := left("gone@example.net"); ok {
		t.Error("Left found the record of an address added back")
	}
}
