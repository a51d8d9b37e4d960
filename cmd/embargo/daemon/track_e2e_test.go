package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// preannounceReminders are the texts of the pre-announcement reminders
// alice got among msgs, decrypted with her key.
func (f *recordsFixture) preannounceReminders(msgs []queuetest.Message) []string {
	f.t.Helper()
	var out []string
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		if p := daemontest.MIMEText([]byte(f.decrypt(f.alice, m))); strings.Contains(p, "no public pre-announcement") {
			out = append(out, p)
		}
	}
	return out
}

// TestPrivateTrackEndToEnd walks a private-track incident through the
// real daemon (docs/process.md §9): alice's gpg-signed /track private and
// /disclose DATE, whose receipt names the pre-announcement window; no
// reminder a minute before T − 7 days; at T − 7 days the SRC's reminder,
// sealed to each member, says Go pre-announces 3–7 days ahead and how to
// do it, and a later tick does not repeat it; /preannounce goes to the
// announce list; /status says the pre-announcement is done; and at
// T − 3 days no second reminder comes.
func TestPrivateTrackEndToEnd(t *testing.T) {
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC) // a Monday
	f := newRecordsFixture(t, start, readmeRecordConfig)
	if out, err := daemon.Subscribers(f.h.Config(), daemon.CtlSubscribersImport, []string{"members.txt"}, []byte("ann@reader.test\n")); err != nil || !strings.Contains(out, "1 subscribed") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	f.drain()
	f.clk.Set(start.Add(time.Hour))
	var receipt string
	for _, m := range daemontest.To(f.command("/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/track private\n/disclose 2026-12-10\n"), "alice@ex.test") {
		if p := f.decrypt(f.alice, m); strings.Contains(p, "Commands for") {
			receipt = daemontest.MIMEText([]byte(p))
		}
	}
	daemontest.MustContain(t, "alice's receipt", receipt, "> /track private", "track private: pre-announce with /preannounce 3–7 days before T",
		"T = 2026-12-10 16:00 UTC (Thursday)",
		"private track: pre-announce with /preannounce between 2026-12-03 16:00 UTC (Thursday) and 2026-12-07 16:00 UTC (Monday)")

	soon := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC) // T − 7 days
	if got := f.preannounceReminders(f.tick(soon.Add(-time.Minute))); len(got) != 0 {
		t.Fatalf("a pre-announcement reminder before T − 7 days:\n%s", got)
	}
	msgs := f.tick(soon)
	got := f.preannounceReminders(msgs)
	if len(got) != 1 {
		t.Fatalf("%d pre-announcement reminders to alice at T − 7 days, want 1", len(got))
	}
	daemontest.MustContain(t, "the T − 7 days reminder", got[0], "Reminder for "+f.id,
		"no public pre-announcement of the release at T = 2026-12-10 16:00 UTC (Thursday) yet",
		"Go pre-announces 3–7 days ahead (docs/process.md §9)", "send /preannounce (or /preannounce nosev) in its thread by 2026-12-07 16:00 UTC (Monday)")
	if len(daemontest.To(msgs, "bob@ex.test")) == 0 {
		t.Errorf("bob got nothing at T − 7 days: the reminder goes to the whole SRC")
	}
	if got := f.preannounceReminders(f.tick(soon.Add(time.Hour))); len(got) != 0 {
		t.Errorf("the T − 7 days reminder came again")
	}

	f.clk.Set(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	f.command("/preannounce\n")
	f.announced("announce+bounces-"+strings.ToLower(f.id)+"-pre1@ex.test", []string{"ann@reader.test"})
	f.clk.Set(time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC))
	var status string
	for _, m := range daemontest.To(f.command("/status\n"), "alice@ex.test") {
		if p := f.decrypt(f.alice, m); strings.Contains(p, "Deadlines:") {
			status = daemontest.MIMEText([]byte(p))
		}
	}
	daemontest.MustContain(t, "/status", status, "track:           private: pre-announcement done 2026-12-04 10:00 UTC (Friday)",
		"preannounce        done 2026-12-04 10:00 UTC (Friday)")

	if got := f.preannounceReminders(f.tick(time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC))); len(got) != 0 {
		t.Errorf("a reminder at T − 3 days although T was pre-announced:\n%s", got)
	}
}
