package listd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// FuzzLimitAlert reaches an intake limit ([intake]
// new_incidents_per_sender_per_hour or new_incidents_per_client_per_hour,
// docs/threat-model.md B7, B8) through Service.Handle and checks the
// SRC's alert (limitNotice). Which limit, its value (1 to 3), the clock
// (up to fuzzYears ahead: the instants the alert names), the envelope
// sender and the client address (the alert names the one that hit the
// limit; smtpd admits far less than Handle is given here), the name in
// the reports' From and their subject come from the fuzzer. The limit's reports are taken; the next is refused with 450
// 4.7.1, and exactly one alert per member must be queued, sealed,
// checked by checkAlerts, naming the limit; the next refusal queues no
// other. A first report Handle refuses for what the fuzzer wrote (it
// opens no incident) ends the execution.
func FuzzLimitAlert(f *testing.F) {
	k := newStoreKeys(f)
	f.Add(false, byte(0), uint32(0), "flood@out.test", "192.0.2.7", "Flood", "heap overflow in the parser")
	f.Add(true, byte(2), uint32(0), "flood@out.test", "2001:db8::7", "Flood", "heap overflow in the parser")
	// More in testdata/fuzz/FuzzLimitAlert: clocks at a year's end and
	// far ahead, hostile senders and clients (a line break and a "/"
	// command, escape sequences, bidi overrides, the null sender, a very
	// long address, invalid UTF-8, encoded-word lookalikes).
	f.Fuzz(func(t *testing.T, perClient bool, limitB byte, minutes uint32, from, client, name, subject string) {
		limit := 1 + int(limitB%3)
		now := fuzzClock(minutes)
		s, db := storeService(t, k, func(o *Options) {
			if perClient {
				o.NewPerClient = limit
			} else {
				o.NewPerSender = limit
			}
			o.Now = func() time.Time { return now }
		})
		if perClient && client == "" {
			client = "192.0.2.7" // none (LMTP) is never limited
		}
		env := Envelope{From: from, To: []string{"security@ex.test"}, Client: client}
		send := func(i int) error {
			t.Helper()
			now = now.Add(time.Minute)
			raw, ok := fuzzMail("rep@out.test", name, "security@ex.test", subject, fmt.Sprintf("fuzz.limit%d@out.test", i), "Steps to reproduce.\n")
			if !ok {
				raw = plainMail("rep@out.test", "security@ex.test", "report", fmt.Sprintf("fuzz.limit%d@out.test", i), "Steps to reproduce.\n")
			}
			return s.Handle(context.Background(), env, raw)
		}
		for i := range limit {
			if err := send(i); err != nil {
				if i == 0 {
					return // refused for what the fuzzer wrote, as any message
				}
				t.Fatalf("report %d of %d: %v", i+1, limit, err)
			}
		}
		if n := len(rowsOf(t, db, "alert-limit")); n != 0 {
			t.Fatalf("%d alerts before the limit is reached", n)
		}
		after := lastRow(t, db)
		if _, ok := asLimitRefusal(send(limit)); !ok {
			t.Fatalf("the report beyond the limit of %d was not refused by it", limit)
		}
		key := "new_incidents_per_sender_per_hour"
		if perClient {
			key = "new_incidents_per_client_per_hour"
		}
		for _, c := range checkAlerts(t, s, db, k, after, "alert-limit", 2, "") {
			if want := fmt.Sprintf("[intake] %s = %d.", key, limit); !strings.Contains(c.Text, want) {
				t.Fatalf("alert to %v does not name %q:\n%s", c.To, want, c.Text)
			}
		}
		after = lastRow(t, db)
		if _, ok := asLimitRefusal(send(limit + 1)); !ok {
			t.Fatal("the second report beyond the limit was not refused by it")
		}
		checkAlerts(t, s, db, k, after, "alert-limit", 0, "")
	})
}
