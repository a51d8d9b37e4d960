package listd

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

// The canaries of a refused post: in its Subject and in its text. No
// warning, and no other queued row, may carry either.
const (
	warnCanarySubject = "CANARY-warn-subject"
	warnCanaryText    = "CANARY-warn-text"
)

// warnWorld is a storeService whose clock a test moves, and which counts
// the warnings it reports after each commit.
type warnWorld struct {
	s      *Service
	db     *bolt.DB
	k      *storeKeys
	now    time.Time
	counts map[string]int
}

func newWarnWorld(t *testing.T, k *storeKeys) *warnWorld {
	w := &warnWorld{k: k, now: mon, counts: map[string]int{}}
	w.s, w.db = storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return w.now }
		o.DistributorWarning = func(result string) { w.counts[result]++ }
		// A distributor without a pinned key, a member on neither list, and
		// a distributor entered by mistake under a list address.
		o.Roster.Members = append(o.Roster.Members,
			lists.Member{Email: "nokey@vendor.test", Roles: []string{"distributor"}},
			lists.Member{Email: "rm@ex.test", Roles: []string{"release-manager"}, Fingerprint: k.bob.Fingerprint()},
			lists.Member{Email: "security+bounces@ex.test", Roles: []string{"distributor"}, Fingerprint: k.bob.Fingerprint()})
	})
	return w
}

// post sends raw to distributors@ from the envelope sender from and wants
// a refusal.
func (w *warnWorld) post(t *testing.T, from string, raw []byte) {
	t.Helper()
	err := w.s.Handle(context.Background(), Envelope{From: from, To: []string{"distributors@ex.test"}}, raw)
	var r *lists.Refusal
	if !errors.As(err, &r) || r.Code != 550 {
		t.Fatalf("post from %q: %v, want a 550 refusal", from, err)
	}
}

// warnings are the queued warnings, sealed as the delivery worker would.
func (w *warnWorld) warnings(t *testing.T) []queue.Row {
	t.Helper()
	return sealRows(t, w.s, rowsOf(t, w.db, "distributors-warning"))
}

// plainPost is a plaintext post whose From is from.
func plainPost(from string, extra ...string) []byte {
	h := "From: " + from + "\r\nTo: distributors@ex.test\r\nSubject: " + warnCanarySubject + "\r\nMessage-ID: <" + from + ".plain@ex.test>\r\n" +
		"Date: Mon, 23 Nov 2026 08:59:00 +0000\r\n" + strings.Join(extra, "")
	return []byte(h + textEntity + "The fix is in " + warnCanaryText + ".\r\n")
}

// encryptedPost is a post encrypted to the distributors list key, signed
// by signer (nil: unsigned), whose From is from.
func encryptedPost(t *testing.T, k *storeKeys, from string, signer *keys.Key) []byte {
	t.Helper()
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: "distributors@ex.test"}})
	h.SetMessageID(from + ".enc@ex.test")
	raw, err := keys.Encrypt(h, []byte("Subject: "+warnCanarySubject+"\r\n"+textEntity+warnCanaryText+"\r\n"), k.dists, signer,
		keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// readWarning checks a sealed warning the way its recipient's mail client
// would: the outer header generic, the content encrypted to key and signed
// by the distributors list key, no canary anywhere. It returns the text.
func readWarning(t *testing.T, r queue.Row, k *storeKeys, key *keys.Key) string {
	t.Helper()
	if r.From != "" {
		t.Errorf("warning sent from <%s>, want the null sender (RFC 3834 §3.3)", r.From)
	}
	if r.Seal == nil || lists.Name(r.Seal.Signer) != lists.Distributors || !strings.EqualFold(r.Seal.To, key.Fingerprint()) {
		t.Fatalf("warning seal %+v, want signed by distributors and encrypted to %s", r.Seal, key.Fingerprint())
	}
	for _, c := range []string{warnCanarySubject, warnCanaryText} {
		if bytes.Contains(r.Data, []byte(c)) || bytes.Contains(r.Body, []byte(c)) {
			t.Errorf("the refused post's %s reached the warning", c)
		}
	}
	outer := string(r.Data[:bytes.Index(r.Data, []byte("\r\n\r\n"))])
	if !strings.Contains(outer, "Subject: Encrypted message") || strings.Contains(outer, "refused") || !strings.Contains(outer, "multipart/encrypted") {
		t.Errorf("outer header of the warning:\n%s", outer)
	}
	dec, err := keys.Decrypt(r.Data, key, keys.NewKeyring(k.dists), keys.Options{Now: func() time.Time { return mon }})
	if err != nil {
		t.Fatalf("the warning does not decrypt with its recipient's key: %v", err)
	}
	if dec.Signature == nil || !strings.EqualFold(dec.Signature.Fingerprint, k.dists.Fingerprint()) {
		t.Errorf("the warning is not signed by the distributors key: %v", dec.SignatureErr)
	}
	m, err := message.Parse(dec.Inner, message.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{warnCanarySubject, warnCanaryText} {
		if bytes.Contains(dec.Inner, []byte(c)) {
			t.Errorf("the decrypted warning quotes the refused post (%s):\n%s", c, dec.Inner)
		}
	}
	return "Subject: " + m.Subject + "\n" + m.Text
}

// TestDistributorWarning: a plaintext post to distributors@ from a
// distributor is refused as before (550, the SRC alerted) and queues one
// warning to that distributor, encrypted to their pinned key and signed by
// the list, saying why, how to post, and that a forger may have used the
// address, and quoting nothing of the post (docs/threat-model.md G2). The
// same for an SRC member.
func TestDistributorWarning(t *testing.T) {
	k := newStoreKeys(t)
	w := newWarnWorld(t, k)
	w.post(t, "dist@vendor.test", plainPost("Dist <dist@vendor.test>"))
	kinds, _ := storedPost(t, w.db)
	if kinds["alert-distributors-refused"] != 2 || kinds["distributors-warning"] != 1 || kinds["distributors-post"] != 0 {
		t.Fatalf("rows %v, want the SRC's two alerts and one warning", kinds)
	}
	ws := w.warnings(t)
	if len(ws) != 1 || len(ws[0].To) != 1 || ws[0].To[0] != "dist@vendor.test" {
		t.Fatalf("warnings %+v, want one to dist@vendor.test", ws)
	}
	text := readWarning(t, ws[0], k, k.dist)
	for _, want := range []string{
		"Subject: [embargo] a post from your address to distributors@ex.test was refused",
		"A message claiming to be from dist@vendor.test to the embargo list",
		"it was not encrypted to the list key " + k.dists.Fingerprint(),
		"It reached nobody", "they travelled in\nplaintext", "The SRC has been told",
		"If you did not send it, someone used your address",
		"gpg --sign --encrypt --armor -u " + k.dist.Fingerprint() + " -r " + k.dists.Fingerprint(),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the warning lacks %q:\n%s", want, text)
		}
	}
	if w.counts[WarningSent] != 1 || w.counts[WarningHeld] != 0 {
		t.Errorf("reported %v, want one sent", w.counts)
	}
	if snap := snapshot(t, w.db, k); strings.Contains(snap, warnCanarySubject) || strings.Contains(snap, warnCanaryText) {
		t.Errorf("a queued row quotes the refused post:\n%s", snap)
	}

	// An SRC member's plaintext post: the warning goes to them.
	w.post(t, "alice@ex.test", plainPost("alice@ex.test"))
	ws = w.warnings(t)
	if len(ws) != 2 || ws[1].To[0] != "alice@ex.test" {
		t.Fatalf("after alice's post: %d warnings, want a second to alice", len(ws))
	}
	readWarning(t, ws[1], k, k.alice)
}

// TestDistributorWarningSignature: an encrypted post that is unsigned, or
// signed by a key that is not the one pinned for its From, warns the
// member with the reason; its text did not travel in plaintext.
func TestDistributorWarningSignature(t *testing.T) {
	k := newStoreKeys(t)
	for _, tc := range []struct {
		name   string
		signer *keys.Key
		why    string
	}{
		{"unsigned", nil, "because the message is not signed"},
		{"another key", k.applicant, "your key is not the one pinned for you"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWarnWorld(t, k)
			w.post(t, "dist@vendor.test", encryptedPost(t, k, "dist@vendor.test", tc.signer))
			ws := w.warnings(t)
			if len(ws) != 1 {
				t.Fatalf("%d warnings, want 1", len(ws))
			}
			text := readWarning(t, ws[0], k, k.dist)
			for _, want := range []string{tc.why, "its text did not travel in plaintext", "someone used your address"} {
				if !strings.Contains(text, want) {
					t.Errorf("the warning lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "they travelled in") {
				t.Errorf("an encrypted post's warning says it travelled in plaintext:\n%s", text)
			}
		})
	}
}

// TestDistributorWarningNobodyElse: no warning to a non-member, a member
// without a pinned key or on neither list, for the null sender, for mail
// from our own addresses or automatic mail, nor for a post refused for an
// outside recipient (G1: its own refusal); each post is still refused and
// the SRC alerted.
func TestDistributorWarningNobodyElse(t *testing.T) {
	k := newStoreKeys(t)
	for _, tc := range []struct {
		name, env string
		raw       []byte
	}{
		{"non-member", "stranger@out.test", plainPost("stranger@out.test")},
		{"non-member in From, distributor in the envelope", "dist@vendor.test", plainPost("stranger@out.test")},
		{"no pinned key", "nokey@vendor.test", plainPost("nokey@vendor.test")},
		{"neither distributor nor SRC", "rm@ex.test", plainPost("rm@ex.test")},
		{"null sender", "", plainPost("dist@vendor.test")},
		{"our own envelope sender", "distributors+bounces@ex.test", plainPost("dist@vendor.test")},
		{"our own From", "dist@vendor.test", plainPost("security+bounces@ex.test")},
		{"automatic", "dist@vendor.test", plainPost("dist@vendor.test", "Auto-Submitted: auto-replied\r\n")},
		{"outside Cc", "dist@vendor.test", plainPost("dist@vendor.test", "Cc: outsider@evil.example\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWarnWorld(t, k)
			w.post(t, tc.env, tc.raw)
			kinds, note := storedPost(t, w.db)
			if kinds["distributors-warning"] != 0 || len(w.counts) != 0 {
				t.Errorf("rows %v, reported %v: want no warning", kinds, w.counts)
			}
			if kinds["alert-distributors-refused"] != 2 || note != "quarantine" {
				t.Errorf("rows %v, note %q: the refusal must still alert the SRC and quarantine", kinds, note)
			}
		})
	}
}

// TestDistributorWarningRateLimit: a forger repeating plaintext posts in a
// member's name gets the member one warning per WarnWindow; every post is
// still refused and alerted, and /metrics hears of each one held back.
func TestDistributorWarningRateLimit(t *testing.T) {
	k := newStoreKeys(t)
	w := newWarnWorld(t, k)
	for i := range 3 {
		w.now = mon.Add(time.Duration(i) * 20 * time.Minute) // 0, 20, 40 minutes
		w.post(t, "dist@vendor.test", plainPost("dist@vendor.test"))
	}
	// Another member is counted apart.
	w.post(t, "alice@ex.test", plainPost("alice@ex.test"))
	kinds, _ := storedPost(t, w.db)
	if n := len(w.warnings(t)); n != 2 || kinds["alert-distributors-refused"] != 8 {
		t.Fatalf("%d warnings and rows %v after three posts by dist and one by alice in an hour, want 2 warnings and 8 alerts", n, kinds)
	}
	if w.counts[WarningSent] != 2 || w.counts[WarningHeld] != 2 {
		t.Errorf("reported %v, want 2 sent, 2 held", w.counts)
	}
	// An hour after the first warning, the next post warns again.
	w.now = mon.Add(WarnWindow + time.Second)
	w.post(t, "dist@vendor.test", plainPost("dist@vendor.test"))
	if n := len(w.warnings(t)); n != 3 {
		t.Errorf("%d warnings an hour later, want 3", n)
	}
}
