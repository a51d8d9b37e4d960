package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// TestAckCapEndToEnd: the global cap on acknowledgements through SMTP
// (docs/threat-model.md B8). With acks_per_day = 3, five reports from five
// senders open five incidents and every committee copy goes out, but only
// the first three reporters are acknowledged; the SRC gets one alert, when
// the cap first holds one back, and /metrics counts the two held back. 24
// hours later a new window acknowledges again, a sender the cap held back
// included: the cap never counted against its address.
func TestAckCapEndToEnd(t *testing.T) {
	start := time.Now().UTC()
	clk := daemontest.RunningClock(start)
	f := newCmdFixtureOpts(t, nil, "[intake]\nacks_per_day = 3\n", clk.Options(daemon.Options{NoTick: true}))
	// The fixture's report from rep@out.test was acknowledged: 1 of 3.
	senders := []string{f.reporterAddr, "one@out.test", "two@out.test", "three@out.test", "four@out.test"}
	report := func(who, subject string) {
		t.Helper()
		f.h.MustSend(who, []string{"security@ex.test"}, daemontest.Report(who, subject, "CANARY-cap details"))
	}
	for i, who := range senders[1:] {
		report(who, fmt.Sprintf("finding %d", i))
	}
	// one@ and two@: an acknowledgement and 2 copies each; three@: 2
	// copies and the alert to alice and bob; four@: 2 copies.
	f.next(3 + 3 + 4 + 2)
	msgs := f.h.Rec.Messages()
	for i, who := range senders {
		want := 0
		if i < 3 {
			want = 1
		}
		if n := len(daemontest.To(msgs, who)); n != want {
			t.Errorf("%s got %d acknowledgements, want %d", who, n, want)
		}
	}
	incs := listIncidents(t, f.h)
	if len(incs) != 5 {
		t.Fatalf("%d incidents, want 5: a report whose acknowledgement is held back is still taken", len(incs))
	}
	var firstHeld string
	for _, inc := range incs {
		if inc.Reporter == "three@out.test" {
			firstHeld = string(inc.ID)
		}
	}
	// Each member's messages: the five reports' copies and one alert.
	for _, m := range []struct {
		addr string
		g    *daemontest.GPG
	}{{"alice@ex.test", f.alice}, {"bob@ex.test", f.bob}} {
		var copies int
		var alerts []string
		for _, msg := range daemontest.To(msgs, m.addr) {
			plain, _ := m.g.DecryptMIME(msg.Data)
			text := daemontest.MIMEText(plain)
			switch {
			case strings.Contains(string(plain), "acknowledgements stopped"):
				alerts = append(alerts, text)
			case strings.Contains(text, "CANARY-"):
				copies++
			}
		}
		if copies != 5 || len(alerts) != 1 {
			t.Fatalf("%s got %d report copies and %d cap alerts, want 5 and 1:\n%s", m.addr, copies, len(alerts), daemontest.Summary(msgs))
		}
		daemontest.MustContain(t, "the cap alert", alerts[0], "acks_per_day = 3", firstHeld,
			`embargo_acks_suppressed_total{limit="global"}`, "still taken, archived and copied to you")
		if strings.Contains(alerts[0], "CANARY") {
			t.Fatal("the cap alert quotes a report")
		}
	}
	metric := func(limit string) float64 {
		return daemon.CounterValue(f.h.D, "embargo_acks_suppressed_total", limit)
	}
	if g, s := metric("global"), metric("sender"); g != 2 || s != 0 {
		t.Errorf(`embargo_acks_suppressed_total: global %v, sender %v; want 2 and 0`, g, s)
	}

	// A new window 24 hours after the first acknowledgement: four@, held
	// back by the cap, is acknowledged now, and nothing alerts.
	clk.Set(start.Add(incidentdb.AckWindow + time.Hour))
	report("four@out.test", "finding again")
	if got := daemontest.To(f.next(3), "four@out.test"); len(got) != 1 {
		t.Errorf("four@out.test got %d acknowledgements in the next window, want 1", len(got))
	}
	// Its own limit (one a day) holds the next one back, counted apart.
	report("four@out.test", "and again")
	f.next(2)
	if g, s := metric("global"), metric("sender"); g != 2 || s != 1 {
		t.Errorf(`embargo_acks_suppressed_total: global %v, sender %v; want 2 and 1`, g, s)
	}
}
