package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// memberCommand sends text signed as PGP/MIME by a member to the security
// list alone, with key attached when it is not nil.
func (f *cmdFixture) memberCommand(t *testing.T, g *daemontest.GPG, fpr, from, text string, key []byte) {
	t.Helper()
	entity := toCRLF("Content-Type: text/plain; charset=utf-8\n\n" + text)
	if key != nil {
		entity = withKey(text, key)
	}
	headers := fmt.Sprintf("From: %s\nTo: security@ex.test\nSubject: roster\nMessage-ID: <%d@ex.test>\n", from, time.Now().UnixNano())
	if err := daemontest.SendSMTP(f.h.Addr(), from, []string{"security@ex.test"}, pgpMIME(g, fpr, headers, entity)); err != nil {
		t.Fatalf("%s from %s: %v", strings.TrimSpace(text), from, err)
	}
}

// TestMemberCommands (docs/threat-model.md D5, E4, F2): /member add with an
// attached key takes two SRC signatures of the identical command; /member
// key rotates the pinned key, both keys are told, and the old one no longer
// signs; /member remove takes the member off, and their signature no longer
// counts.
func TestMemberCommands(t *testing.T) {
	f := newCmdFixture(t)
	carol := daemontest.NewGPG(t)
	cfpr := carol.GenKey("Carol <carol@ex.test>")
	carol.ImportKey(exportListKey(t, f.h, "security"))
	add := "/member add carol@ex.test src\n"

	f.memberCommand(t, f.alice, f.afpr, "alice@ex.test", add, carol.Export(cfpr))
	msgs := f.next(3) // receipt, the pending notice to alice and bob
	daemontest.MustContain(t, "alice's receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "opened: approval recorded", "has 1 of 2 SRC approvals")
	if onRoster(t, f.h, "carol@ex.test") {
		t.Fatal("one signature added a member")
	}
	f.memberCommand(t, f.bob, f.bfpr, "bob@ex.test", add, carol.Export(cfpr))
	msgs = f.next(4) // bob's receipt, carol's notice, the notice to alice and bob
	daemontest.MustContain(t, "bob's receipt", f.receipt(f.bob, msgs, "bob@ex.test"), "passed by quorum: 2 SRC approvals")
	note, _ := decrypt(t, carol, msgs, "carol@ex.test", "Roster change")
	daemontest.MustContain(t, "carol's notice", note, "carol@ex.test joined the roster with the roles src", cfpr)
	if !onRoster(t, f.h, "carol@ex.test") {
		t.Fatal("two signatures did not add carol")
	}
	// Her signature counts from the next message on.
	f.h.MustSend("carol@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(carol, cfpr, "carol@ex.test", "/status\n"))
	msgs = f.next(4) // receipt, status, copies to alice and bob
	daemontest.MustContain(t, "carol's receipt", f.receipt(carol, msgs, "carol@ex.test"), "The command was applied")

	// /member key: a new key for carol, by quorum; both keys are told.
	carol2 := daemontest.NewGPG(t)
	c2fpr := carol2.GenKey("Carol <carol@ex.test>")
	carol2.ImportKey(exportListKey(t, f.h, "security"))
	rekey := "/member key carol@ex.test\n"
	f.memberCommand(t, f.alice, f.afpr, "alice@ex.test", rekey, carol2.Export(c2fpr))
	f.next(4) // receipt, the pending notice to alice, bob and carol
	f.memberCommand(t, f.bob, f.bfpr, "bob@ex.test", rekey, carol2.Export(c2fpr))
	msgs = f.next(5) // bob's receipt, carol's notice to each key, the notice to alice and bob
	decrypt(t, carol2, msgs, "carol@ex.test", "the pinned key of carol@ex.test is now "+c2fpr)
	decrypt(t, carol, msgs, "carol@ex.test", "(was "+cfpr+")")
	// The old key signs for nobody: the refusal goes to the new key.
	f.h.MustSend("carol@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(carol, cfpr, "carol@ex.test", "/status\n\nold key\n"))
	msgs = f.next(3) // the refusal to carol, copies to alice and bob
	refusal, _ := decrypt(t, carol2, msgs, "carol@ex.test", "nothing was applied")
	daemontest.MustContain(t, "the old key's refusal", refusal, "not the one pinned for you", c2fpr)
	f.h.MustSend("carol@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(carol2, c2fpr, "carol@ex.test", "/status\n"))
	daemontest.MustContain(t, "the new key's receipt", f.receipt(carol2, f.next(4), "carol@ex.test"), "The command was applied")

	// /member remove, by quorum (carol's own signature would take her off
	// at once: leaving needs no vote).
	remove := "/member remove carol@ex.test left the project\n"
	f.memberCommand(t, f.alice, f.afpr, "alice@ex.test", remove, nil)
	f.next(4) // receipt, the pending notice to alice, bob and carol
	if !onRoster(t, f.h, "carol@ex.test") {
		t.Fatal("one signature removed carol")
	}
	f.memberCommand(t, f.bob, f.bfpr, "bob@ex.test", remove, nil)
	msgs = f.next(4) // bob's receipt, carol's notice, the notice to alice and bob
	gone, _ := decrypt(t, carol2, msgs, "carol@ex.test", "was removed from the roster")
	daemontest.MustContain(t, "carol's notice", gone, "Reason:        left the project")
	if onRoster(t, f.h, "carol@ex.test") {
		t.Error("carol is still on the roster")
	}
	if m := members(t, f.h); strings.Contains(m, "Open proposals") {
		t.Errorf("a proposal is still open:\n%s", m)
	}
	// Her signature counts no more: in the incident's thread her mail is a
	// stranger's, a new report.
	f.h.MustSend("carol@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(carol2, c2fpr, "carol@ex.test", "/status\n\nafter removal\n"))
	msgs = f.next(2) // a report's copies to alice and bob (no acknowledgement: carol's address is the list's domain)
	report, _ := decrypt(t, f.alice, msgs, "alice@ex.test", "after removal")
	if !strings.Contains(report, "New vulnerability report SEC-") || strings.Contains(report, "New vulnerability report "+f.id) {
		t.Errorf("a removed member's signed mail is not a new report:\n%s", report)
	}
}

// TestReloadWhileMailFlows: reports keep arriving while the configuration
// is reloaded three times: with a new member, broken, and with a
// restart-only change. Nothing is refused, nothing lost; the broken file
// changes nothing and alerts the SRC, encrypted; the new member gets the
// reports that arrive after the reload that added them.
func TestReloadWhileMailFlows(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "embargo.toml")
	load := func() (*config.Config, error) {
		cfg, err := config.Load(cfgPath)
		if err == nil {
			err = cfg.Resolve()
		}
		return cfg, err
	}
	// 41 reports from 127.0.0.1: no limit per client address.
	f := newCmdFixtureOpts(t, nil, "[intake]\nnew_incidents_per_client_per_hour = 0\n", daemon.Options{Load: load})
	daemontest.WriteFile(t, cfgPath, f.h.TOML)
	carol := daemontest.NewGPG(t)
	cfpr := carol.GenKey("Carol <carol@ex.test>")
	carol.ImportKey(exportListKey(t, f.h, "security"))
	daemontest.WriteFile(t, filepath.Join(f.h.Config().KeysDir, "carol.asc"), string(carol.Export(cfpr)))
	withCarol := strings.Replace(f.h.TOML, "[smtp]", daemontest.TOMLMember("carol@ex.test", cfpr)+"[smtp]", 1)

	const reports = 40
	errs := make(chan error, reports)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range reports {
			from := fmt.Sprintf("r%d@out.test", i)
			errs <- f.h.Send(from, []string{"security@ex.test"}, daemontest.Report(from, "report", "steps"))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	daemontest.WriteFile(t, cfgPath, withCarol)
	if err := f.h.D.Reload(); err != nil {
		t.Fatalf("a valid file: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	daemontest.WriteFile(t, cfgPath, withCarol+"\n[governance\nquorum = 2\n")
	if err := f.h.D.Reload(); err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("a broken file: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	daemontest.WriteFile(t, cfgPath, strings.Replace(withCarol, "[smtp]\n", "[smtp]\nmax_errors = 7\n", 1))
	if err := f.h.D.Reload(); err != nil {
		t.Fatalf("a restart-only change: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a report was refused during the reloads: %v", err)
		}
	}
	var incidents int
	f.h.D.View(func(tx *bolt.Tx) error {
		l, _ := incidentdb.List(tx)
		incidents = len(l)
		return nil
	})
	if incidents != reports+1 {
		t.Errorf("%d incidents, want %d: reports were lost", incidents, reports+1)
	}
	daemontest.WaitFor(t, "every acknowledgement", func() bool {
		for i := range reports {
			if len(daemontest.To(f.h.Rec.Messages(), fmt.Sprintf("r%d@out.test", i))) == 0 {
				return false
			}
		}
		return true
	})
	if !onRoster(t, f.h, "carol@ex.test") {
		t.Error("the valid reload did not add carol, or the broken one took her away")
	}
	for _, m := range []struct {
		g    *daemontest.GPG
		addr string
	}{{f.alice, "alice@ex.test"}, {f.bob, "bob@ex.test"}} {
		alert, _ := decrypt(t, m.g, f.h.Rec.Messages(), m.addr, "was not reloaded")
		daemontest.MustContain(t, "the alert to "+m.addr, alert, cfgPath, "line 2", "Nothing changed")
	}
	daemontest.MustContain(t, "log", f.h.Logs.String(), "reload: [smtp] changed in the file: it takes effect at the next restart",
		"reload: the configuration has errors")

	// A report after the reloads reaches carol, encrypted to her key.
	f.h.MustSend("late@out.test", []string{"security@ex.test"}, daemontest.Report("late@out.test", "late", "CANARY-late"))
	daemontest.WaitFor(t, "carol's copy", func() bool {
		for _, m := range daemontest.To(f.h.Rec.Messages(), "carol@ex.test") {
			if plain, _, err := carol.Run(daemontest.ArmorBlock.Find(m.Data), "--decrypt"); err == nil && strings.Contains(string(plain), "CANARY-late") {
				return true
			}
		}
		return false
	})
	f.h.D.View(func(tx *bolt.Tx) error {
		rows, _ := queue.List(tx)
		for _, r := range rows {
			if r.State == queue.StateFailed {
				t.Errorf("queue row %d failed: %s", r.ID, r.LastError)
			}
		}
		return nil
	})
	_ = os.Remove(cfgPath)
}
