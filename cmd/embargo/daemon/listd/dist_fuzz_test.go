package listd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

// FuzzDistributorPost sends two posts to distributors@ whose subject
// (protected, inside the encryption), text, and attachment name and type
// come from the fuzzer, each encrypted to the list key and signed: the
// distributor's, which goes to the committee alone, then alice's, which
// the list redistributes to the distributors and copies to bob. Every row
// queued is made as the delivery worker makes it and checked by
// checkQueued (docs/threat-model.md B2, B10, D6, E5): the distributor's
// copies decrypt with its key, and no copy to a committee member reads as
// commands. A post taken must queue its copies, each committee copy under
// the list's tag; a post refused, none.
func FuzzDistributorPost(f *testing.F) {
	k := newStoreKeys(f)
	f.Add("heads-up: SEC-2026-0001", "We see the crash on our 1.2 branch too.\n\nA backport is ready.\n", "backport.patch", "text/x-diff")
	// More in testdata/fuzz/FuzzDistributorPost: hostile values (CR and
	// LF, header lines, encoded words, "/" and armor lines, long lines,
	// invalid UTF-8, control and bidi characters, odd types).
	f.Fuzz(func(t *testing.T, subject, text, attName, attType string) {
		s, db := storeService(t, k)
		after := uint64(0)
		for _, p := range []struct {
			author *keys.Key
			want   map[string]int // the copies a post taken queues
		}{
			{k.dist, map[string]int{"distributors-copy": 2}},
			{k.alice, map[string]int{"distributors-copy": 1, "distributors-post": 1}},
		} {
			from := p.author.Email()
			raw, ok := distPost(k, p.author, subject, text, attName, attType)
			if !ok {
				raw, _ = distPost(k, p.author, "heads-up", "A notice is coming.\n", "", "")
			}
			err := s.Handle(context.Background(), Envelope{From: from, To: []string{"distributors@ex.test"}}, raw)
			var r *lists.Refusal
			if err != nil && !errors.As(err, &r) {
				t.Fatalf("%s's post: %v", from, err)
			}
			if err != nil { // refused (with an alert, or in the SMTP reply alone): it reached nobody
				p.want = map[string]int{"distributors-copy": 0, "distributors-post": 0}
			}
			kinds := map[string]int{}
			for _, c := range checkQueued(t, s, db, after, k.readers()) {
				kinds[c.Kind]++
				after = max(after, c.ID)
				if c.Kind == "distributors-copy" && !strings.HasPrefix(c.Subject, "[distributors] ") {
					t.Errorf("%s's post: a copy to %v with Subject %q", from, c.To, c.Subject)
				}
			}
			for kind, n := range p.want {
				if kinds[kind] != n {
					t.Fatalf("%s's post (refused: %v) queued %v, want %v", from, err, kinds, p.want)
				}
			}
		}
	})
}

// distPost is a post to distributors@ by author, written as a mail client
// writes it: the subject inside the encryption (protected headers) and a
// generic one outside, the text quoted-printable, an attachment when
// attName is set, base64; encrypted to the distributors list key and
// signed by author a minute before mon.
func distPost(k *storeKeys, author *keys.Key, subject, text, attName, attType string) ([]byte, bool) {
	var h mail.Header
	h.SetSubject(subject)
	var b bytes.Buffer
	w, err := mail.CreateWriter(&b, h)
	if err != nil {
		return nil, false
	}
	var th mail.InlineHeader
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	th.Set("Content-Transfer-Encoding", "quoted-printable")
	tw, err := w.CreateSingleInline(th)
	if err != nil {
		return nil, false
	}
	io.WriteString(tw, text)
	tw.Close()
	if attName != "" {
		var ah mail.AttachmentHeader
		if attType != "" {
			ah.SetContentType(attType, nil)
		}
		ah.SetFilename(attName)
		ah.Set("Content-Transfer-Encoding", "base64")
		aw, err := w.CreateAttachment(ah)
		if err != nil {
			return nil, false
		}
		aw.Write([]byte("--- a/parser.c\n+++ b/parser.c\n"))
		aw.Close()
	}
	if w.Close() != nil || !message.CleanLineEnds(b.Bytes()) {
		return nil, false
	}
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	raw, err := keys.Encrypt(outerHeader(author.Email(), "distributors@ex.test", "...", "post."+author.Email()), b.Bytes(), k.dists, author, sko)
	return raw, err == nil
}
