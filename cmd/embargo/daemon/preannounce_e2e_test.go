package daemon_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// preE2ECanary marks the report's text and an advisory field; the README
// incident's own texts are checked too (preEmbargoed).
const preE2ECanary = "E2EPRECANARY"

// preEmbargoed is what the incident holds that no pre-announcement may
// carry: the report, the README example's advisory fields, CVE, CWE and
// CVSS vector, the reporter, and the incident's ID.
var preEmbargoed = []string{preE2ECanary, "heap overflow", "remote attacker", "execute code", "the parser is enabled",
	"example-parser", "1.2.4", "1.0.0", "Disable the parser", "Rep Orter", "CWE-122", "CVE-2026", "CVSS", "9.8",
	"github.com/example", "Look for crashes", "rep@out.test", "SEC-2026-0001"}

// verifyAt checks a multipart/signed message with gpg at the fixture's
// virtual time (the announce key was made at it): part 1 cut out byte for
// byte (RFC 3156 §5) against the detached signature.
func (f *recordsFixture) verifyAt(g *daemontest.GPG, msg []byte) string {
	f.t.Helper()
	m := regexp.MustCompile(`boundary="?([^";\r\n]+)"?`).FindSubmatch(msg)
	if m == nil {
		f.t.Fatalf("not multipart/signed:\n%s", msg)
	}
	parts := bytes.Split(msg, []byte("--"+string(m[1])))
	if len(parts) < 4 {
		f.t.Fatalf("multipart/signed has %d pieces", len(parts))
	}
	part1 := bytes.TrimSuffix(bytes.TrimPrefix(parts[1], []byte("\r\n")), []byte("\r\n"))
	sig := parts[2][bytes.Index(parts[2], []byte("\r\n\r\n"))+4:]
	dir := f.t.TempDir()
	os.WriteFile(filepath.Join(dir, "part1"), part1, 0o600)
	os.WriteFile(filepath.Join(dir, "sig.asc"), sig, 0o600)
	_, status, err := g.Run(nil, f.at(), "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "part1"))
	if err != nil {
		f.t.Fatalf("gpg --verify: %v\n%s", err, status)
	}
	return string(status)
}

// announced waits for one copy to each reader whose envelope sender is
// from (an announce release's bounce address) and returns them.
func (f *recordsFixture) announced(from string, readers []string) map[string]queuetest.Message {
	f.t.Helper()
	got := map[string]queuetest.Message{}
	daemontest.WaitFor(f.t, "the announce copies from "+from, func() bool {
		for _, m := range f.h.Rec.Messages() {
			if m.From == from && len(m.To) == 1 {
				got[m.To[0]] = m
			}
		}
		return len(got) == len(readers)
	})
	for _, r := range readers {
		if _, ok := got[r]; !ok {
			f.t.Fatalf("no copy from %s to %s", from, r)
		}
	}
	return got
}

// TestPreannounceEndToEnd: alice's gpg-signed /preannounce, through the
// real daemon on the README's example incident (a report and every
// advisory field set, notified and approved), reaches each subscriber at
// the recording relay: signed by the announce key (gpg verifies it), with
// its own one-click URI, saying the project, T with its weekday and the
// severity, and none of the incident's texts, CVE, vector or ID. Her
// receipt says it went to 2 subscribers, /status lists it, a second one
// for the same T is refused; the release at T still goes out, with the
// advisory, under the incident's own ID.
func TestPreannounceEndToEnd(t *testing.T) {
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC) // a Monday
	f := newRecordsFixture(t, start, readmeRecordConfig)
	readers := []string{"ann@reader.test", "ben@reader.test"}
	out, err := daemon.Subscribers(f.h.Config(), daemon.CtlSubscribersImport, []string{"members.txt"}, []byte(strings.Join(readers, "\n")+"\n"))
	if err != nil || !strings.Contains(out, "2 subscribed") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	f.drain() // their notices
	f.clk.Set(start.Add(time.Hour))
	f.command(readmeCommands + "/set condition " + preE2ECanary + " the parser is enabled\n")
	f.clk.Set(start.Add(2 * time.Hour))
	f.command(strings.Replace(readmeDetails, "/set condition the parser is enabled\n", "", 1))

	f.clk.Set(start.Add(3 * time.Hour))
	msgs := f.command("/preannounce\n")
	var receipt string
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		if p := f.decrypt(f.alice, m); strings.Contains(p, "Commands for") {
			receipt = daemontest.MIMEText([]byte(p))
		}
	}
	daemontest.MustContain(t, "alice's receipt", receipt, "> /preannounce",
		"ok: pre-announcement of the release at T = 2026-12-03 16:00 UTC (Thursday), severity Critical, queued to the announce list (SEC-2026-0001-pre1)",
		"to 2 subscribers")

	annFpr := f.alice.Fingerprint("announce@ex.test")
	urls := map[string]bool{}
	for addr, m := range f.announced("announce+bounces-sec-2026-0001-pre1@ex.test", readers) {
		daemontest.MustContain(t, "gpg --verify of "+addr+"'s pre-announcement", f.verifyAt(f.alice, m.Data), "GOODSIG", "VALIDSIG "+annFpr)
		pm, err := message.Parse(m.Data, message.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		// The header as sent, the text as read (decoded); the canary also
		// in the raw bytes. The signature's base64 is not searched for the
		// short strings, which it may hold by chance.
		head, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
		seen := strings.ToLower(head + "\n" + pm.Subject + "\n" + pm.Text)
		if bytes.Contains(m.Data, []byte(preE2ECanary)) {
			t.Errorf("%s's pre-announcement carries the canary in its raw bytes", addr)
		}
		for _, leak := range preEmbargoed {
			if strings.Contains(seen, strings.ToLower(leak)) {
				t.Errorf("%s's pre-announcement carries %q:\n%s\n%s", addr, leak, m.Data, pm.Text)
			}
		}
		if pm.Subject != "Example security release planned for 2026-12-03 16:00 UTC (Thursday)" {
			t.Errorf("Subject %q", pm.Subject)
		}
		daemontest.MustContain(t, addr+"'s pre-announcement", pm.Text, "The Example Security Response Committee plans a security release for",
			"    2026-12-03 16:00 UTC (Thursday)", "It fixes a security issue rated Critical.", "No details of the issue will be given before then.")
		u := oneClickOf(t, m)
		if !strings.HasPrefix(u, "https://example.org/unsubscribe/") || urls[u] {
			t.Errorf("%s's List-Unsubscribe: %q, not its own", addr, u)
		}
		urls[u] = true
	}

	// Recorded: /status lists it; the same T again is refused.
	f.clk.Set(start.Add(4 * time.Hour))
	signed := f.alice.Must([]byte("/preannounce nosev\n/status\n"), f.at(), "--clearsign", "-u", f.afpr)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"},
		"From: alice@ex.test\nTo: security+"+f.id+"@ex.test\nSubject: Re: ["+f.id+"]\nMessage-ID: <again@ex.test>\n\n"+strings.ReplaceAll(string(signed), "\r\n", "\n"))
	receipt = ""
	for _, m := range daemontest.To(f.drain(), "alice@ex.test") {
		if p := f.decrypt(f.alice, m); strings.Contains(p, "Commands for") {
			receipt = daemontest.MIMEText([]byte(p))
		}
	}
	daemontest.MustContain(t, "the second /preannounce's receipt", receipt, "Nothing was applied",
		"T = 2026-12-03 16:00 UTC (Thursday) was already pre-announced 2026-11-23 12:00 UTC (Monday) to 2 subscribers (SEC-2026-0001-pre1)")
	f.clk.Set(start.Add(5 * time.Hour))
	var status string
	for _, m := range daemontest.To(f.command("/status\n"), "alice@ex.test") {
		if p := f.decrypt(f.alice, m); strings.Contains(p, "Deadlines:") {
			status = daemontest.MIMEText([]byte(p))
		}
	}
	daemontest.MustContain(t, "/status", status,
		"pre-announced:   2026-11-23 12:00 UTC (Monday): T = 2026-12-03 16:00 UTC (Thursday), severity Critical, 2 subscribers (SEC-2026-0001-pre1)")

	// The release at T: the advisory, to the same readers, as ever.
	T := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	f.tick(T.Add(-workflow.FinalNoticeBefore))
	f.tick(T)
	for addr, m := range f.announced("announce+bounces-sec-2026-0001@ex.test", readers) {
		daemontest.MustContain(t, "gpg --verify of "+addr+"'s advisory", f.verifyAt(f.alice, m.Data), "GOODSIG", "VALIDSIG "+annFpr)
		if hd := daemontest.Header(t, m); hd.Get("Subject") != "[Security Advisory] CVE-2026-12345: heap overflow in the parser" {
			t.Errorf("%s's advisory: Subject %q", addr, hd.Get("Subject"))
		}
	}
}

// oneClickOf is the https URI of a message's List-Unsubscribe, which must
// come with List-Unsubscribe-Post (RFC 8058).
func oneClickOf(t *testing.T, m queuetest.Message) string {
	t.Helper()
	hd := daemontest.Header(t, m)
	if hd.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Errorf("the copy to %v has no List-Unsubscribe-Post", m.To)
	}
	u, _, _ := strings.Cut(strings.TrimPrefix(hd.Get("List-Unsubscribe"), "<"), ">")
	return u
}
