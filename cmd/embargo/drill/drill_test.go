package drill

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/keys"
)

// runDrill plays a scenario text with the built-in roster and returns the
// drill, for its rows.
func runDrill(t *testing.T, text string) *drill {
	t.Helper()
	sc, err := parseScenario([]byte(text), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	base, err := config.Parse([]byte(builtinRoster), "drill")
	if err != nil {
		t.Fatal(err)
	}
	logs := &daemontest.SyncBuffer{}
	dr, err := newDrill(base, sc, t.TempDir(), daemon.NewLogger("debug", logs))
	if err != nil {
		t.Fatal(err)
	}
	if err := dr.run(t.Context()); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	return dr
}

// reminders lists the reminder rows as "time subject → to".
func reminders(dr *drill) []string {
	var out []string
	for _, r := range dr.rows {
		if r.dir == "out" && r.kind == "reminder" {
			out = append(out, r.at.Format("Mon 01-02 15:04")+" "+strings.TrimPrefix(r.subject, "[SEC-2026-0001] ")+" → "+dr.label(r))
		}
	}
	return out
}

// TestRestartLosesNoneRepeatsNone stops and starts the daemon on its store
// between the deadlines of an untriaged report: a restart between two
// reminders loses none and repeats none; one that spans a reminder sends it
// once, late; one that spans both sends the escalation alone.
func TestRestartLosesNoneRepeatsNone(t *testing.T) {
	const report = "start 2026-11-23 09:00\n@ +0 mail rep@example.net\nSubject: overflow\n\nDetails.\n.\n"
	tests := []struct {
		name, events string
		want         []string
	}{
		{"no restart", "end 2026-11-27 12:00\n", []string{
			"Tue 11-24 09:00 reminder: triage due (1 working day) → SRC: alice@example.test",
			"Thu 11-26 09:00 reminder: triage overdue (3 working days) → SRC"}},
		{"restart between the two", "end 2026-11-27 12:00\n@ 2026-11-24 12:00 down\n@ 2026-11-24 12:05 up\n@ 2026-11-25 10:00 down\n@ 2026-11-26 08:59 up\n", []string{
			"Tue 11-24 09:00 reminder: triage due (1 working day) → SRC: alice@example.test",
			"Thu 11-26 09:00 reminder: triage overdue (3 working days) → SRC"}},
		{"down over the first", "end 2026-11-27 12:00\n@ 2026-11-24 08:00 down\n@ 2026-11-24 12:00 up\n", []string{
			"Tue 11-24 12:00 reminder: triage due (1 working day) → SRC: alice@example.test",
			"Thu 11-26 09:00 reminder: triage overdue (3 working days) → SRC"}},
		{"down over both", "end 2026-11-27 12:00\n@ 2026-11-24 08:00 down\n@ 2026-11-27 10:00 up\n", []string{
			"Fri 11-27 10:00 reminder: triage overdue (3 working days) → SRC"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dr := runDrill(t, report+tt.events)
			if got := reminders(dr); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("reminders:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestDrillWeekOfReminders: a week in the fix phase, on a holiday-free
// calendar, gives exactly the reminders a coordinator would send.
func TestDrillWeekOfReminders(t *testing.T) {
	dr := runDrill(t, `start 2026-11-23 09:00
end 2026-11-30 09:00
@ +0 mail rep@example.net
Subject: overflow

Details.
.
@ +1h commands alice
/accept
/lead bob@example.test
/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H
.
`)
	want := []string{
		// Critical: a change every 2 days is due; nothing else happens.
		"Tue 11-24 09:00 reminder: fix team not formed (24 h) → SRC: bob@example.test",
		"Wed 11-25 10:00 reminder: no change for 2 days → SRC: bob@example.test",
		"Fri 11-27 10:00 reminder: no change for 2 days → SRC: bob@example.test",
		"Sun 11-29 10:00 reminder: no change for 2 days → SRC: bob@example.test",
		"Mon 11-30 09:00 reminder: fix overdue (7 days) → SRC",
	}
	if got := reminders(dr); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("reminders:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestReminderReadsInGnuPG: a reminder the drill's daemon sent decrypts with
// the real gpg, signed by the security list key, its subject protected.
func TestReminderReadsInGnuPG(t *testing.T) {
	dr := runDrill(t, "start 2026-11-23 09:00\nend 2026-11-24 09:30\n@ +0 mail rep@example.net\nSubject: overflow\n\nDetails.\n.\n")
	var raw []byte
	for _, r := range dr.rows {
		if r.kind == "reminder" {
			raw = r.raw[0]
		}
	}
	if raw == nil {
		t.Fatal("no reminder")
	}
	if bytes.Contains(raw, []byte("triage due")) || bytes.Contains(raw, []byte("SEC-2026-0001")) {
		t.Error("the reminder's subject or incident shows outside the encryption")
	}
	g := daemontest.NewGPG(t)
	// The keys are made at the drill's virtual time, ahead of the wall clock:
	// gpg runs at that time too.
	at := "--faked-system-time=" + dr.clk.Now().Format("20060102T150405") + "!"
	sec, err := dr.members["alice@example.test"].ArmoredPrivate(nil, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g.Must(sec, at, "--import")
	for _, k := range dr.lists.Keys() {
		pub, _ := k.ArmoredPublic()
		g.Must(pub, at, "--import")
	}
	out, st, err := g.Run(daemontest.ArmorBlock.Find(raw), at, "--decrypt")
	if err != nil {
		t.Fatalf("gpg --decrypt: %v\n%s", err, st)
	}
	plain, status := out, string(st)
	daemontest.MustContain(t, "gpg status", status, "DECRYPTION_OKAY", "GOODSIG")
	daemontest.MustContain(t, "decrypted reminder", string(plain), "Subject: [SEC-2026-0001] reminder: triage due (1 working day)")
	daemontest.MustContain(t, "decrypted reminder", daemontest.MIMEText(plain), "Reminder for SEC-2026-0001", "2026-11-24 09:00 UTC (Tuesday)")
}

// TestDaemonTicks: the daemon's own cron loop (every second here, on the
// wall clock) sweeps at the injected clock, and stops with the daemon.
func TestDaemonTicks(t *testing.T) {
	sc, _ := parseScenario([]byte("start 2026-11-23 09:00\n"), "t")
	base, _ := config.Parse([]byte(builtinRoster), "drill")
	logs := &daemontest.SyncBuffer{}
	dr, err := newDrill(base, sc, t.TempDir(), daemon.NewLogger("debug", logs))
	if err != nil {
		t.Fatal(err)
	}
	dr.tickSpec = "@every 1s"
	if err := dr.up(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer dr.down()
	if err := daemon.Submit(dr.d.Addr().String(), "rep@example.net", []string{"security@example.test"},
		[]byte("From: rep@example.net\r\nTo: security@example.test\r\nSubject: x\r\nMessage-ID: <1@example.net>\r\n\r\nDetails.\r\n")); err != nil {
		t.Fatal(err)
	}
	dr.clk.set(sc.start.Add(25 * time.Hour)) // the triage reminder is due
	deadline := time.Now().Add(10 * time.Second)
	for {
		dr.relay.mu.Lock()
		n := 0
		for _, s := range dr.relay.out {
			if s.kind == "reminder" {
				n++
			}
		}
		dr.relay.mu.Unlock()
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("reminders sent: %d, want 1\n%s", n, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // two more ticks: nothing new
	if err := dr.down(); err != nil {
		t.Fatal(err)
	}
	dr.relay.mu.Lock()
	defer dr.relay.mu.Unlock()
	n := 0
	for _, s := range dr.relay.out {
		if s.kind == "reminder" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("reminders after more ticks: %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "msg=tick") {
		t.Errorf("no tick in the log:\n%s", logs)
	}
}

// TestScenarioErrors: a scenario mistake names its line and what to write.
func TestScenarioErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"@ +0 down\n", "line 1: a relative time needs a start line first"},
		{"start 2026-11-23 09:00\n@ tomorrow mail a@b.c\n.\n", `line 2: "tomorrow" is not a time`},
		{"start 2026-11-23 09:00\n@ +1d mail a@b.c\nSubject: x\n\nno end\n", "line 2: the text of this mail has no closing line"},
		{"start 2026-11-23 09:00\n@ +1d dance\n", `line 2: unknown action "dance"`},
		{"start 2026-11-23 09:00\nbogus\n", `line 2: "bogus": a line is start, end`},
		{"@ 2026-11-23 09:00 up\n", "no start line"},
	} {
		_, err := parseScenario([]byte(tt.text), "s")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseScenario(%q) = %v, want %q", tt.text, err, tt.want)
		}
	}
	sc, err := parseScenario([]byte("start 2026-11-23T09:00Z\n@ +1d2h30m commands src1 {thread}\n/accept\n..dot\n.\n"), "s")
	if err != nil || len(sc.events) != 1 || !sc.events[0].at.Equal(time.Date(2026, 11, 24, 11, 30, 0, 0, time.UTC)) ||
		sc.events[0].body != "/accept\n.dot\n" || !sc.end.Equal(sc.events[0].at.Add(4*24*time.Hour)) {
		t.Errorf("parseScenario = %+v, %v", sc, err)
	}
}

// TestOnCallHandoverEndToEnd: a report in bob's week is his; he hands over,
// and nothing changes until alice acknowledges; then the incident is hers and
// so is its triage reminder. A command that is not /oncall, outside a thread,
// makes a new report as before.
func TestOnCallHandoverEndToEnd(t *testing.T) {
	dr := runDrill(t, `start 2026-11-30 09:00
end 2026-12-01 10:00
@ +0 mail rep@example.net
Subject: overflow

Details.
.
@ +1h commands bob {security}
/oncall alice@example.test
.
@ +2h commands bob
/oncall
.
@ +3h commands alice {security}
/oncall ack
.
`)
	var got []string
	for _, r := range dr.rows {
		if r.dir == "out" && (r.kind == "oncall" || r.kind == "reminder" || r.kind == "receipt") {
			got = append(got, r.at.Format("Mon 15:04")+" "+r.subject+" → "+dr.label(r))
		}
	}
	want := []string{
		"Mon 10:00 [on-call] receipt: applied → SRC: bob@example.test",
		"Mon 10:00 [embargo] on-call handover to alice@example.test requested → SRC",
		"Mon 11:00 [SEC-2026-0001] receipt: applied → SRC: bob@example.test",
		"Mon 12:00 [on-call] receipt: applied → SRC: alice@example.test",
		"Mon 12:00 [embargo] on call: alice@example.test → SRC",
		"Tue 09:00 [SEC-2026-0001] reminder: triage due (1 working day) → SRC: alice@example.test",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("on-call rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(dr.ids) != 1 {
		t.Errorf("incidents %v: an /oncall message must not open one", dr.ids)
	}
	body := func(subject string) string {
		for _, r := range dr.rows {
			if r.dir != "out" || r.subject != subject {
				continue
			}
			for i, to := range r.to {
				if k := dr.members[to]; k != nil {
					dec, err := keys.Decrypt(r.raw[i], k, dr.lists, keys.Options{Now: dr.clk.Now})
					if err != nil {
						t.Fatal(err)
					}
					return daemontest.MIMEText(dec.Inner)
				}
			}
		}
		t.Fatalf("no message %q", subject)
		return ""
	}
	daemontest.MustContain(t, "in-thread /oncall receipt", body("[SEC-2026-0001] receipt: applied"),
		"on call: bob@example.test, by the rotation, until 2026-12-07 00:00 UTC (Monday); handover to alice@example.test pending")
	daemontest.MustContain(t, "handover notice", body("[embargo] on call: alice@example.test"),
		"taking over from bob@example.test", "alice@example.test is now the incident commander of SEC-2026-0001")
}
