package announce

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

func reqOptions(t testing.TB) Options {
	return Options{Project: "example.org", Key: announceKey(t)}
}

// handle runs HandleRequest in its own Update.
func handle(t testing.TB, db *bolt.DB, detail, envFrom string, msg *message.Message, now time.Time, o Options) []queue.Msg {
	t.Helper()
	var out []queue.Msg
	if err := db.Update(func(tx *bolt.Tx) (err error) {
		out, err = HandleRequest(tx, testList, detail, envFrom, msg, now, o)
		return err
	}); err != nil {
		t.Fatalf("HandleRequest(%s) = %v", detail, err)
	}
	return out
}

// tokenOf reads the token from a confirmation mail's Reply-To.
func tokenOf(t testing.TB, m queue.Msg) string {
	t.Helper()
	rt := headerOf(m.Data, "Reply-To")
	_, rest, ok := strings.Cut(rt, "announce+confirm-")
	if !ok {
		t.Fatalf("Reply-To = %q, want announce+confirm-<token>@", rt)
	}
	tok, _, _ := strings.Cut(rest, "@")
	return tok
}

func TestSubscribeConfirmUnsubscribe(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	out := handle(t, db, "subscribe", "alice@example.net", inbound(t, "Alice <alice@example.net>"), t0, o)
	if len(out) != 1 {
		t.Fatalf("subscribe: %d mails, want 1", len(out))
	}
	m := out[0]
	if m.From != "" || len(m.To) != 1 || m.To[0] != "alice@example.net" || m.Kind != KindConfirm {
		t.Errorf("confirmation envelope = from %q to %v kind %s, want <> to alice", m.From, m.To, m.Kind)
	}
	for k, want := range map[string]string{"Auto-Submitted": "auto-replied", "X-Loop": testList.Address, "List-Id": "<announce.example.org>"} {
		if got := headerOf(m.Data, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	v, err := keys.Verify(m.Data, keys.NewKeyring(announceKey(t)), keys.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("confirmation does not verify: %v", err)
	}
	tok := tokenOf(t, m)
	if len(tok) != tokenLen || !bytes.Contains(v.Bytes, []byte("confirm-")) || bytes.Contains(v.Bytes, []byte("http")) {
		t.Errorf("token %q; body must name the confirm address and hold no link", tok)
	}
	if s, ok := subscriber(t, db, "alice@example.net"); !ok || s.State != StatePending {
		t.Errorf("after request: %+v %v, want pending", s, ok)
	}
	// The store holds the hash, never the token.
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, v []byte) error {
				if bytes.Contains(k, []byte(tok)) || bytes.Contains(v, []byte(tok)) {
					t.Errorf("bucket %s holds the token in clear", name)
				}
				return nil
			})
		})
	})

	// The reply confirms, whoever sends it.
	res := handle(t, db, "confirm-"+tok, "alice@example.net", inbound(t, "alice@example.net"), t0.Add(time.Hour), o)
	if len(res) != 1 || res[0].To[0] != "alice@example.net" || res[0].Kind != KindResult {
		t.Fatalf("confirm: %+v, want one result mail to alice", res)
	}
	s, ok := subscriber(t, db, "ALICE@example.net")
	if !ok || s.State != StateActive || s.Seq == 0 || !s.Subscribed.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after confirm: %+v, want active", s)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		n, err := Count(tx)
		if n != 1 {
			t.Errorf("Count = %d, want 1", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Unsubscribe: the same two steps.
	out = handle(t, db, "unsubscribe", "alice@example.net", inbound(t, "alice@example.net"), t0.Add(2*time.Hour), o)
	if len(out) != 1 {
		t.Fatalf("unsubscribe: %d mails", len(out))
	}
	if _, ok := subscriber(t, db, "alice@example.net"); !ok {
		t.Fatal("an unsubscribe request alone removed the subscriber")
	}
	handle(t, db, "confirm-"+tokenOf(t, out[0]), "someone@else.test", inbound(t, "someone@else.test"), t0.Add(3*time.Hour), o)
	if _, ok := subscriber(t, db, "alice@example.net"); ok {
		t.Fatal("confirmed unsubscribe left the subscriber")
	}
}

func TestTokenReplayed(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	out := handle(t, db, "subscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	tok := tokenOf(t, out[0])
	if n := len(handle(t, db, "confirm-"+tok, "alice@example.net", inbound(t, "alice@example.net"), t0, o)); n != 1 {
		t.Fatalf("first confirm: %d mails", n)
	}
	// Unsubscribed since; the old subscribe token must not bring her back.
	u := handle(t, db, "unsubscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, u[0]), "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	if got := handle(t, db, "confirm-"+tok, "alice@example.net", inbound(t, "alice@example.net"), t0.Add(time.Minute), o); len(got) != 0 {
		t.Errorf("replayed token: %d mails, want none", len(got))
	}
	if _, ok := subscriber(t, db, "alice@example.net"); ok {
		t.Error("replayed subscribe token subscribed again")
	}
}

func TestTokenWrongAction(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	sub := handle(t, db, "subscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	subTok := tokenOf(t, sub[0])
	// A confirmation token is no one-click token.
	err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, subTok, t0) })
	if !errors.Is(err, ErrUnknownToken) {
		t.Errorf("Unsubscribe(subscribe token) = %v, want ErrUnknownToken", err)
	}
	handle(t, db, "confirm-"+subTok, "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	unsub := handle(t, db, "unsubscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	err = db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tokenOf(t, unsub[0]), t0) })
	if !errors.Is(err, ErrUnknownToken) {
		t.Errorf("Unsubscribe(unsubscribe confirmation token) = %v, want ErrUnknownToken", err)
	}
	// And a one-click token confirms nothing.
	var oneclick string
	db.View(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		r, _ := b.getSub("alice@example.net")
		oneclick = r.OneClick
		return nil
	})
	if got := handle(t, db, "confirm-"+oneclick, "alice@example.net", inbound(t, "alice@example.net"), t0, o); len(got) != 0 {
		t.Errorf("one-click token as confirmation: %d mails", len(got))
	}
	if s, ok := subscriber(t, db, "alice@example.net"); !ok || s.State != StateActive {
		t.Errorf("after wrong-action tokens: %+v %v, want still active", s, ok)
	}
}

func TestTokenWrongAddress(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	out := handle(t, db, "subscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	tok := tokenOf(t, out[0])
	// Mallory, holding Alice's token, confirms from his own address: the
	// token acts on Alice only, and the result goes to Alice.
	res := handle(t, db, "confirm-"+tok, "mallory@evil.test", inbound(t, "mallory@evil.test"), t0, o)
	if len(res) != 1 || res[0].To[0] != "alice@example.net" {
		t.Fatalf("result = %+v, want one mail to alice", res)
	}
	if _, ok := subscriber(t, db, "mallory@evil.test"); ok {
		t.Error("the confirming sender was subscribed")
	}
	// A request for Bob cannot be confirmed with a token minted for Alice's
	// unsubscribe: Bob stays as he is.
	bob := handle(t, db, "subscribe", "bob@example.net", inbound(t, "bob@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, bob[0]), "bob@example.net", inbound(t, "bob@example.net"), t0, o)
	u := handle(t, db, "unsubscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	handle(t, db, "confirm-"+tokenOf(t, u[0]), "bob@example.net", inbound(t, "bob@example.net"), t0, o)
	if s, ok := subscriber(t, db, "bob@example.net"); !ok || s.State != StateActive {
		t.Errorf("bob after alice's unsubscribe token: %+v %v, want active", s, ok)
	}
	if _, ok := subscriber(t, db, "alice@example.net"); ok {
		t.Error("alice's unsubscribe token did not remove alice")
	}
}

func TestTokenExpired(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	a := handle(t, db, "subscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	b := handle(t, db, "subscribe", "bob@example.net", inbound(t, "bob@example.net"), t0, o)
	if got := handle(t, db, "confirm-"+tokenOf(t, b[0]), "bob@example.net", inbound(t, "bob@example.net"), t0.Add(48*time.Hour-time.Second), o); len(got) != 1 {
		t.Errorf("token just before 48 h: %d mails, want 1", len(got))
	}
	if got := handle(t, db, "confirm-"+tokenOf(t, a[0]), "alice@example.net", inbound(t, "alice@example.net"), t0.Add(48*time.Hour), o); len(got) != 0 {
		t.Errorf("token at 48 h: %d mails, want none", len(got))
	}
	if s, _ := subscriber(t, db, "alice@example.net"); s.State == StateActive {
		t.Error("expired token subscribed")
	}
	// The pending record and the token go with the next clean-up.
	handle(t, db, "subscribe", "carol@example.net", inbound(t, "carol@example.net"), t0.Add(49*time.Hour), o)
	if _, ok := subscriber(t, db, "alice@example.net"); ok {
		t.Error("pending subscriber kept after its token expired")
	}
	db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketTokens).Stats().KeyN; n != 1 {
			t.Errorf("%d tokens stored, want 1 (carol's)", n)
		}
		return nil
	})
}

func TestMalformedTokens(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	for _, d := range []string{"confirm-", "confirm-x", "confirm-" + strings.Repeat("a", 25), "confirm-" + strings.Repeat("1", 26), "confirm-" + strings.Repeat("a", 27), "bounces-x", "nothing"} {
		if got := handle(t, db, d, "alice@example.net", inbound(t, "alice@example.net"), t0, o); len(got) != 0 {
			t.Errorf("%s: %d mails", d, len(got))
		}
	}
	for _, tok := range []string{"", "x", strings.Repeat("a", 26), "../../etc"} {
		if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, t0) }); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("Unsubscribe(%q) = %v", tok, err)
		}
	}
}

// TestRepliesIdentical: subscribed or not, the requester gets the same
// bytes (same randomness, same clock), for subscribe and for unsubscribe.
func TestRepliesIdentical(t *testing.T) {
	for _, detail := range []string{"subscribe", "unsubscribe"} {
		t.Run(detail, func(t *testing.T) {
			member, _ := newDB(t)
			stranger, _ := newDB(t)
			addSubscribersAt(t, member, "alice@example.net")
			// Alice is disabled on a third list: same answer again.
			disabled, _ := newDB(t)
			addSubscribersAt(t, disabled, "alice@example.net")
			disabled.Update(func(tx *bolt.Tx) error {
				b, _ := open(tx)
				for _, j := range []string{"a", "b", "c"} {
					b.bounce("alice@example.net", j, Options{}.withDefaults())
				}
				return nil
			})
			var outs [][]byte
			for _, db := range []*bolt.DB{member, stranger, disabled} {
				o := reqOptions(t)
				o.Rand = newDetRand(7)
				out := handle(t, db, detail, "alice@example.net", inbound(t, "alice@example.net"), t0, o)
				if len(out) != 1 {
					t.Fatalf("%d mails", len(out))
				}
				outs = append(outs, out[0].Data)
			}
			if !bytes.Equal(outs[0], outs[1]) || !bytes.Equal(outs[0], outs[2]) {
				t.Errorf("replies differ between subscribed, unknown and disabled addresses:\n%s\n---\n%s", outs[0], outs[1])
			}
		})
	}
}

func addSubscribersAt(t *testing.T, db *bolt.DB, addrs ...string) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, a := range addrs {
			if err := Activate(tx, a, t0.Add(-time.Hour), Options{List: testList}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimit(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	o.Key = nil // speed; signing is tested elsewhere
	sent := 0
	for i, d := range []string{"subscribe", "unsubscribe", "subscribe", "subscribe", "unsubscribe"} {
		sent += len(handle(t, db, d, "victim@example.net", inbound(t, "victim@example.net"), t0.Add(time.Duration(i)*time.Hour), o))
	}
	if sent != 3 {
		t.Errorf("%d confirmations to one address within 5 h, want 3", sent)
	}
	// Another address is not affected; case does not make a new address.
	if n := len(handle(t, db, "subscribe", "VICTIM@EXAMPLE.NET", inbound(t, "VICTIM@EXAMPLE.NET"), t0.Add(5*time.Hour), o)); n != 0 {
		t.Errorf("upper-case spelling: %d mails, want 0", n)
	}
	if n := len(handle(t, db, "subscribe", "other@example.net", inbound(t, "other@example.net"), t0.Add(5*time.Hour), o)); n != 1 {
		t.Errorf("other address: %d mails, want 1", n)
	}
	// 24 h after the first, one more may go.
	if n := len(handle(t, db, "subscribe", "victim@example.net", inbound(t, "victim@example.net"), t0.Add(24*time.Hour), o)); n != 1 {
		t.Errorf("after 24 h: %d mails, want 1", n)
	}
}

func TestAutomaticMailIgnored(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	o.Key = nil
	cases := []struct {
		name, env string
		msg       *message.Message
	}{
		{"auto-replied", "alice@example.net", inbound(t, "alice@example.net", "Auto-Submitted: auto-replied")},
		{"precedence bulk", "alice@example.net", inbound(t, "alice@example.net", "Precedence: bulk")},
		{"list mail", "alice@example.net", inbound(t, "alice@example.net", "List-Id: <x.example.net>")},
		{"null sender", "", inbound(t, "alice@example.net")},
		{"our own address", "announce+x@example.org", inbound(t, "announce+x@example.org")},
		{"bad address", "x", inbound(t, "\"a b\"@example.net")},
	}
	for _, c := range cases {
		if got := handle(t, db, "subscribe", c.env, c.msg, t0, o); len(got) != 0 {
			t.Errorf("%s: %d mails, want none", c.name, len(got))
		}
	}
	o.IsOurs = func(a string) bool { return strings.HasSuffix(a, "@example.org") }
	if got := handle(t, db, "subscribe", "security@example.org", inbound(t, "security@example.org"), t0, o); len(got) != 0 {
		t.Errorf("IsOurs address: %d mails", len(got))
	}
	// An out-of-office answer to a confirmation must not confirm it.
	out := handle(t, db, "subscribe", "alice@example.net", inbound(t, "alice@example.net"), t0, o)
	tok := tokenOf(t, out[0])
	handle(t, db, "confirm-"+tok, "alice@example.net", inbound(t, "alice@example.net", "Auto-Submitted: auto-replied"), t0, o)
	if s, _ := subscriber(t, db, "alice@example.net"); s.State != StatePending {
		t.Errorf("auto-reply confirmed: %+v", s)
	}
	if got := handle(t, db, "confirm-"+tok, "alice@example.net", inbound(t, "alice@example.net"), t0, o); len(got) != 1 {
		t.Errorf("the token was used up by the auto-reply: %d mails", len(got))
	}
}

func TestRequesterIsFromThenEnvelope(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	o.Key = nil
	if out := handle(t, db, "subscribe", "bounce-123@lists.example.net", inbound(t, "Alice <alice@example.net>"), t0, o); len(out) != 1 || out[0].To[0] != "alice@example.net" {
		t.Errorf("with a From address: %+v, want the From address", out)
	}
	if out := handle(t, db, "subscribe", "bob@example.net", &message.Message{}, t0, o); len(out) != 1 || out[0].To[0] != "bob@example.net" {
		t.Errorf("without a usable From: %+v, want the envelope sender", out)
	}
}

func TestOneClickUnsubscribe(t *testing.T) {
	db, _ := newDB(t)
	addSubscribersAt(t, db, "alice@example.net", "bob@example.net")
	var tok string
	db.View(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		r, _ := b.getSub("alice@example.net")
		tok = r.OneClick
		return nil
	})
	if !validToken(tok) {
		t.Fatalf("one-click token %q", tok)
	}
	var seen []string
	db.View(func(tx *bolt.Tx) error {
		return ForEach(tx, func(s Subscriber) error { seen = append(seen, s.Address+" "+string(s.State)); return nil })
	})
	if strings.Join(seen, ",") != "alice@example.net active,bob@example.net active" {
		t.Errorf("ForEach = %q", seen)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, t0) }); err != nil {
		t.Fatalf("Unsubscribe = %v", err)
	}
	if _, ok := subscriber(t, db, "alice@example.net"); ok {
		t.Error("alice still subscribed")
	}
	if s, ok := subscriber(t, db, "bob@example.net"); !ok || s.State != StateActive {
		t.Error("bob lost his subscription")
	}
	if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, t0) }); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("second Unsubscribe = %v, want ErrUnknownToken", err)
	}
	// Subscribing again makes a new token; the old one stays dead.
	addSubscribersAt(t, db, "alice@example.net")
	if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, tok, t0) }); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("old token after resubscribing = %v, want ErrUnknownToken", err)
	}
}

func TestNormAddress(t *testing.T) {
	for in, want := range map[string]string{
		"alice@example.net":    "alice@example.net",
		" <Alice@Example.NET>": "alice@example.net",
		"a.b+c@x-y.example":    "a.b+c@x-y.example",
	} {
		if _, k, ok := normAddress(in); !ok || k != want {
			t.Errorf("normAddress(%q) = %q %v, want %q", in, k, ok, want)
		}
	}
	for _, in := range []string{"", "a", "a@b", "@example.net", "a@@example.net", "a@b@example.net", "\"a\"@example.net",
		"a b@example.net", "a@exa mple.net", "a@[192.0.2.1]", "a@example.net.", ".a@example.net", "a..b@example.net",
		"a@-x.example", "ä@example.net", "a@example.net\r\nBcc: x@y.z", strings.Repeat("a", 65) + "@example.net",
		"=?utf-8?q?a=0D=0ABcc=3A_x=40y.z?=@example.net", "a=?b@example.net"} {
		if _, _, ok := normAddress(in); ok {
			t.Errorf("normAddress(%q) accepted", in)
		}
	}
}

// TestEncodedWordAddressIgnored: a request from an address whose local
// part looks like an encoded word gets no answer, since the To field of
// the confirmation would decode to CR LF and a field (docs/threat-model.md
// B10; found by FuzzSubscriptionMail). "a=b@" is an address like any other.
func TestEncodedWordAddressIgnored(t *testing.T) {
	db, _ := newDB(t)
	o := reqOptions(t)
	o.Key = nil
	if out := handle(t, db, "subscribe", "=?utf-8?q?a=0D=0ABcc=3A_x=40y.z?=@example.net", &message.Message{}, t0, o); len(out) != 0 {
		t.Errorf("encoded-word address answered: %d mails to %v", len(out), out[0].To)
	}
	if out := handle(t, db, "subscribe", "a=b?c@example.net", &message.Message{}, t0, o); len(out) != 1 {
		t.Errorf("a=b?c@example.net: %d mails, want 1", len(out))
	}
}
