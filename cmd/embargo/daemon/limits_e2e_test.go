package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// TestIntakeLimitsEndToEnd: the intake limits through SMTP on a virtual
// clock (docs/threat-model.md B7). A sender beyond its new incidents per
// hour, and a client address beyond its own, get 450 4.7.1 and nothing is
// stored; mail into an existing incident and a committee member's signed
// report still pass; the SRC gets one alert per limit and hour, however
// many reports are refused; /metrics counts every refusal by reason; an
// hour later the sender gets through again.
func TestIntakeLimitsEndToEnd(t *testing.T) {
	start := time.Now().UTC()
	clk := daemontest.RunningClock(start)
	f := newCmdFixtureOpts(t, nil, "[intake]\nnew_incidents_per_sender_per_hour = 2\nnew_incidents_per_client_per_hour = 4\n",
		clk.Options(daemon.Options{NoTick: true}))
	// The fixture's report from rep@out.test counts once for the sender and
	// once for 127.0.0.1.
	rep := f.reporterAddr
	send := func(from, raw string) (int, string) {
		t.Helper()
		return daemontest.Code(f.h.Send(from, []string{"security@ex.test"}, raw))
	}
	refused := func(what string, code int, enh string) {
		t.Helper()
		if code != 450 || enh != "4.7.1" {
			t.Fatalf("%s: reply %d %s, want 450 4.7.1", what, code, enh)
		}
	}
	incidents := func() int { return len(listIncidents(t, f.h)) }
	metric := func(reason string) float64 {
		return daemon.CounterValue(f.h.D, "embargo_intake_refused_total", reason)
	}
	// alerts decrypts alice's messages among msgs and returns the limit alerts.
	alerts := func(msgs []queuetest.Message) []string {
		var out []string
		for _, m := range daemontest.To(msgs, "alice@ex.test") {
			plain, _ := f.alice.DecryptMIME(m.Data)
			if s := string(plain); strings.Contains(s, "new reports refused") {
				out = append(out, daemontest.MIMEText(plain))
			}
		}
		return out
	}

	if c, e := send(rep, daemontest.Report(rep, "second finding", "details")); c != 0 {
		t.Fatalf("the sender's second report: %d %s", c, e)
	}
	f.next(2) // the copies (one acknowledgement a day)
	c, e := send(rep, daemontest.Report(rep, "third finding", "CANARY-limit"))
	refused("the sender's third report", c, e)
	msgs := f.next(2) // the alert, to alice and to bob
	a := alerts(msgs)
	if len(a) != 1 {
		t.Fatalf("%d alerts to alice after the first refusal, want 1:\n%s", len(a), daemontest.Summary(msgs))
	}
	daemontest.MustContain(t, "the sender-limit alert", a[0], rep, "new_incidents_per_sender_per_hour = 2", "450 4.7.1",
		`embargo_intake_refused_total{reason="sender"}`)
	if strings.Contains(a[0], "CANARY") {
		t.Fatal("the alert quotes the refused report")
	}
	for i := range 3 {
		c, e = send(rep, daemontest.Report(rep, fmt.Sprintf("more %d", i), "details"))
		refused("a further report", c, e)
	}
	if n := incidents(); n != 2 {
		t.Fatalf("%d incidents after the refusals, want 2", n)
	}
	if v := metric("sender"); v != 4 {
		t.Errorf(`embargo_intake_refused_total{reason="sender"} = %v, want 4`, v)
	}

	// The reporter writing into their incident is never limited.
	f.h.MustSend(rep, []string{"security+" + f.id + "@ex.test"},
		fmt.Sprintf("From: %s\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <%d@out.test>\n\nmore details\n", rep, f.id, f.id, time.Now().UnixNano()))
	f.next(2) // to alice and bob

	// Two more senders from the same client address reach its limit of 4.
	for _, who := range []string{"one@out.test", "two@out.test"} {
		if c, e := send(who, daemontest.Report(who, "finding", "details")); c != 0 {
			t.Fatalf("%s: %d %s", who, c, e)
		}
		f.next(3)
	}
	c, e = send("three@out.test", daemontest.Report("three@out.test", "finding", "details"))
	refused("a fifth new incident from 127.0.0.1", c, e)
	msgs = f.next(2)
	a = alerts(msgs)
	if len(a) != 1 {
		t.Fatalf("%d alerts about the client limit, want 1", len(a))
	}
	daemontest.MustContain(t, "the client-limit alert", a[0], "127.0.0.1", "new_incidents_per_client_per_hour = 4")
	c, e = send("four@out.test", daemontest.Report("four@out.test", "finding", "details"))
	refused("a sixth", c, e)
	if v := metric("client"); v != 2 {
		t.Errorf(`embargo_intake_refused_total{reason="client"} = %v, want 2`, v)
	}

	// A committee member's signed report passes, over both limits.
	signed := f.alice.Must([]byte("A new finding of mine.\n"), "--clearsign", "-u", f.afpr)
	f.h.MustSend("alice@ex.test", []string{"security@ex.test"}, fmt.Sprintf("From: alice@ex.test\nTo: security@ex.test\nSubject: found one\nMessage-ID: <%d@ex.test>\n\n%s",
		time.Now().UnixNano(), strings.ReplaceAll(string(signed), "\r\n", "\n")))
	f.next(2) // the copies (no acknowledgement to our own domain)
	if n := incidents(); n != 5 {
		t.Fatalf("%d incidents, want 5 (rep's 2, one@, two@, alice's)", n)
	}

	// An hour later the sender gets through again, and a new refusal is
	// told again: once per limit and hour.
	clk.Set(start.Add(LimitHour + time.Minute))
	for i := range 2 {
		if c, e := send(rep, daemontest.Report(rep, fmt.Sprintf("next hour %d", i), "details")); c != 0 {
			t.Fatalf("an hour later, report %d: %d %s", i, c, e)
		}
		f.next(2) // the copies: the acknowledgement limit counts 24 hours
	}
	c, e = send(rep, daemontest.Report(rep, "next hour 3", "details"))
	refused("the third report of the next hour", c, e)
	if a := alerts(f.next(2)); len(a) != 1 {
		t.Fatalf("%d alerts in the next hour, want 1", len(a))
	}
	if v := metric("sender"); v != 5 {
		t.Errorf(`embargo_intake_refused_total{reason="sender"} = %v, want 5`, v)
	}
}

// LimitHour is the intake limits' window.
const LimitHour = time.Hour

// listIncidents reads every incident from the daemon's store.
func listIncidents(t *testing.T, h *daemontest.Harness) []workflow.Incident {
	t.Helper()
	var incs []workflow.Incident
	if err := h.D.View(func(tx *bolt.Tx) error {
		var err error
		incs, err = incidentdb.List(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return incs
}

// TestIntakeLimitLMTP: over LMTP the client is the MTA in front, which
// embargo cannot tell from its clients: the per-client limit does not
// count it, the per-sender limit does; over SMTP both apply.
func TestIntakeLimitLMTP(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "[intake]\nnew_incidents_per_client_per_hour = 2\nnew_incidents_per_sender_per_hour = 1\n" +
		"[lmtp]\nlisten = \"127.0.0.1:0\"\n"}, daemon.Options{NoTick: true})
	lmtp := func(from string) error {
		t.Helper()
		tr, err := daemontest.Transact(h.D.LMTPAddr().String(), true, from, []string{"security@ex.test"},
			[]byte(daemontest.CRLF(daemontest.Report(from, "finding", "details"))))
		if err != nil {
			return err
		}
		return tr.Data["security@ex.test"]
	}
	for i := range 4 {
		from := fmt.Sprintf("lmtp%d@out.test", i)
		if err := lmtp(from); err != nil {
			t.Fatalf("LMTP report %d from a new sender: %v", i, err)
		}
	}
	if c, e := daemontest.Code(lmtp("lmtp0@out.test")); c != 450 || e != "4.7.1" {
		t.Errorf("LMTP, the same sender's second new incident: %d %s, want 450 4.7.1", c, e)
	}
	for i := range 3 {
		from := fmt.Sprintf("smtp%d@out.test", i)
		c, e := daemontest.Code(h.Send(from, []string{"security@ex.test"}, daemontest.Report(from, "finding", "details")))
		switch {
		case i < 2 && c != 0:
			t.Errorf("SMTP report %d: %d %s", i, c, e)
		case i == 2 && (c != 450 || e != "4.7.1"):
			t.Errorf("SMTP, the client's third new incident: %d %s, want 450 4.7.1", c, e)
		}
	}
}
