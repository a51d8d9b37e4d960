package workflow

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The 7-day rule against a late CVE, and one notice per message: two cases
// the property test found (property_cases_test.go).

// TestCVEAfterShortNotice: a CVE that arrives after an incident without one
// was given a notice shorter than 7 days (or a T nearer than 7 days) is
// refused, with a receipt that says how to proceed, unless the incident is
// public, broken or an emergency, or T moves in the same message. Without the
// check, the release went out 78 h after the notice of a vulnerability with a
// CVE.
func TestCVEAfterShortNotice(t *testing.T) {
	short := func(t *testing.T) Incident { // T Thursday 2026-11-26 16:00, notified Monday 09:00: 79 h
		inc := step(t, fix(t), "/set summary s\n/set actor a\n/set impact i\n/set affected x 1.0\n/fixed\n/disclose 2026-11-26\n/notify\n", alice, mon).Incident
		if inc.NotifiedAt.IsZero() || len(inc.CVEs) > 0 {
			t.Fatalf("fixture: %+v", inc)
		}
		return inc
	}
	later := mon.Add(time.Hour)
	for _, tt := range []struct {
		name string
		inc  func(*testing.T) Incident
		text string
		err  error
	}{
		{"after a short notice", short, "/cve CVE-2026-1234\n", ErrNoticeRule},
		{"T 3 days out, no notice", func(t *testing.T) Incident {
			return step(t, fix(t), "/fixed\n/disclose 2026-11-26\n", alice, mon).Incident
		}, "/cve CVE-2026-1234\n", ErrNoticeRule},
		{"T moved first, in the same message", short, "/disclose 2026-11-30\n/cve CVE-2026-1234\n", nil},
		{"T moved after, in the same message", short, "/cve CVE-2026-1234\n/disclose 2026-11-30\n", nil},
		{"the same T again, after", short, "/cve CVE-2026-1234\n/disclose 2026-11-26\n", ErrNoticeRule},
		{"emergency", short, "/disclose 2026-11-26 emergency\n/cve CVE-2026-1234\n", nil},
		{"public", short, "/public\n/cve CVE-2026-1234\n", nil},
		{"broken", short, "/embargo-break\n/cve CVE-2026-1234\n", nil},
		{"T passed (held)", short, "/cve CVE-2026-1234\n", nil}, // run at T+1 h below
		{"a notice 7 days before T", func(t *testing.T) Incident {
			return step(t, fix(t), "/set summary s\n/set actor a\n/set impact i\n/set affected x 1.0\n/fixed\n/disclose 2026-11-30\n/notify\n", alice, mon).Incident
		}, "/cve CVE-2026-1234\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inc, now := tt.inc(t), later
			if tt.name == "T passed (held)" {
				now = inc.T.Add(time.Hour)
			}
			r, err := Apply(inc, tt.text, at(alice, now), now, env)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Apply(%q) error = %v, want %v", tt.text, err, tt.err)
			}
			if err != nil {
				assertNothing(t, inc, r)
				if tt.name == "after a short notice" {
					for _, want := range []string{"the distributor notice of 2026-11-23 09:00 UTC (Monday)", "T is 2026-11-26 16:00 UTC (Thursday)",
						"first move T with /disclose DATE (the earliest slot is 2026-11-30 16:00 UTC (Monday)", "/disclose DATE emergency", "/public", "then send /cve again"} {
						if !strings.Contains(r.Receipt.Text(), want) {
							t.Errorf("receipt lacks %q:\n%s", want, r.Receipt.Text())
						}
					}
				}
				return
			}
			if len(r.Incident.CVEs) != 1 {
				t.Errorf("CVEs %v after %q", r.Incident.CVEs, tt.text)
			}
		})
	}
}

// TestOneNoticePerMessage: the commands of one message tell the distributors
// once, of the message's last T, and the reporter once; a message that sets T
// away and back tells nobody, and the final notice already sent for that T
// stands (without it, two re-notifications went out, then a second final
// notice for the unchanged T, or the release was held for want of one).
func TestOneNoticePerMessage(t *testing.T) {
	at9 := mon.Add(time.Hour)
	for _, tt := range []struct {
		name string
		inc  func(*testing.T) Incident
		text string
		want []string
	}{
		{"two dates", notified, "/disclose 2026-12-07\n/disclose 2026-12-08\n",
			[]string{"notice:2026-12-08 16:00 UTC (Tuesday) was 2026-12-03 16:00 UTC (Thursday)", "reporter:date"}},
		{"away and back", notified, "/disclose 2026-12-07\n/disclose 2026-12-03\n", nil},
		{"a date, then /notify", notified, "/disclose 2026-12-07\n/notify\n",
			[]string{"reporter:date", "notice:2026-12-07 16:00 UTC (Monday) was 2026-12-03 16:00 UTC (Thursday)"}},
		{"/notify, then a date", ready, "/notify\n/disclose 2026-12-07\n",
			[]string{"notice:2026-12-07 16:00 UTC (Monday)", "reporter:date"}},
		{"a date, /notify, a date", ready, "/disclose 2026-12-07\n/notify\n/disclose 2026-12-08\n",
			[]string{"notice:2026-12-08 16:00 UTC (Tuesday)", "reporter:date"}},
		{"/notify twice", notified, "/notify\n/notify\n",
			[]string{"notice:2026-12-03 16:00 UTC (Thursday) was 2026-12-03 16:00 UTC (Thursday)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc(t)
			r := step(t, inc, tt.text, alice, at9)
			if got := describe(r.Actions); !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("actions %q, want %q", got, tt.want)
			}
			if !r.Incident.NotifiedAt.IsZero() && !r.Incident.NotifiedT.Equal(r.Incident.T) {
				t.Errorf("distributors told %v, T %v", r.Incident.NotifiedT, r.Incident.T)
			}
			for _, a := range r.Actions {
				if m, ok := a.(ReporterMail); ok && m.Template == "date" && m.Fields["previous_t"] != FormatInstant(inc.T) && !inc.T.IsZero() {
					t.Errorf("reporter told the previous T was %q, want %q", m.Fields["previous_t"], FormatInstant(inc.T))
				}
			}
		})
	}

	// A later /disclose now that only records the first of two signatures
	// does not speak for the /disclose DATE before it.
	e := env
	e.Quorum = 2
	approved := step(t, notified(t), "/approve\n", alice, mon).Incident
	r, err := Apply(approved, "/disclose 2026-12-07\n/disclose now\n", at(alice, at9), at9, e)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(describe(r.Actions), " "); !strings.Contains(got, "notice:2026-12-07 16:00 UTC (Monday) was 2026-12-03") ||
		!strings.Contains(got, "reporter:date") || r.Incident.Phase == PhaseDisclosed {
		t.Errorf("/disclose DATE, then a first /disclose now signature: %q, phase %v", got, r.Incident.Phase)
	}

	// After the final notice, away and back: the final notice stands, none is
	// sent again, and the release goes out at T.
	inc := step(t, notified(t), "/approve\n", alice, mon).Incident // T Thursday 2026-12-03 16:00
	inc = Tick(inc, d(12, 2, 15, 0), env).Incident
	final := inc.FinalNoticeAt
	if final.IsZero() {
		t.Fatal("no final notice")
	}
	inc = step(t, inc, "/disclose 2026-12-07\n/disclose 2026-12-03\n", bob, d(12, 2, 15, 10)).Incident
	if !inc.FinalNoticeAt.Equal(final) {
		t.Errorf("final notice %v after the T came back, want %v", inc.FinalNoticeAt, final)
	}
	_, got := firings(t, inc, d(12, 2, 15, 10), d(12, 3, 16, 1), env, nil)
	var sent []string
	for _, g := range got {
		if !strings.Contains(g, "reminder") && !strings.Contains(g, "remind:") {
			sent = append(sent, g)
		}
	}
	if want := []string{"Thu 12-03 16:00 release:2026-12-03 16:00 UTC (Thursday)", "Thu 12-03 16:00 reporter:disclosed"}; !reflect.DeepEqual(sent, want) {
		t.Errorf("after the T came back: %q, want %q", sent, want)
	}
}
