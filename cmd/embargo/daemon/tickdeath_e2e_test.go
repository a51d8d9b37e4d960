package daemon_test

import (
	"bytes"
	"fmt"
	"net"
	"net/mail"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// waitListen waits until the child listens on addr.
func waitListen(t *testing.T, c *child, addr string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not listen on %s:\n%.3000s", addr, c.out.String())
		}
	}
}

// TestProcessKillingTick: an incident whose tick kills the whole process (a
// real "fatal error: stack overflow" in the child daemon) kills it at every
// start, since the tick runs at start; the second time it is ticked alone.
// At the third start its tick is skipped: the SRC gets one alert naming the
// incident, sealed to each member, the other incident's reminders go out,
// and the daemon stays up and takes mail (docs/threat-model.md A6).
func TestProcessKillingTick(t *testing.T) {
	alice, bob := daemontest.NewGPG(t), daemontest.NewGPG(t)
	afpr, bfpr := alice.GenKey("Alice <alice@ex.test>"), bob.GenKey("Bob <bob@ex.test>")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": alice.Export(afpr), "bob": bob.Export(bfpr)})
	h := daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd),
		Members: daemontest.TOMLMember("alice@ex.test", afpr) + daemontest.TOMLMember("bob@ex.test", bfpr)}, daemon.Options{})
	for i := 1; i <= 2; i++ {
		rep := fmt.Sprintf("rep%d@out.test", i)
		h.MustSend(rep, []string{"security@ex.test"}, daemontest.Report(rep, fmt.Sprintf("report %d", i), "text"))
	}
	h.WaitMail(2 * 3)                                // an ack and two copies each
	alice.ImportKey(exportListKey(t, h, "security")) // to check the list's signatures
	h.Stop()
	var ids []string
	db, err := daemon.OpenStore(h.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		for _, inc := range incs {
			ids = append(ids, string(inc.ID))
		}
		return nil
	})
	db.Close()
	if len(ids) != 2 {
		t.Fatalf("incidents %v; want two", ids)
	}
	killer, other := ids[0], ids[1]

	addr := daemontest.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, cfg, strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
	// Four days on: the triage reminders of both incidents are due.
	env := []string{fatalTickEnv + "=" + killer, clockShiftEnv + "=96h"}
	before := len(h.Rec.Messages())
	for death := 1; death <= listd.PoisonDeaths; death++ {
		waitFatal(t, startDying(t, cfg, env...), fmt.Sprintf("death %d", death))
	}
	c := startDying(t, cfg, env...)
	waitListen(t, c, addr)
	if err := daemontest.SendSMTP(addr, "rep3@out.test", []string{"security@ex.test"},
		[]byte(strings.ReplaceAll(daemontest.Report("rep3@out.test", "third", "fine"), "\n", "\r\n"))); err != nil {
		t.Fatalf("a report after the skipped tick: %v", err)
	}
	var subjects []string
	daemontest.WaitFor(t, "the alert and the other incident's reminder", func() bool {
		subjects = innerSubjects(t, alice, h.Rec.Messages()[before:])
		return count(subjects, "["+killer+"] tick skipped") == 1 && count(subjects, "["+other+"] reminder") > 0
	})
	time.Sleep(500 * time.Millisecond) // nothing more should come
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
	subjects = innerSubjects(t, alice, h.Rec.Messages()[before:])
	if count(subjects, "["+killer+"] tick skipped") != 1 || count(subjects, "["+killer+"] reminder") != 0 {
		t.Errorf("alice got %q; want one alert for %s and none of its reminders", subjects, killer)
	}
	if n := len(daemontest.To(h.Rec.Messages()[before:], "bob@ex.test")); n == 0 {
		t.Error("bob got nothing")
	}
	// The killer, alerted, at PoisonDeaths. The other incident's tick may
	// have been in progress at the first death too (the sweep ticks up to
	// sweepWorkers incidents at once): a bystander with one death, never
	// alerted, kept until its next tick, which runs alone and clears it,
	// or until it expires; its reminder may have gone out beside that
	// death, so the last run need not tick it.
	killers := 0
	for _, x := range suspects(t, h.Dir) {
		switch {
		case x.Kind == "tick" && x.Incident == killer && x.Deaths == listd.PoisonDeaths && x.Alerted:
			killers++
		case x.Kind == "tick" && x.Incident == other && x.Deaths == 1 && !x.Alerted:
		default:
			t.Errorf("attempt table holds %+v; want the killer's tick, alerted, with %d deaths (and at most a bystander with one)", x, listd.PoisonDeaths)
		}
	}
	if killers != 1 {
		t.Errorf("the killer's tick is in the attempt table %d times, want once", killers)
	}
}

// innerSubjects are the protected subjects of the messages to alice, as
// her key decrypts them; each distinct Message-ID once (a message in
// delivery at a death is sent again).
func innerSubjects(t *testing.T, alice *daemontest.GPG, msgs []queuetest.Message) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		if len(m.To) != 1 || m.To[0] != "alice@ex.test" || !bytes.Contains(m.Data, []byte("BEGIN PGP MESSAGE")) {
			continue
		}
		hdr, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil || seen[hdr.Header.Get("Message-ID")] {
			continue
		}
		seen[hdr.Header.Get("Message-ID")] = true
		plain, _ := alice.DecryptMIME(m.Data)
		if in, err := mail.ReadMessage(bytes.NewReader(plain)); err == nil {
			out = append(out, in.Header.Get("Subject"))
		}
	}
	return out
}

// count is how many of subjects begin with prefix.
func count(subjects []string, prefix string) int {
	n := 0
	for _, s := range subjects {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}
