package listd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// TestCopiesDoNotRunAsCommands: what the committee's copies carry of a
// report or of a command mail cannot run as commands when a member's
// signed reply carries it along unquoted, as a client that puts the
// original below the answer without ">" does (docs/threat-model.md E5).
// The command grammar takes a "/" paragraph after prose, so the "wrote
// on" line above the copied text is no guard; neither is the reporter's
// display name, which the copy of a reply begins with.
func TestCopiesDoNotRunAsCommands(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	report := plainMail("rep@out.test", "security@ex.test", "heap overflow", "r1@out.test",
		"Steps to reproduce.\n\n/reply <<END\nthe reporter's text, sent by a member\nEND\n")
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}, report); err != nil {
		t.Fatal(err)
	}
	cmd, ok := memberMail(k, k.alice, "c1@ex.test", "Re: [SEC-2026-0001]", "/accept\n/reply Thanks.\n", false)
	if !ok {
		t.Fatal("alice's command mail")
	}
	if err := s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{fuzzThread}}, cmd); err != nil {
		t.Fatal(err)
	}
	followUp := strings.Replace(string(plainMail("rep@out.test", fuzzThread, "Re: [SEC-2026-0001]", "r2@out.test", "More.\n")),
		"From: rep@out.test", `From: "/reply sent as a member" <rep@out.test>`, 1)
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{fuzzThread}}, []byte(followUp)); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range sealRows(t, s, append(rowsOf(t, db, "report-copy"), rowsOf(t, db, "reply-copy")...)) {
		kinds[r.Kind]++
		text := decryptText(t, r.Data, k.readers()[r.To[0]])
		body := text[strings.Index(text, "\n")+1:] // without decryptText's Subject line
		// Carried below a member's own line, as such a client sends it.
		if cmds, err := workflow.Parse("Agreed.\n\n" + body); len(cmds) > 0 || err != nil {
			t.Errorf("%s to %v runs as %d command(s) (%v):\n%s", r.Kind, r.To, len(cmds), err, body)
		}
	}
	// The report to alice and bob; alice's mail to bob; the reporter's to both.
	if kinds["report-copy"] != 2 || kinds["reply-copy"] != 3 {
		t.Errorf("copies made: %v", kinds)
	}
}

// TestDistributorPostCopiesDoNotRunAsCommands: a distributor's post is
// copied to the committee, and a member who answers it to the committee,
// at security@, keeps its subject; a post about an incident carries the
// incident's tag, so the answer lands in the incident's thread, and the
// member's signature would run a "/" paragraph of the distributor's text
// carried along unquoted (docs/threat-model.md E5). The committee's copies
// of a post are made inert like the copies of a report: here bob's answer
// leaves the incident in triage. A committee member's post is copied to
// the rest of the committee the same way.
func TestDistributorPostCopiesDoNotRunAsCommands(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	after := openIncident(t, s, db, nil)
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	for _, p := range []struct {
		from   *keys.Key
		copies int // to the committee, but its author
	}{{k.dist, 2}, {k.alice, 1}} {
		post, err := keys.Encrypt(outerHeader(p.from.Email(), "distributors@ex.test", "...", "post."+p.from.Email()),
			[]byte("Subject: Re: [SEC-2026-0001] heads-up\r\n"+textEntity+"We see it too.\r\n\r\n/accept\r\n/lead me\r\n"), k.dists, p.from, sko)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Handle(context.Background(), Envelope{From: p.from.Email(), To: []string{"distributors@ex.test"}}, post); err != nil {
			t.Fatalf("%s's post: %v", p.from.Email(), err)
		}
		n := 0
		for _, c := range checkQueued(t, s, db, after, k.readers()) { // fails on a copy that reads as commands
			after = max(after, c.ID)
			if c.Kind != "distributors-copy" {
				continue
			}
			n++
			if c.To[0] != "bob@ex.test" {
				continue
			}
			answer, err := keys.Sign(outerHeader("bob@ex.test", "security@ex.test", "Re: "+c.Subject, "answer."+p.from.Email()),
				[]byte(textEntity+strings.ReplaceAll("Agreed.\n\n"+c.Text, "\n", "\r\n")), k.bob, sko)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Handle(context.Background(), Envelope{From: "bob@ex.test", To: []string{"security@ex.test"}}, answer); err != nil {
				t.Fatalf("bob's answer: %v", err)
			}
		}
		if n != p.copies {
			t.Errorf("%s's post: %d copies to the committee, want %d", p.from.Email(), n, p.copies)
		}
		if inc := getIncident(t, db, fuzzIncident); inc.Phase != workflow.PhaseTriage || inc.FixLead != "" {
			t.Fatalf("after bob answered %s's post: phase %s, lead %q: the post's text ran as his commands", p.from.Email(), inc.Phase, inc.FixLead)
		}
	}
}
