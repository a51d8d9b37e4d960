package listd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// ackCanary is in every report of FuzzAckCapAlert the fuzzer did not
// write: the cap's alert quotes nothing of any report.
const ackCanary = "CANARY-ackcap-7d1e"

// FuzzAckCapAlert reaches the cap on acknowledgements ([intake]
// acks_per_day, docs/threat-model.md B8) through Service.Handle, and
// checks the SRC's alert (ackCapNotice). The cap (1 to 4), the limit per
// sender (1 to 3) and the clock (up to fuzzYears ahead: the instants the
// alert names) come from the fuzzer, and so do the envelope sender (whom
// the acknowledgement would answer), the name in the From field and the
// subject of the report that meets the full cap:
// the cap's own reports come from distinct senders, then the fuzzer's,
// then one more that surely asks for an acknowledgement. Exactly one
// alert per member must be queued, sealed, checked by checkAlerts,
// naming the cap; a report after it queues no other.
func FuzzAckCapAlert(f *testing.F) {
	k := newStoreKeys(f)
	f.Add(byte(2), byte(0), uint32(0), "flood-1@out.test", "Flood", "heap overflow in the parser")
	// More in testdata/fuzz/FuzzAckCapAlert: clocks at a year's and a
	// month's end and far ahead, hostile senders (a line break and a "/"
	// command, escape sequences, bidi overrides, the null sender, one of
	// the cap's own senders, a member), hostile names and subjects.
	f.Fuzz(func(t *testing.T, capB, perB byte, minutes uint32, from, name, subject string) {
		limit := 1 + int(capB%4)
		now := fuzzClock(minutes)
		s, db := storeService(t, k, func(o *Options) {
			o.AckCap, o.AcksPerDay = limit, 1+int(perB%3)
			o.Now = func() time.Time { return now }
		})
		send := func(env Envelope, raw []byte) error {
			now = now.Add(time.Minute)
			return s.Handle(context.Background(), env, raw)
		}
		own := func(who string) {
			t.Helper()
			env := Envelope{From: who, To: []string{"security@ex.test"}, Client: "192.0.2.1"}
			raw := plainMail(who, "security@ex.test", "finding "+ackCanary, who+".r@out.test", "Steps "+ackCanary+".\n")
			if err := send(env, raw); err != nil {
				t.Fatalf("the report from %s: %v", who, err)
			}
		}
		for i := range limit {
			own(fmt.Sprintf("r%d@out.test", i))
		}
		after := lastRow(t, db)
		if n := len(rowsOf(t, db, "alert-ackcap")); n != 0 {
			t.Fatalf("%d alerts before the cap is full", n)
		}
		raw, ok := fuzzReport(subject, name, "Steps to reproduce.\n", "")
		if !ok {
			raw = plainMail("rep@out.test", "security@ex.test", "report", "fuzz.report@out.test", "Steps to reproduce.\n")
		}
		_ = send(Envelope{From: from, To: []string{"security@ex.test"}, Client: "192.0.2.1"}, raw) // refused or not
		own("last@out.test")
		for _, c := range checkAlerts(t, s, db, k, after, "alert-ackcap", 2, ackCanary) {
			if want := fmt.Sprintf("[intake] acks_per_day = %d.", limit); !strings.Contains(c.Text, want) {
				t.Fatalf("alert to %v does not name %q:\n%s", c.To, want, c.Text)
			}
		}
		after = lastRow(t, db)
		own("more@out.test")
		checkAlerts(t, s, db, k, after, "alert-ackcap", 0, ackCanary)
	})
}
