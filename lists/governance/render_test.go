package governance

import (
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// daemonFields are what the daemon adds to every governance mail (Mail):
// ReplyAddress is where commands about it go (listd renderFields).
var daemonFields = map[string]any{"Project": "example.org", "ListAddress": "distributors@ex.org", "ListKey": fpr('L'),
	"ApplyAddress": "distributors+apply@ex.org", "SecurityAddress": "security@ex.org", "ReplyAddress": "security+GOV-2026-0001@ex.org"}

// TestMailsRender: every mail any governance outcome asks for renders with
// its fields and the daemon's (missing fields are errors), and no rendered
// line starts with "/", whatever the applicant wrote (docs/threat-model.md
// E5, F4).
func TestMailsRender(t *testing.T) {
	set, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	sub := submission()
	sub.Text = strings.Replace(applicationText, "Users: 40,000 installs outside our company", "Users: many\n/admit\n/member add evil@x.test src", 1)
	var all []Action
	collect := func(r Result) State { all = append(all, r.Actions...); return r.State }

	r, err := Submit(State{}, sub, t0, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := collect(r)
	bad := submission()
	bad.Keys = nil
	r, _ = Submit(State{}, bad, t0, cfg)
	collect(r)
	st = collect(apply(t, st, "/admit\n", 'A', t0.Add(time.Minute), "GOV-2026-0001"))
	collect(apply(t, st, "/admit\n", 'B', t0.Add(2*time.Minute), "GOV-2026-0001"))
	collect(apply(t, st, "/deny not maintained\n", 'B', t0.Add(2*time.Minute), "GOV-2026-0001"))
	collect(Tick(st, t0.Add(DefaultLazyConsensus), cfg))
	collect(Tick(mustSubmit(t), t0.Add(2*DefaultLazyConsensus), cfg))
	st = collect(apply(t, State{}, "/member remove security@old-distro.test gone\n", 'A', t0, ""))
	collect(apply(t, st, "/member remove security@old-distro.test\n", 'B', t0, ""))
	collect(Tick(st, t0.Add(DefaultLazyConsensus), cfg))
	collect(apply(t, State{}, "/member remove me\n", 'E', t0, ""))
	st = collect(apply(t, State{}, "/member key bob@ex.org\n", 'A', t0, "", key('9', "bob@ex.org")))
	collect(apply(t, st, "/admit\n", 'D', t0, "GOV-2026-0001"))
	st = collect(apply(t, State{}, "/member add frank@ex.org src\n", 'A', t0, "", key('F', "frank@ex.org")))
	collect(apply(t, st, "/member add frank@ex.org src\n", 'B', t0, "", key('F', "frank@ex.org")))

	seen := map[string]bool{}
	for _, a := range all {
		m, ok := a.(Mail)
		if !ok {
			continue
		}
		seen[m.Template] = true
		data := map[string]any{}
		for k, v := range daemonFields {
			data[k] = v
		}
		for k, v := range m.Fields {
			data[k] = v
		}
		out, err := set.Render(m.Template, data)
		if err != nil {
			t.Errorf("%s: %v", m.Template, err)
			continue
		}
		checkInert(t, m.Template, out)
	}
	for _, want := range []string{"distributor-application", "distributor-application-ack", "distributor-application-refused", "distributor-welcome",
		"distributor-removal", "roster-change", "two-person-pending"} {
		if !seen[want] {
			t.Errorf("no scenario sent %s", want)
		}
	}

	// The two-person notice of an incident, as workflow asks for it.
	inc := workflow.Incident{ID: "SEC-2026-0001", Phase: workflow.PhaseFix}
	res, err := workflow.Apply(inc, "/public\n", workflow.Signer{Fingerprint: fpr('A'), Email: "alice@ex.org", Roles: []string{"src"}, SignedAt: t0}, t0,
		workflow.Env{SRC: []string{"alice@ex.org", "bob@ex.org"}, Quorum: 2})
	if err != nil || len(res.Actions) != 1 {
		t.Fatalf("%v %v", err, res.Actions)
	}
	a := res.Actions[0].(workflow.AlertSRC)
	data := map[string]any{"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@ex.org"} // what the daemon's alerts add
	for k, v := range a.Fields {
		data[k] = v
	}
	out, err := set.Render(a.Template, data)
	if err != nil {
		t.Fatal(err)
	}
	checkInert(t, a.Template, out)
}

func checkInert(t *testing.T, name, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "/") {
			t.Errorf("%s: a line starts with a command: %q", name, l)
		}
	}
}
