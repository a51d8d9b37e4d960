package daemon_test

import (
	"bytes"
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

// cmdFixture is a committee of two signing members and a reporter.
type cmdFixture struct {
	*keysFixture
	bob          *daemontest.GPG
	afpr, bfpr   string
	id           string
	seen         int // relay messages already looked at
	reporterAddr string
}

func newCmdFixture(t *testing.T) *cmdFixture {
	t.Helper()
	return newCmdFixtureWith(t, nil, "")
}

// distributor is a distributors-list member with GnuPG.
type distributor struct {
	addr string
	g    *daemontest.GPG
	fpr  string
}

// newCmdFixtureWith adds distributors (each with a key) and extra TOML tables.
func newCmdFixtureWith(t *testing.T, dists []*distributor, extra string) *cmdFixture {
	t.Helper()
	return newCmdFixtureOpts(t, dists, extra, daemon.Options{})
}

// newCmdFixtureOpts is newCmdFixtureWith with the daemon's options (a
// fake clock, a configuration loader).
func newCmdFixtureOpts(t *testing.T, dists []*distributor, extra string, o daemon.Options) *cmdFixture {
	t.Helper()
	alice, bob := daemontest.NewGPG(t), daemontest.NewGPG(t)
	afpr := alice.GenKey("Alice <alice@ex.test>")
	bfpr := bob.GenKey("Bob <bob@ex.test>")
	keyFiles := map[string][]byte{"alice": alice.Export(afpr), "bob": bob.Export(bfpr)}
	members := daemontest.TOMLMember("alice@ex.test", afpr) + daemontest.TOMLMember("bob@ex.test", bfpr)
	for i, d := range dists {
		d.g = daemontest.NewGPG(t)
		d.fpr = d.g.GenKey("D <" + d.addr + ">")
		keyFiles[fmt.Sprintf("dist%d", i)] = d.g.Export(d.fpr)
		members += fmt.Sprintf("[[members]]\nemail = %q\nroles = [\"distributor\"]\nfingerprint = %q\n", d.addr, d.fpr)
	}
	if len(dists) == 0 {
		members += "[[members]]\nemail = \"dist@vendor.test\"\nroles = [\"distributor\"]\n"
	}
	kd := daemontest.KeysDir(t, keyFiles)
	h := daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members, Extra: extra}, o)
	f := &cmdFixture{keysFixture: &keysFixture{h: h, alice: alice, reporter: daemontest.NewGPG(t)}, bob: bob, afpr: afpr, bfpr: bfpr, reporterAddr: "rep@out.test"}
	pub := exportListKey(t, h, "security")
	for _, g := range []*daemontest.GPG{f.reporter, alice, bob} {
		g.ImportKey(pub)
	}
	for _, name := range []string{"distributors", "announce"} {
		k := exportListKey(t, h, name)
		for _, d := range dists {
			d.g.ImportKey(k)
		}
		for _, g := range []*daemontest.GPG{f.reporter, alice, bob} {
			g.ImportKey(k)
		}
	}
	f.secFpr = alice.Fingerprint("security@ex.test")

	h.MustSend(f.reporterAddr, []string{"security@ex.test"}, daemontest.Report(f.reporterAddr, "parser overflow", "CANARY-cmd details"))
	msgs := f.next(3) // ack, alice, bob
	ack := daemontest.To(msgs, f.reporterAddr)[0]
	f.id = idRE.FindString(string(ack.Data))
	if f.id == "" {
		t.Fatal("no incident ID in the acknowledgement")
	}
	return f
}

// next waits for n more relay messages and returns them.
func (f *cmdFixture) next(n int) []queuetest.Message {
	f.h.T.Helper()
	all := f.h.Settle(f.seen + n)
	out := all[f.seen:]
	f.seen = len(all)
	return out
}

// clearsigned returns a message from a member whose body is clear-signed text.
func (f *cmdFixture) clearsigned(g *daemontest.GPG, fpr, from, text string, extra ...string) string {
	args := append(extra, "--clearsign", "-u", fpr)
	signed := g.Must([]byte(text), args...)
	return fmt.Sprintf("From: %s\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <%d@ex.test>\n\n%s",
		from, f.id, f.id, time.Now().UnixNano(), strings.ReplaceAll(string(signed), "\r\n", "\n"))
}

// receipt decrypts the one receipt among msgs addressed to a member.
func (f *cmdFixture) receipt(g *daemontest.GPG, msgs []queuetest.Message, addr string) string {
	t := f.h.T
	t.Helper()
	for _, m := range daemontest.To(msgs, addr) {
		plain, _ := g.DecryptMIME(m.Data)
		if text := daemontest.MIMEText(plain); strings.Contains(string(plain), "receipt:") || strings.Contains(text, "Commands for") {
			return text
		}
	}
	t.Fatalf("no receipt for %s among %d messages:\n%s", addr, len(msgs), daemontest.Summary(msgs))
	return ""
}

// discloseNow signs /disclose now twice, as the two-person rule asks
// (docs/design.md §1): alice's signature alone releases nothing (her
// receipt says it is pending, and the SRC is asked for a second one), bob's
// completes it. It returns the n messages bob's signature causes (none
// waited for when n is 0).
func (f *cmdFixture) discloseNow(n int) []queuetest.Message {
	t := f.h.T
	t.Helper()
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/disclose now\n"))
	msgs := f.next(4) // alice's receipt, bob's copy, the pending notice to alice and to bob
	daemontest.MustContain(t, "the first signature's receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "pending: signature 1 of 2 recorded; nothing done yet")
	if inc := f.incident(); inc.Phase == workflow.PhaseDisclosed || len(inc.Pending) != 1 {
		t.Fatalf("one signature of /disclose now: phase %s, %d pending", inc.Phase, len(inc.Pending))
	}
	f.h.MustSend("bob@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.bob, f.bfpr, "bob@ex.test", "/disclose now\n"))
	if n == 0 {
		return nil
	}
	return f.next(n)
}

func (f *cmdFixture) incident() workflow.Incident {
	t := f.h.T
	var inc workflow.Incident
	f.h.D.View(func(tx *bolt.Tx) error {
		p, err := incidentdb.Get(tx, workflow.ID(f.id))
		if err != nil {
			t.Fatal(err)
		}
		inc = *p
		return nil
	})
	return inc
}

// TestSignedCommandsEndToEnd takes a report from triage to a scheduled,
// approved disclosure with nothing but gpg-signed mail (the workflow issue's
// "done when"), through the real SMTP pipeline.
func TestSignedCommandsEndToEnd(t *testing.T) {
	f := newCmdFixture(t)

	// /accept with Alice as lead: receipt to Alice, update to the reporter,
	// Alice's message forwarded to Bob.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n/lead me\n\nTaking this one.\n"))
	msgs := f.next(3)
	r := f.receipt(f.alice, msgs, "alice@ex.test")
	daemontest.MustContain(t, "receipt", r, "> /accept", "> /lead me")
	if strings.Contains(r, "refused") {
		t.Fatalf("accept refused:\n%s", r)
	}
	up := daemontest.To(msgs, f.reporterAddr)
	if len(up) != 1 {
		t.Fatalf("reporter got %d updates", len(up))
	}
	st := f.reporter.VerifySigned(up[0].Data)
	daemontest.MustContain(t, "reporter update signature", st, "GOODSIG")
	daemontest.MustContain(t, "reporter update", daemontest.Body(t, up[0]), "confirmed", f.id)
	fwd, _ := f.bob.DecryptMIME(daemontest.To(msgs, "bob@ex.test")[0].Data)
	daemontest.MustContain(t, "bob's copy of alice's message", string(fwd), "Taking this one.")
	if inc := f.incident(); inc.Phase != workflow.PhaseFix || inc.FixLead != "alice@ex.test" {
		t.Fatalf("after /accept: phase %s lead %q", inc.Phase, inc.FixLead)
	}

	// The advisory fields, CVSS and CVE, signed and encrypted to the list key.
	T := workflow.NextSlot(time.Now().UTC().Add(10*24*time.Hour), nil)
	cmds := "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n" +
		"/set summary <<END\nheap overflow in the parser\nEND\n/set actor <<END\nA remote attacker\nEND\n" +
		"/set impact <<END\nexecute code\nEND\n/set affected <<END\nparser v1.0.0 - v1.4.2\nEND\n" +
		"/set fixed <<END\nparser v1.4.3\nEND\n/set mitigation <<END\nDisable the parser.\nEND\n" +
		"/fixed\n/disclose " + T.Format("2006-01-02") + "\n"
	enc := f.alice.Must([]byte(cmds), "--sign", "--encrypt", "--armor", "-u", f.afpr, "-r", f.secFpr)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, fmt.Sprintf("From: alice@ex.test\nSubject: Encrypted message\nMessage-ID: <c2@ex.test>\nTo: security+%s@ex.test\n\n%s", f.id, enc))
	msgs = f.next(4) // receipt, fixed + date to the reporter, bob's copy
	r = f.receipt(f.alice, msgs, "alice@ex.test")
	daemontest.MustContain(t, "receipt", r, workflow.FormatInstant(T), "9.8")
	if strings.Contains(r, "refused") {
		t.Fatalf("commands refused:\n%s", r)
	}
	var sawDate bool
	for _, m := range daemontest.To(msgs, f.reporterAddr) {
		if strings.Contains(daemontest.Body(t, m), workflow.FormatInstant(T)) {
			sawDate = true
		}
	}
	if !sawDate {
		t.Error("the reporter was not told the disclosure date")
	}

	// Notify and approve.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n/approve\n"))
	// receipt, bob's copy, and to both: the distributor has no key, so no
	// notice, and the SRC is told
	msgs = f.next(4)
	r = f.receipt(f.alice, msgs, "alice@ex.test")
	if strings.Contains(r, "refused") {
		t.Fatalf("/notify /approve refused:\n%s", r)
	}
	if len(daemontest.To(msgs, "dist@vendor.test")) != 0 {
		t.Error("a distributor without a key got a notice")
	}
	inc := f.incident()
	if inc.Phase != workflow.PhaseEmbargo || !inc.Approved || !inc.T.Equal(T) || inc.Severity().String() != "Critical" {
		t.Errorf("after /notify /approve: phase %s approved %v T %v severity %v", inc.Phase, inc.Approved, inc.T, inc.Severity())
	}
	if len(inc.History) == 0 || inc.History[len(inc.History)-1].Email != "alice@ex.test" {
		t.Errorf("history does not record who: %+v", inc.History)
	}
	canaryFree(t, f.h.Rec.Messages()[3:], "heap overflow in the parser")

	// Release now, then the retrospective closes the incident.
	// Two signatures; then bob's receipt, alice's copy, "disclosed" to the
	// reporter, the release pack to alice and bob; the keyless distributor
	// gets neither "embargo lifted" nor the advisory, and alice and bob are
	// told of each
	msgs = f.discloseNow(9)
	if r := f.receipt(f.bob, msgs, "bob@ex.test"); strings.Contains(r, "refused") {
		t.Fatalf("/disclose now refused:\n%s", r)
	}
	var told bool
	for _, m := range daemontest.To(msgs, f.reporterAddr) {
		told = told || strings.Contains(daemontest.Body(t, m), "was disclosed")
	}
	if !told {
		t.Error("the reporter was not told of the disclosure")
	}
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/retro\n"))
	f.next(2)
	if inc := f.incident(); inc.Phase != workflow.PhaseClosed || inc.Resolution != workflow.ResolutionFixed || inc.RetroAt.IsZero() {
		t.Errorf("after /retro: phase %s resolution %v", inc.Phase, inc.Resolution)
	}
}

// TestCommandAttacks: nothing may change (workflow issue, attack table),
// through the real pipeline.
func TestCommandAttacks(t *testing.T) {
	f := newCmdFixture(t)
	before := f.incident()
	unchanged := func(what string) {
		t.Helper()
		inc := f.incident()
		if inc.Phase != before.Phase || inc.FixLead != before.FixLead || len(inc.History) != len(before.History) {
			t.Errorf("%s changed the incident: phase %s lead %q history %d", what, inc.Phase, inc.FixLead, len(inc.History))
		}
	}

	// An unsigned command from a member's exact address: nothing applied; the
	// member is told, encrypted.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, "From: alice@ex.test\nSubject: x\nMessage-ID: <u1@ex.test>\n\n/accept\n")
	msgs := f.next(2) // bob's copy and the refusal to alice
	unchanged("an unsigned /accept")
	got := false
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		plain, _ := f.alice.DecryptMIME(m.Data)
		if strings.Contains(daemontest.MIMEText(plain), "nothing was applied") {
			got = true
		}
	}
	if !got {
		t.Error("alice was not told her unsigned command was ignored")
	}

	// A signature 25 hours old.
	old := time.Now().Add(-25 * time.Hour).Unix()
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"},
		f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n", "--faked-system-time", fmt.Sprintf("%d!", old)))
	r := f.receipt(f.alice, f.next(2), "alice@ex.test")
	daemontest.MustContain(t, "receipt of an old signature", r, "24")
	unchanged("a 25-hour-old signature")

	// A signed text naming another incident.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n\nAbout SEC-2020-0001 really.\n"))
	f.receipt(f.alice, f.next(2), "alice@ex.test")
	unchanged("a text naming another incident")

	// An unknown command next to a valid one.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n/frobnicate\n"))
	r = f.receipt(f.alice, f.next(2), "alice@ex.test")
	daemontest.MustContain(t, "receipt of an unknown command", r, "frobnicate")
	unchanged("an unknown command")

	// A quoted command only.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "> /accept\nquoted\n"))
	f.next(1) // only bob's copy: no commands, no receipt
	unchanged("a quoted command")

	// A valid one, then its byte-identical replay.
	good := f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n")
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, good)
	f.next(3) // receipt, reporter update, bob
	after := f.incident()
	if after.Phase != workflow.PhaseFix {
		t.Fatalf("valid /accept not applied: %s", after.Phase)
	}
	replay := strings.Replace(good, "Message-ID: <", "Message-ID: <replay", 1)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, replay)
	r = f.receipt(f.alice, f.next(2), "alice@ex.test")
	daemontest.MustContain(t, "receipt of a replay", r, "replay")
	if inc := f.incident(); len(inc.History) != len(after.History) {
		t.Error("a replayed signature changed the incident")
	}

	// A distributor's signed command: not a committee member, nothing happens.
	if !bytes.Contains([]byte(f.h.Logs.String()), []byte("commands refused")) {
		t.Error("refusals are not logged")
	}
}
