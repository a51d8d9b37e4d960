package announce

import (
	"bytes"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

// FuzzSubscriptionMail sends a subscribe and an unsubscribe request whose
// envelope sender, raw From field, subject and body come from the fuzzer,
// then confirms both tokens with that same mail (the confirming sender
// never matters: docs/threat-model.md F1). Every mail HandleRequest returns
// is checked by checkAnswer: clean CRLF (docs/threat-model.md B2), only
// the composer's fields, no decoded field with a control character, one To
// naming the address the request was answered to (B10), signed by the list
// key. A request that the rules accept (a sender, no automatic mail, a
// plain requester address that is not the list's) must get its
// confirmation, and each token its result: an execution that checks
// nothing fails. Its seeds are in testdata/fuzz/FuzzSubscriptionMail:
// realistic requests, and CR LF, encoded words that decode to CR LF,
// quoted local parts, very long values and invalid UTF-8 in each input.
func FuzzSubscriptionMail(f *testing.F) {
	key := announceKey(f)
	db, err := bolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { return Init(tx) }); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, envFrom, from, subject, body string) {
		raw := "From: " + from + "\r\nTo: announce+subscribe@example.org\r\nSubject: " + subject +
			"\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <req.1@example.net>\r\n\r\n" + body
		msg, err := message.Parse([]byte(raw), message.Limits{AllowUTF8: true})
		if err != nil {
			return // refused at DATA: no request is handled
		}
		want, accepted := fuzzRequester(envFrom, msg)
		o := Options{Project: "example.org", Key: key}
		// Each execution in a transaction rolled back: a fresh list, and no
		// rate limit carried over (docs/threat-model.md F2).
		tx, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var tokens []string
		for _, detail := range []string{"subscribe", "unsubscribe"} {
			out, err := HandleRequest(tx, testList, detail, envFrom, msg, t0, o)
			if err != nil {
				t.Fatalf("%s: %v", detail, err)
			}
			if !accepted {
				if len(out) != 0 {
					t.Fatalf("%s from %q (From %q) was answered: %d mails to %v", detail, envFrom, msg.From, len(out), out[0].To)
				}
				continue
			}
			if len(out) != 1 {
				t.Fatalf("%s from %q (From %q), answerable as %q: %d mails, want 1", detail, envFrom, msg.From, want, len(out))
			}
			h := checkAnswer(t, detail, out[0], KindConfirm, want, key, t0)
			tokens = append(tokens, fuzzToken(t, h))
		}
		for i, tok := range tokens {
			out, err := HandleRequest(tx, testList, DetailConfirmPrefix+tok, envFrom, msg, t0.Add(time.Minute), o)
			if err != nil {
				t.Fatalf("confirm %d: %v", i, err)
			}
			if len(out) != 1 {
				t.Fatalf("confirm %d of %q: %d mails, want 1", i, want, len(out))
			}
			checkAnswer(t, "confirm", out[0], KindResult, want, key, t0.Add(time.Minute))
		}
	})
}

// fuzzRequester is who the rules of HandleRequest answer, and whether
// they answer: a sender and no automatic mail (RFC 3834 §2), the From
// address when it is a plain address, else the envelope sender, and an
// address that is not the list's own (docs/threat-model.md B9).
func fuzzRequester(envFrom string, msg *message.Message) (string, bool) {
	if envFrom == "" || msg.Auto {
		return "", false
	}
	a, key, ok := normAddress(msg.From)
	if !ok {
		a, key, ok = normAddress(envFrom)
	}
	if !ok || isListAddress(testList, key) {
		return "", false
	}
	return a, true
}

// answerFields are the top-level fields reply.header and keys.Sign write
// (RFC 2369 §3, RFC 2919, RFC 3834 §5, RFC 3156 §5): anything else in a
// rendered answer was injected (docs/threat-model.md B10).
var answerFields = map[string]bool{
	"From": true, "To": true, "Reply-To": true, "Subject": true, "Date": true, "Message-Id": true,
	"Auto-Submitted": true, "List-Id": true, "X-Loop": true, "Mime-Version": true, "Content-Type": true,
}

// answerPartFields are the fields of the signed text part and of the
// signature part.
var answerPartFields = map[string]bool{
	"Content-Type": true, "Content-Transfer-Encoding": true, "Content-Description": true, "Content-Disposition": true,
}

// checkAnswer checks one mail HandleRequest (or Import, Add) returned, as
// its recipient reads it (the signature verified at now), and returns its
// header. extra are the top-level fields it may carry besides
// answerFields (a notice's List-Unsubscribe).
func checkAnswer(t *testing.T, what string, m queue.Msg, kind, to string, key *keys.Key, now time.Time, extra ...string) mail.Header {
	t.Helper()
	if m.Kind != kind || m.From != "" || len(m.To) != 1 || m.To[0] != to {
		t.Fatalf("%s: envelope kind %s from %q to %q, want %s from <> to [%s]", what, m.Kind, m.From, m.To, kind, to)
	}
	if !message.CleanLineEnds(m.Data) {
		t.Fatalf("%s: a bare CR or LF (docs/threat-model.md B2)", what)
	}
	e, err := gomessage.Read(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("%s: does not read back: %v", what, err)
	}
	h := mail.Header{Header: e.Header}
	err = e.Walk(func(path []int, p *gomessage.Entity, err error) error {
		if err != nil {
			return err
		}
		for f := p.Header.Fields(); f.Next(); {
			if !answerFields[f.Key()] && !(len(path) == 0 && slices.Contains(extra, f.Key())) && (len(path) == 0 || !answerPartFields[f.Key()]) {
				t.Fatalf("%s: field %q injected (part %v)", what, f.Key(), path)
			}
			v, err := f.Text()
			if err != nil {
				t.Fatalf("%s: field %s does not decode: %v", what, f.Key(), err)
			}
			if hasControl(v) {
				t.Fatalf("%s: field %s decodes with a control character: %q", what, f.Key(), v)
			}
		}
		if len(path) == 1 && path[0] == 0 {
			text, err := io.ReadAll(p.Body)
			if err != nil {
				t.Fatalf("%s: the text does not decode: %v", what, err)
			}
			if !strings.Contains(string(text), to) {
				t.Fatalf("%s: the text does not name %q", what, to)
			}
			if hasControl(strings.NewReplacer("\r\n", "", "\n", "").Replace(string(text))) {
				t.Fatalf("%s: the text holds a control character: %q", what, text)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: a part does not read back: %v", what, err)
	}
	for _, k := range []string{"From", "To", "Reply-To"} {
		if len(h.Values(k)) > 1 {
			t.Fatalf("%s: %d %s fields", what, len(h.Values(k)), k)
		}
		addrs, err := h.AddressList(k)
		if err != nil {
			t.Fatalf("%s: %s %q does not parse: %v", what, k, h.Get(k), err)
		}
		for _, a := range addrs {
			if hasControl(a.Name) || hasControl(a.Address) {
				t.Fatalf("%s: %s holds a control character: %q", what, k, a)
			}
		}
		if k == "To" && (len(addrs) != 1 || addrs[0].Address != to) {
			t.Fatalf("%s: To %q, want exactly %q", what, h.Get("To"), to)
		}
	}
	if _, err := keys.Verify(m.Data, keys.NewKeyring(key), keys.Options{Now: func() time.Time { return now }}); err != nil {
		t.Fatalf("%s: the signature does not verify: %v", what, err)
	}
	return h
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) >= 0
}

// fuzzToken reads the token from a confirmation's Reply-To.
func fuzzToken(t *testing.T, h mail.Header) string {
	t.Helper()
	rt, err := h.AddressList("Reply-To")
	if err != nil || len(rt) != 1 {
		t.Fatalf("Reply-To %q: %v", h.Get("Reply-To"), err)
	}
	local, _, _ := strings.Cut(rt[0].Address, "@")
	tok, ok := strings.CutPrefix(local, testList.Local()+"+"+DetailConfirmPrefix)
	if !ok || !validToken(tok) {
		t.Fatalf("Reply-To %q holds no confirmation token", rt[0].Address)
	}
	return tok
}
