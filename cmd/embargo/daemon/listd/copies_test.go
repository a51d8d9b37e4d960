package listd

import (
	"context"
	"strings"
	"testing"

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
