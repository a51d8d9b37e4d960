package listd

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// The checks the render fuzzers share (render_fuzz_test.go,
// receipt_fuzz_test.go, notice_fuzz_test.go): every copy the service
// queues is made as the delivery worker makes it and read as its
// recipient reads it.

// outerFields are the header fields the service writes (outMail, and the
// list fields of the announce copies): a field outside them in what it
// renders was injected (docs/threat-model.md B10).
var outerFields = map[string]bool{
	"From": true, "To": true, "Reply-To": true, "Subject": true, "Date": true,
	"Message-Id": true, "In-Reply-To": true, "References": true,
	"Auto-Submitted": true, "Precedence": true, "List-Id": true, "X-Loop": true,
	"Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true,
	"List-Post": true, "List-Help": true, "List-Unsubscribe": true, "List-Unsubscribe-Post": true,
}

// partFields are the fields a MIME part below the top level may carry
// besides those: how to show it, and what it is (RFC 2183, RFC 2045 §8).
var partFields = map[string]bool{"Content-Disposition": true, "Content-Description": true}

// committee are storeService's SRC members: what a copy to one of them
// carries may come back in their signed reply (docs/threat-model.md E5).
var committee = map[string]bool{"alice@ex.test": true, "bob@ex.test": true}

// readers are the secret keys of storeService's members, by address: a
// copy to one of them must be encrypted to that key.
func (k *storeKeys) readers() map[string]*keys.Key {
	return map[string]*keys.Key{"alice@ex.test": k.alice, "bob@ex.test": k.bob, "dist@vendor.test": k.dist}
}

// madeCopy is a queued row made as the delivery worker makes it.
type madeCopy struct {
	queue.Row
	Out     []byte // what the relay gets
	Sealed  bool   // decrypted with its recipient's key
	Subject string // the protected Subject when sealed, else the outer one
	Text    string // the text its recipient reads (decrypted when sealed), as the service parses it
	Inner   []byte // the message its recipient's client shows: Out, or what it decrypts to
}

// checkQueued reads the rows queued after row after, makes each as the
// delivery worker does (Seal) and checks it with checkCopy. A copy to an
// address of readers must decrypt with that key (docs/threat-model.md
// D6), and is checked inside the encryption too; a copy to a committee
// member must not read as commands (E5: the list's copy of a command mail
// or a report, a receipt, the release pack). It fails the test when the queue cannot be read, so that an
// execution that checks nothing cannot pass unseen.
func checkQueued(t *testing.T, s *Service, db *bolt.DB, after uint64, readers map[string]*keys.Key) []madeCopy {
	t.Helper()
	var rows []queue.Row
	err := db.View(func(tx *bolt.Tx) error {
		list, err := queue.List(tx)
		if err != nil {
			return err
		}
		for _, r := range list {
			if r.ID <= after {
				continue
			}
			if r, err = queue.Get(tx, r.ID); err != nil {
				return err
			}
			rows = append(rows, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the queue: %v", err)
	}
	var out []madeCopy
	for _, r := range rows {
		c := madeCopy{Row: r, Out: r.Data}
		if r.Seal != nil {
			if c.Out, err = s.Seal(&r, bytes.NewReader(r.Body)); err != nil {
				t.Fatalf("row %s to %v: sealing failed: %v", r.Kind, r.To, err)
			}
		}
		where := r.Kind + " to " + strings.Join(r.To, ",")
		h := checkCopy(t, where, c.Out)
		c.Subject, _ = h.Text("Subject")
		inner := c.Out
		if key := readers[strings.Join(r.To, ",")]; key != nil {
			dec, err := keys.Decrypt(c.Out, key, nil, keys.Options{Now: func() time.Time { return mon }})
			if err != nil {
				t.Fatalf("%s: its recipient cannot decrypt it: %v", where, err)
			}
			h = checkCopy(t, where+", inside the encryption", dec.Inner)
			c.Sealed, inner = true, dec.Inner
			c.Subject, _ = h.Text("Subject")
		}
		m, err := message.Parse(inner, message.Limits{})
		if err != nil {
			t.Fatalf("%s: does not parse: %v", where, err)
		}
		c.Text, c.Inner = m.Text, inner
		if cmds, err := workflow.Parse(c.Text); committee[r.To[0]] && (len(cmds) > 0 || err != nil) {
			t.Fatalf("%s: its text reads as commands (%d, %v):\n%s", where, len(cmds), err, c.Text)
		}
		out = append(out, c)
	}
	return out
}

// checkCopy checks a message or a decrypted entity: clean CRLF
// (docs/threat-model.md B2), no field but the service's at the top level
// and in each part (B10), and no control character in a decoded field
// value: an encoded word can carry CR LF past the header's syntax (Go's
// qDecode keeps them) to a client that decodes and splits on them. It
// returns the top-level header.
func checkCopy(t *testing.T, where string, out []byte) gomessage.Header {
	t.Helper()
	if !message.CleanLineEnds(out) {
		t.Fatalf("%s: a bare CR or LF", where)
	}
	e, err := gomessage.Read(bytes.NewReader(out))
	if err != nil && !gomessage.IsUnknownCharset(err) {
		t.Fatalf("%s: does not read back: %v", where, err)
	}
	top := e.Header
	err = e.Walk(func(path []int, e *gomessage.Entity, err error) error {
		if err != nil {
			return err
		}
		for f := e.Header.Fields(); f.Next(); {
			if !outerFields[f.Key()] && (len(path) == 0 || !partFields[f.Key()]) {
				t.Fatalf("%s: field %q injected (part %v)", where, f.Key(), path)
			}
			v, err := f.Text()
			if err != nil {
				continue // an unknown charset: the raw value, checked as CRLF above
			}
			if i := strings.IndexFunc(v, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }); i >= 0 {
				t.Fatalf("%s: field %s decodes with a control character: %q", where, f.Key(), v)
			}
		}
		return nil
	})
	if err != nil && !gomessage.IsUnknownCharset(err) {
		t.Fatalf("%s: a part does not read back: %v", where, err)
	}
	return top
}
