package listd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

// The thread of the incident the render fuzzers open, and its ID.
const (
	fuzzIncident = "SEC-2026-0001"
	fuzzThread   = "security+" + fuzzIncident + "@ex.test"
)

// FuzzReceiptRender sends alice's signed command mail, whose subject and
// text (the command block with its arguments: a /reply text, a /set
// value, a CVSS vector, an address) come from the fuzzer, into an open
// incident, signed only or signed and encrypted to the list, with or
// without a reporter key pinned. The service applies or refuses the
// commands and queues the receipt and whatever they cause: the copy of
// the mail to bob, a /reply or a stage update to the reporter, alerts.
// Every row queued is made as the delivery worker makes it and checked by
// checkQueued (docs/threat-model.md B2, B10, D6, E5); a message with a
// command block must have queued alice a receipt.
func FuzzReceiptRender(f *testing.F) {
	k := newStoreKeys(f)
	rk, err := keys.GenerateListKey("Reporter", "rep@out.test", ko)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Re: [SEC-2026-0001] heap overflow in the parser", "/accept\n/lead me\n\nTaking it.\n", false, false)
	// More in testdata/fuzz/FuzzReceiptRender: every command that writes
	// text, hostile values (CR and LF, header lines, encoded words, long
	// lines, invalid UTF-8, control and bidi characters), no command.
	f.Fuzz(func(t *testing.T, subject, text string, encrypted, pinned bool) {
		s, db := storeService(t, k)
		var key *keys.Key
		if pinned {
			key = rk
		}
		after := openIncident(t, s, db, key)
		raw, ok := memberMail(k, k.alice, "cmd.fuzz@ex.test", subject, text, encrypted)
		if !ok {
			return
		}
		env := Envelope{From: "alice@ex.test", To: []string{fuzzThread}}
		d, err := s.openOnce(env, raw, sha256.Sum256(raw))
		if err != nil {
			return // refused on arrival, as Handle refuses it
		}
		if err := s.Handle(context.Background(), env, raw); err != nil {
			return // refused: the sender is told, nothing is queued
		}
		receipt := false
		for _, c := range checkQueued(t, s, db, after, fuzzReaders(t, k, db, rk)) {
			if c.Kind != "receipt" {
				continue
			}
			if c.To[0] != "alice@ex.test" || !strings.Contains(c.Subject, "] receipt: ") {
				t.Errorf("a receipt to %v with Subject %q", c.To, c.Subject)
			}
			receipt = true
		}
		if d.msg.HasCommands() && !receipt {
			t.Fatalf("a signed command mail queued no receipt (text %q)", text)
		}
	})
}

// openIncident files the report that opens fuzzIncident, with rk attached
// (and pinned) unless it is nil, and returns the last row it queued.
func openIncident(t *testing.T, s *Service, db *bolt.DB, rk *keys.Key) uint64 {
	t.Helper()
	raw := plainMail("rep@out.test", "security@ex.test", "heap overflow in the parser", "r1@out.test", "Steps to reproduce.\n")
	if rk != nil {
		hdr := "From: rep@out.test\r\nTo: security@ex.test\r\nSubject: heap overflow in the parser\r\nMessage-ID: <r1@out.test>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n"
		raw = append([]byte(hdr), keyEntity("Steps to reproduce.", rk)...)
	}
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}, raw); err != nil {
		t.Fatalf("the report: %v", err)
	}
	var last uint64
	if err := db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			last = max(last, r.ID)
		}
		return err
	}); err != nil || last == 0 {
		t.Fatalf("the report queued nothing readable: %v", err)
	}
	return last
}

// fuzzReaders are the members' keys, and the reporter's when a command
// left it pinned to the incident: mail to the reporter must then be
// encrypted to it (docs/threat-model.md D5).
func fuzzReaders(t *testing.T, k *storeKeys, db *bolt.DB, rk *keys.Key) map[string]*keys.Key {
	t.Helper()
	r := k.readers()
	if getIncident(t, db, fuzzIncident).PinnedReporterKey == rk.Fingerprint() {
		r["rep@out.test"] = rk
	}
	return r
}

// memberMail is a member's mail into fuzzIncident's thread, from the
// signer's address, written as a mail client writes it: the text quoted-printable (any byte survives),
// signed by signer; encrypted to the list key too when encrypted, with
// the subject then inside the encryption (protected headers) and a
// generic one outside.
func memberMail(k *storeKeys, signer *keys.Key, msgid, subject, text string, encrypted bool) ([]byte, bool) {
	return memberMailTo(k, signer, mon, fuzzThread, msgid, subject, text, encrypted)
}

// memberMailTo is memberMail to another address (a proposal's thread),
// written and signed a minute before at, for a service whose clock has
// moved on (tick_fuzz_test.go, gov_fuzz_test.go).
func memberMailTo(k *storeKeys, signer *keys.Key, at time.Time, to, msgid, subject, text string, encrypted bool) ([]byte, bool) {
	from := signer.Email()
	var h gomessage.Header
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	if encrypted {
		h.SetText("Subject", subject)
	}
	var b bytes.Buffer
	w, err := gomessage.CreateWriter(&b, h)
	if err != nil {
		return nil, false
	}
	io.WriteString(w, text)
	if w.Close() != nil || !message.CleanLineEnds(b.Bytes()) {
		return nil, false
	}
	sko := keys.Options{Now: func() time.Time { return at.Add(-time.Minute) }}
	outer := outerHeader(from, to, subject, msgid)
	if encrypted {
		outer = outerHeader(from, to, "...", msgid)
	}
	outer.SetDate(at.Add(-time.Minute))
	var raw []byte
	if encrypted {
		raw, err = keys.Encrypt(outer, b.Bytes(), k.list, signer, sko)
	} else {
		raw, err = keys.Sign(outer, b.Bytes(), signer, sko)
	}
	return raw, err == nil
}
