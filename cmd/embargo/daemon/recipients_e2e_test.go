package daemon_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// The address kinds of one transaction's recipients (cmd/embargo/daemon/
// listd/recipients.go has the rule; the governance addresses,
// distributors+apply@ and security+GOV-…@, are judged in listd's
// TestRecipientPairs).
const (
	kSecurity    = "security@"
	kIncident    = "security+ID@"
	kDist        = "distributors@"
	kSubscribe   = "announce+subscribe@"
	kUnsubscribe = "announce+unsubscribe@"
	kConfirm     = "announce+confirm-…@"
	kBounces     = "security+bounces@"
)

var mixedKinds = []string{kSecurity, kIncident, kDist, kSubscribe, kUnsubscribe, kConfirm, kBounces}

// mixedCase is one sender and what the store held before its transaction.
type mixedCase struct {
	f       *cmdFixture
	from    string
	id      string // the sender's incident, for kIncident
	confirm string // a confirmation address of the sender's, for kConfirm
	raw     []byte
	before  mixedState
}

type mixedState struct {
	incidents, threadMsgs int
	active                bool
	subMails, unsubMails  int
	archived              bool
}

func (c *mixedCase) addr(kind string) string {
	switch kind {
	case kIncident:
		return "security+" + c.id + "@ex.test"
	case kConfirm:
		return c.confirm
	}
	return strings.TrimSuffix(kind, "@") + "@ex.test"
}

func (c *mixedCase) state() mixedState {
	var s mixedState
	c.f.h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		for _, inc := range incs {
			if inc.Reporter == c.from {
				s.incidents++
			}
		}
		if c.id != "" {
			recs, _ := incidentdb.Messages(tx, workflow.ID(c.id))
			s.threadMsgs = len(recs)
		}
		sub, ok, _ := announce.Lookup(tx, c.from)
		s.active = ok && sub.State == announce.StateActive
		// Archived, and not as a refusal kept in quarantine; the archive
		// numbers messages from 1.
		for seq := uint64(1); !s.archived; seq++ {
			rec, err := incidentdb.Message(tx, seq)
			if err != nil {
				break
			}
			raw, _ := incidentdb.Raw(tx, seq)
			s.archived = rec.Note != "quarantine" && bytes.Equal(raw, c.raw)
		}
		return nil
	})
	s.subMails, s.unsubMails = c.announceMails()
	return s
}

// announceMails counts the confirmation requests the relay got for the sender.
func (c *mixedCase) announceMails() (sub, unsub int) {
	for _, m := range daemontest.To(c.f.h.Rec.Messages(), c.from) {
		h := daemontest.Header(nil, m)
		switch s := h.Get("Subject"); {
		case strings.HasPrefix(s, "Confirm your subscription"):
			sub++
		case strings.HasPrefix(s, "Confirm: unsubscribe"):
			unsub++
		}
	}
	return sub, unsub
}

// handled reports whether the recipient of kind was handled, comparing the
// store and the relay with before (waiting for mail that is due).
func (c *mixedCase) handled(kind string) bool {
	switch kind {
	case kSubscribe, kUnsubscribe:
		deadline := time.Now().Add(5 * time.Second)
		for {
			sub, unsub := c.announceMails()
			if kind == kSubscribe && sub > c.before.subMails || kind == kUnsubscribe && unsub > c.before.unsubMails {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s := c.state()
	switch kind {
	case kSecurity:
		return s.incidents > c.before.incidents
	case kIncident:
		return s.threadMsgs > c.before.threadMsgs
	case kConfirm:
		return s.active && !c.before.active
	case kBounces:
		return s.archived
	}
	return false
}

// newMixedCase makes a sender with what its kinds need: an incident of its
// own (a report first) and a pending subscription with its confirmation
// address.
func newMixedCase(t *testing.T, f *cmdFixture, n int, kinds ...string) *mixedCase {
	t.Helper()
	c := &mixedCase{f: f, from: fmt.Sprintf("mixed%d@out.test", n)}
	for _, k := range kinds {
		switch k {
		case kIncident:
			f.h.MustSend(c.from, []string{"security@ex.test"}, daemontest.Report(c.from, "first report", "details"))
			f.h.D.View(func(tx *bolt.Tx) error {
				incs, _ := incidentdb.List(tx)
				for _, inc := range incs {
					if inc.Reporter == c.from {
						c.id = string(inc.ID)
					}
				}
				return nil
			})
		case kConfirm:
			f.h.MustSend(c.from, []string{"announce+subscribe@ex.test"}, "From: "+c.from+"\nSubject: subscribe\n\nplease\n")
			daemontest.WaitFor(t, "the confirmation request", func() bool {
				for _, m := range daemontest.To(f.h.Rec.Messages(), c.from) {
					if a := confirmAddr.FindString(daemontest.Body(t, m)); a != "" {
						c.confirm = a
						return true
					}
				}
				return false
			})
		}
	}
	c.raw = []byte(strings.ReplaceAll(fmt.Sprintf("From: %s\nTo: security@ex.test\nSubject: mixed %d\nMessage-ID: <mixed%d@out.test>\n\nreport text %d\n", c.from, n, n, n), "\n", "\r\n"))
	c.before = c.state()
	return c
}

// TestMixedRecipients sends one transaction for every ordered pair of
// address kinds, over SMTP and over LMTP, and checks each recipient: handled
// in the same transaction (both kinds' effects in the store), or refused at
// RCPT with 452 4.5.3 and handled when the client sends it again alone, the
// same bytes included. Nothing is answered 250 and lost.
func TestMixedRecipients(t *testing.T) {
	// Dozens of reports from 127.0.0.1: no limit per client address.
	f := newCmdFixtureWith(t, nil, "\n[intake]\nnew_incidents_per_client_per_hour = 0\n[lmtp]\nlisten = \"127.0.0.1:0\"\n")
	apart := func(a, b string) bool { return (a == kDist) != (b == kDist) }
	n := 0
	for _, proto := range []string{"smtp", "lmtp"} {
		addr := f.h.Addr()
		if proto == "lmtp" {
			addr = f.h.D.LMTPAddr().String()
		}
		for _, a := range mixedKinds {
			for _, b := range mixedKinds {
				if a == b {
					continue
				}
				n++
				t.Run(proto+"/"+a+"+"+b, func(t *testing.T) {
					c := newMixedCase(t, f, n, a, b)
					ra, rb := c.addr(a), c.addr(b)
					tr, err := daemontest.Transact(addr, proto == "lmtp", c.from, []string{ra, rb}, c.raw)
					if err != nil {
						t.Fatal(err)
					}
					if tr.Rcpt[ra] != nil {
						t.Fatalf("RCPT %s (first) = %v, want 250", ra, tr.Rcpt[ra])
					}
					if !apart(a, b) {
						if tr.Rcpt[rb] != nil {
							t.Fatalf("RCPT %s = %v, want 250: %s and %s are handled together", rb, tr.Rcpt[rb], a, b)
						}
						for _, r := range []string{ra, rb} {
							if e := tr.Data[r]; e != nil {
								t.Fatalf("end of data for %s = %v, want 250", r, e)
							}
						}
						for _, k := range []string{a, b} {
							if k == kSecurity && (a == kIncident || b == kIncident) {
								continue // one message for the security list: the incident's thread
							}
							if !c.handled(k) {
								t.Errorf("answered 250, but %s was not handled", k)
							}
						}
						return
					}
					if code, enh := daemontest.Code(tr.Rcpt[rb]); code != 452 || enh != "4.5.3" {
						t.Fatalf("RCPT %s after %s = %v, want 452 4.5.3", rb, ra, tr.Rcpt[rb])
					}
					if a == kDist {
						// The post alone: plaintext from a stranger, refused
						// for that (the distributors table has the rest).
						if code, _ := daemontest.Code(tr.Data[ra]); code != 550 {
							t.Fatalf("end of data for a plaintext post = %v, want 550", tr.Data[ra])
						}
					} else if e := tr.Data[ra]; e != nil || !c.handled(a) {
						t.Fatalf("%s: end of data %v, handled %v", a, e, c.handled(a))
					}
					if b != kDist && b != kSubscribe && b != kUnsubscribe && c.handled(b) {
						t.Fatalf("%s was handled although refused at RCPT", b)
					}
					// The client sends it again, alone: the same bytes are
					// no duplicate for another recipient.
					tr, err = daemontest.Transact(addr, proto == "lmtp", c.from, []string{rb}, c.raw)
					if err != nil {
						t.Fatal(err)
					}
					if b == kDist {
						if code, _ := daemontest.Code(tr.Data[rb]); code != 550 {
							t.Errorf("the post sent alone = %v, want 550 (plaintext)", tr.Data[rb])
						}
						return
					}
					if tr.Rcpt[rb] != nil || tr.Data[rb] != nil || !c.handled(b) {
						t.Errorf("%s sent alone: RCPT %v, data %v, handled %v", b, tr.Rcpt[rb], tr.Data[rb], c.handled(b))
					}
				})
			}
		}
	}
}

// TestTwoIncidentAddresses: a reporter's one message to two of their
// incident addresses goes to the first; the second is refused at RCPT and
// reaches its incident when sent again alone, with the same bytes.
func TestTwoIncidentAddresses(t *testing.T) {
	f := newCmdFixtureWith(t, nil, "\n[lmtp]\nlisten = \"127.0.0.1:0\"\n")
	for i, proto := range []string{"smtp", "lmtp"} {
		addr := f.h.Addr()
		if proto == "lmtp" {
			addr = f.h.D.LMTPAddr().String()
		}
		c1 := newMixedCase(t, f, 1000+2*i, kIncident)
		c2 := &mixedCase{f: f, from: c1.from}
		f.h.MustSend(c1.from, []string{"security@ex.test"}, daemontest.Report(c1.from, "second report", "more"))
		f.h.D.View(func(tx *bolt.Tx) error {
			incs, _ := incidentdb.List(tx)
			for _, inc := range incs {
				if inc.Reporter == c1.from && string(inc.ID) != c1.id {
					c2.id = string(inc.ID)
				}
			}
			return nil
		})
		c2.raw = c1.raw
		c1.before, c2.before = c1.state(), c2.state()
		r1, r2 := c1.addr(kIncident), c2.addr(kIncident)
		tr, err := daemontest.Transact(addr, proto == "lmtp", c1.from, []string{r1, r2}, c1.raw)
		if err != nil {
			t.Fatal(err)
		}
		if code, enh := daemontest.Code(tr.Rcpt[r2]); code != 452 || enh != "4.5.3" || !strings.Contains(tr.Rcpt[r2].Error(), "one incident address") {
			t.Fatalf("%s: RCPT of a second incident address = %v, want 452 4.5.3", proto, tr.Rcpt[r2])
		}
		if tr.Data[r1] != nil || !c1.handled(kIncident) || c2.handled(kIncident) {
			t.Fatalf("%s: the first incident: %v, handled %v; the second handled %v", proto, tr.Data[r1], c1.handled(kIncident), c2.handled(kIncident))
		}
		tr, err = daemontest.Transact(addr, proto == "lmtp", c1.from, []string{r2}, c1.raw)
		if err != nil || tr.Data[r2] != nil || !c2.handled(kIncident) {
			t.Fatalf("%s: the second incident sent alone: %v %v, handled %v", proto, err, tr.Data[r2], c2.handled(kIncident))
		}
		// And the same transaction again is a duplicate (RFC 1047): nothing new.
		c2.before = c2.state()
		if tr, err = daemontest.Transact(addr, proto == "lmtp", c1.from, []string{r2}, c1.raw); err != nil || tr.Data[r2] != nil || c2.handled(kIncident) {
			t.Fatalf("%s: a duplicate delivery: %v %v, stored again %v", proto, err, tr.Data[r2], c2.handled(kIncident))
		}
	}
}
