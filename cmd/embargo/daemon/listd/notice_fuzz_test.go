package listd

import (
	"context"
	"fmt"
	"testing"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// FuzzNoticeRender carries an incident from triage to its release with
// the advisory's fields from the fuzzer: the summary (the subject of every
// notice and advisory), actor, impact, mitigation, credit, the CVSS
// vector and the CVE IDs, set through alice's signed commands. Four
// messages: the fields and T; the vector and CVEs alone (refused or not,
// the rest stands); /notify and /approve, which send the embargoed notice
// to the distributor; /disclose now, which lifts the embargo and releases
// the advisory to an outside channel, the distributor and the committee.
// Every row queued is made as the delivery worker makes it and checked by
// checkQueued (docs/threat-model.md B2, B10, D6, E5); each message must
// queue alice a receipt, the embargo the notice, the release the
// advisory.
func FuzzNoticeRender(f *testing.F) {
	k := newStoreKeys(f)
	ann, err := keys.GenerateListKey("announce", "announce@ex.test", ko)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("heap overflow in the parser", "A remote attacker", "execute code as the server user", "Disable the parser until you upgrade.",
		"Rep Orter", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVE-2026-12345")
	// More in testdata/fuzz/FuzzNoticeRender: hostile values (CR and LF,
	// header lines, encoded words, armor and "/" lines, long lines,
	// invalid UTF-8, control and bidi characters).
	f.Fuzz(func(t *testing.T, summary, actor, impact, mitigation, credit, cvss, cve string) {
		s, db := storeService(t, k, func(o *Options) {
			o.Quorum = 1 // /disclose now completes with alice's signature
			o.AnnounceKey, o.Channels = ann, []Channel{{Address: "oss-security@lists.test", Tag: "[ex.test]"}}
		})
		after := openIncident(t, s, db, nil)
		steps := []string{
			"/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N\n/set summary " + summary + "\n/set actor " + actor +
				"\n/set impact <<END\n" + impact + "\nEND\n/set mitigation <<END\n" + mitigation + "\nEND\n/set credit " + credit +
				"\n/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n/fixed\n/disclose 2026-12-03\n",
			"/cvss " + cvss + "\n/cve " + cve + "\n",
			"/notify\n/approve\n",
			"/disclose now\n",
		}
		for i, text := range steps {
			raw, ok := memberMail(k, k.alice, fmt.Sprintf("notice%d.fuzz@ex.test", i), "Re: [SEC-2026-0001]", text, i%2 == 1)
			if !ok {
				t.Fatalf("step %d: alice's mail cannot be written", i+1)
			}
			if err := s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{fuzzThread}}, raw); err != nil {
				t.Fatalf("step %d: refused: %v", i+1, err)
			}
			kinds := map[string]int{}
			for _, c := range checkQueued(t, s, db, after, k.readers()) {
				kinds[c.Kind]++
				after = max(after, c.ID)
			}
			if kinds["receipt"] != 1 {
				t.Fatalf("step %d queued %d receipts (%v)", i+1, kinds["receipt"], kinds)
			}
			inc := getIncident(t, db, fuzzIncident)
			switch {
			case i == 2 && inc.Phase == workflow.PhaseEmbargo && kinds["distributor-notice"] != 1,
				i == 3 && inc.Phase == workflow.PhaseDisclosed && (kinds["advisory-channel"] != 1 || kinds["advisory-distributors"] != 1):
				t.Fatalf("step %d: phase %s, but the copies queued are %v", i+1, inc.Phase, kinds)
			}
		}
	})
}
