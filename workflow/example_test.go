package workflow_test

import (
	"fmt"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

// ExampleApply accepts a report and sets its disclosure date from one signed
// reply; the receipt states the snapped instant.
func ExampleApply() {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC) // a Monday
	inc := workflow.Incident{ID: "SEC-2026-0007", Phase: workflow.PhaseTriage, Opened: now.Add(-time.Hour), Reporter: "rep@example.net"}
	signer := workflow.Signer{Fingerprint: "0123ABCD", Email: "alice@example.org", Roles: []string{workflow.RoleSRC}, SignedAt: now.Add(-time.Minute)}
	env := workflow.Env{SRC: []string{"alice@example.org", "bob@example.org"}, LastLead: "alice@example.org", MessageID: "reply-1@example.org"}

	text := "/accept\r\n/disclose 2026-12-04\r\n\r\nConfirmed; Friday is too soon for the release team.\r\n\r\n> quoted text: /disclose now never counts\r\n"
	res, err := workflow.Apply(inc, text, signer, now, env)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Incident.Phase, res.Incident.FixLead, workflow.FormatInstant(res.Incident.T))
	for _, a := range res.Actions {
		fmt.Println(a.Kind(), a.(workflow.ReporterMail).Template)
	}
	fmt.Print(res.Receipt.Text())
	// Output:
	// fix bob@example.org 2026-12-07 16:00 UTC (Monday)
	// reporter-mail accepted
	// reporter-mail date
	// Commands for SEC-2026-0007, signed by alice@example.org, processed 2026-11-23 09:00 UTC (Monday).
	//
	// > /accept
	// ok: phase triage → fix; Fix Lead bob@example.org (round-robin); reporter told
	//
	// > /disclose 2026-12-04
	// ok: T = 2026-12-07 16:00 UTC (Monday) (asked 2026-12-04 16:00 UTC (Friday); T is 16:00 UTC on the next Monday–Thursday that is not a holiday); reporter told
	//
	// All 2 commands were applied.
}
