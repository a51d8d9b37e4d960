package daemon_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// stepMarker is in the report of TestProcessKilledAtStep: the intake's
// kill points match it.
const stepMarker = "STEP-KILL-3c9e"

// TestProcessKilledAtStep: a child daemon takes a report over SMTP and is
// killed with SIGKILL at one step boundary of intake or delivery
// (docs/design.md §1, docs/threat-model.md A1, A3): after the message is
// opened, at the end of its transaction function (before the commit),
// after the commit and before the 250, after the 250 (the test kills it
// once its client has read the 250); after the delivery worker's claim
// commit, after the relay's 250 for the copy to bob and before its
// outcome's commit, after that commit. A report not answered 250 is sent
// again by its client after the restart, as an MTA does (a claim made at
// once may kill the child before the report's 250). Then: the report
// is stored once and opened one incident (nothing answered 250 is lost,
// nothing applied twice), the acknowledgement and both committee copies
// arrived, and a copy arrived again only when the relay had taken it and
// the store had not recorded it at the death (checkResent); the store
// passes its check.
func TestProcessKilledAtStep(t *testing.T) {
	for _, step := range []struct {
		name, point, arg string
		resend           bool // the client gets no 250 and sends the report again
		bobAgain         int  // copies to bob that must come again (-1: any the death allows)
	}{
		{"intake: opened", "opened", stepMarker, true, 0},
		{"intake: transaction function done, not committed", "stored", "-", true, 0},
		{"intake: committed, no 250", "accepted", stepMarker, true, -1},
		{"intake: 250 written", "", "", false, -1},
		{"delivery: claim committed", "claimed", "bob@ex.test", false, 0},
		{"delivery: relay's 250, outcome not committed", "answered", "bob@ex.test", false, 1},
		{"delivery: outcome committed", "recorded", "bob@ex.test", false, 0},
	} {
		t.Run(step.name, func(t *testing.T) {
			t.Parallel()
			h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
			h.Stop()
			addr := daemontest.FreePort(t)
			cfg := filepath.Join(t.TempDir(), "embargo.toml")
			daemontest.WriteFile(t, cfg, strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
			var env []string
			if step.point != "" {
				env = []string{killAtEnv + "=" + step.point + " " + step.arg, killMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed")}
			}
			report := []byte(strings.ReplaceAll(daemontest.Report("rep@out.test", "overflow "+stepMarker, "details"), "\n", "\r\n"))
			send := func() error { return daemontest.SendSMTP(addr, "rep@out.test", []string{"security@ex.test"}, report) }

			c := startDying(t, cfg, env...)
			waitListen(t, c, addr)
			err := send()
			switch {
			case step.point == "":
				if err != nil {
					t.Fatalf("the report: %v, want 250", err)
				}
				c.cmd.Process.Signal(syscall.SIGKILL) // once the client read the 250
			case step.resend && err == nil:
				t.Fatalf("the report was answered 250 by a child killed before its 250")
			case err != nil:
				// The delivery worker claims the report's copies as soon as
				// they are committed: its death may come before the 250
				// is written, and the client then sends the report again.
				step.resend = true
			}
			if err := waitKilled(c); err != nil {
				t.Fatal(err)
			}
			snaps := []killSnapshot{deathSnapshot(t, h.Dir, len(h.Rec.Messages()), nil)}

			c = startDying(t, cfg, env...)
			waitListen(t, c, addr)
			if step.resend {
				if err := send(); err != nil {
					t.Fatalf("the report sent again: %v, want 250", err)
				}
			}
			daemontest.WaitForWithin(t, 30*time.Second, "the acknowledgement and both copies", func() bool {
				msgs := h.Rec.Messages()
				return len(daemontest.To(msgs, "rep@out.test")) > 0 && len(daemontest.To(msgs, "alice@ex.test")) > 0 &&
					len(daemontest.To(msgs, "bob@ex.test")) > 0
			})
			time.Sleep(500 * time.Millisecond) // nothing more should come
			c.cmd.Process.Signal(syscall.SIGTERM)
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
			}
			msgs := h.Rec.Messages()
			again := checkResent(t, msgs, snaps, nil)
			if n := len(daemontest.To(msgs, "bob@ex.test")) - 1; step.bobAgain >= 0 && n != step.bobAgain {
				t.Errorf("bob's copy came again %d times, want %d", n, step.bobAgain)
			}
			checkStoredOnce(t, h.Dir)
			t.Logf("%d copies, %d sent again", len(msgs), again)
		})
	}
}

// checkStoredOnce checks that the store in dir passes its check and holds
// the report of TestProcessKilledAtStep once, in one incident.
func checkStoredOnce(t *testing.T, dir string) {
	t.Helper()
	db, err := daemon.OpenStore(dir, true) // the pre-open check and bbolt's
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil || len(incs) != 1 {
			t.Errorf("%d incidents (%v), want the report's one", len(incs), err)
		}
		stored := 0
		for seq := uint64(1); ; seq++ {
			r, err := incidentdb.Message(tx, seq)
			if err != nil {
				break
			}
			if raw, _ := incidentdb.Raw(tx, seq); strings.Contains(string(raw), stepMarker) {
				stored++
				if r.Note != "" || len(incs) == 1 && r.Incident != incs[0].ID {
					t.Errorf("the report is stored with note %q in incident %q", r.Note, r.Incident)
				}
			}
		}
		if stored != 1 {
			t.Errorf("the report is stored %d times, want once", stored)
		}
		return nil
	})
}
