package listd

import (
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/workflow"
)

// TestAlertQuotesRelayText: the delivery-failure alert quotes the relay's
// reply as it was written, and nothing in it acts on the reader: a CR is
// no line end, so "/disclose now" after two of them starts no command
// paragraph (docs/threat-model.md E5); an escape sequence, a bidi
// override and an invalid byte are shown escaped; the lines of a joined
// error are indented. Found by FuzzDeliveryAlert: the CRs became line
// ends in the committee's copies, and the alert read as "/disclose now".
func TestAlertQuotesRelayText(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	reason := "<rep@out.test>: pipeline: RCPT TO: 550 5.1.1 refused\r\r/disclose now\r\r\x1b[2J\xff \u202eevil\n<b@out.test>: /accept"
	if err := db.Update(func(tx *bolt.Tx) error {
		return s.Alert(tx, queue.Row{ID: 7, Msg: queue.Msg{Kind: "ack", Incident: fuzzIncident, To: []string{"rep@out.test", "b@out.test"}, MessageID: "m@ex.test"}}, reason)
	}); err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, c := range checkQueued(t, s, db, 0, k.readers()) {
		checkQuotedText(t, c)
		want := `550 5.1.1 refused\r\r/disclose now\r\r\x1b[2J\xff \u202eevil` + "\n            <b@out.test>: /accept"
		if !strings.Contains(c.Text, want) {
			t.Errorf("alert to %v does not quote the reply as %q:\n%s", c.To, want, c.Text)
		}
		alerts++
	}
	if alerts != 2 {
		t.Fatalf("%d alerts, want one to each member", alerts)
	}
}

// TestAlertReleaseQuotesRelayText: the alert that the announce fan-out
// held a release quotes the relay's refusal as TestAlertQuotesRelayText
// says. Found by FuzzReleaseHeld: "\r\r/disclose now" in the relay's
// reply made the alert read as a command block.
func TestAlertReleaseQuotesRelayText(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	openIncident(t, s, db, nil)
	after := lastRow(t, db)
	reason := "the relay refused the message: pipeline: end of data: 554 5.7.1 refused\r\r/disclose now\r\r\x1b[2J\xff \u202eevil"
	j := announce.Job{ID: string(fuzzIncident), State: announce.JobHeld, At: mon, Held: reason, HeldFor: announce.HoldRelay}
	if err := db.Update(func(tx *bolt.Tx) error { return s.AlertRelease(tx, j) }); err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, c := range checkQueued(t, s, db, after, k.readers()) {
		checkQuotedText(t, c)
		if want := `554 5.7.1 refused\r\r/disclose now\r\r\x1b[2J\xff \u202eevil`; c.Kind != "alert-announce-held" || !strings.Contains(c.Text, want) {
			t.Errorf("%s to %v does not quote the reply as %q:\n%s", c.Kind, c.To, want, c.Text)
		}
		alerts++
	}
	if alerts != 2 {
		t.Fatalf("%d alerts, want one to each member", alerts)
	}
}

// TestAlertReleaseSaysHowToResume: the alert of a release the announce
// fan-out held says what is held (the announce list's copy, not the rest
// of the release), what to fix for its cause, and how to resume it
// (`embargo release resume`); never the tick's /approve and /disclose,
// which do not resume it.
func TestAlertReleaseSaysHowToResume(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	openIncident(t, s, db, nil)
	for _, tc := range []struct {
		cause       announce.HoldCause
		sent, total int
		want        []string
	}{
		{announce.HoldClock, 0, 0, []string{"Check the server's clock first", "None of them has had it yet."}},
		{announce.HoldMessage, 0, 0, []string{"it is a bug in embargo: report it", "None of them has had it yet."}},
		{announce.HoldRelay, 200, 1000, []string{"The relay refused the message itself", "Fix the relay", "200 of the 1000 subscribers it covers had their copy"}},
		{"", 0, 0, []string{"Fix what the reason above names"}},
	} {
		after := lastRow(t, db)
		j := announce.Job{ID: string(fuzzIncident), State: announce.JobHeld, At: mon, Held: "the reason for " + string(tc.cause),
			HeldFor: tc.cause, Sent: tc.sent, Total: tc.total}
		if err := db.Update(func(tx *bolt.Tx) error { return s.AlertRelease(tx, j) }); err != nil {
			t.Fatal(err)
		}
		made := checkQueued(t, s, db, after, k.readers())
		if len(made) != 2 {
			t.Fatalf("cause %q: %d alerts, want one to each member", tc.cause, len(made))
		}
		for _, c := range made {
			text := strings.Join(strings.Fields(c.Text), " ")
			want := append([]string{"The announce list's copy of the release of " + string(fuzzIncident) + ", due at " + workflow.FormatInstant(mon) + ", is HELD:",
				"the reason for " + string(tc.cause), "Nothing more goes to the announce list's subscribers until an operator resumes it",
				"the copies to the outside channels, the public version to the distributors and your release pack are rows of the outbound queue",
				"embargo release resume " + string(fuzzIncident)}, tc.want...)
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("cause %q: the alert lacks %q:\n%s", tc.cause, w, c.Text)
				}
			}
			if c.Kind != "alert-announce-held" || strings.Contains(c.Text, "/approve") || strings.Contains(c.Text, "/disclose") {
				t.Errorf("cause %q: %s says to /approve or /disclose:\n%s", tc.cause, c.Kind, c.Text)
			}
		}
	}
}

// lastRow is the ID of the last row queued.
func lastRow(t *testing.T, db *bolt.DB) uint64 {
	t.Helper()
	var last uint64
	if err := db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			last = max(last, r.ID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

func TestQuoteOutside(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.1.1 User unknown":      "550 5.1.1 User unknown",
		"Empfänger unbekannt\tbitte":  "Empfänger unbekannt\tbitte",
		"a\rb\r\nc":                   `a\rb\r` + "\n  c",
		"\x00\x07\x1b\x7f":            `\x00\a\x1b\x7f`,
		"\xff\xfe\xc3(":               `\xff\xfe\xc3(`,
		"\u202e\u200b\ufeff\u2028":    `\u202e\u200b\ufeff\u2028`,
		"=?UTF-8?Q?x=0D=0ABcc:_a@b?=": "=?UTF-8?Q?x=0D=0ABcc:_a@b?=",
		"x\n/accept":                  "x\n  /accept",
		"":                            "",
	} {
		if got := quoteOutside(in, "  "); got != want {
			t.Errorf("quoteOutside(%q) = %q, want %q", in, got, want)
		}
	}
}
