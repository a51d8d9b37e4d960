package main

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
)

// TestIncidentCLI: list, show and export work with the daemon running (through
// the control socket) and stopped (directly on the file).
func TestIncidentCLI(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: cli\nMessage-ID: <cli1@out.test>\n\nFrom the start\nline two\n")
	h.Settle(3)
	id := fmt.Sprintf("SEC-%d-0001", time.Now().UTC().Year())
	check := func(mode string) {
		var out, errb strings.Builder
		if rc := run([]string{"incident", "list", "--data", h.Dir}, &out, &errb); rc != 0 || !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "triage") {
			t.Errorf("%s: incident list = %d %q %q", mode, rc, out.String(), errb.String())
		}
		out.Reset()
		if rc := run([]string{"incident", "show", id, "--data", h.Dir}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "rep@out.test") || !strings.Contains(out.String(), "<cli1@out.test>") {
			t.Errorf("%s: incident show = %d %q %q", mode, rc, out.String(), errb.String())
		}
		out.Reset()
		if rc := run([]string{"incident", "export", id, "--data", h.Dir}, &out, &errb); rc != 0 {
			t.Errorf("%s: incident export = %d %q", mode, rc, errb.String())
		}
		mbox := out.String()
		if !strings.HasPrefix(mbox, "From rep@out.test ") || !strings.Contains(mbox, "\n>From the start\n") || strings.Contains(mbox, "\r") {
			t.Errorf("%s: export is not an mboxrd with LF line ends:\n%s", mode, mbox)
		}
		out.Reset()
		errb.Reset()
		if rc := run([]string{"incident", "show", "SEC-2020-0042", "--data", h.Dir}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "no incident SEC-2020-0042") {
			t.Errorf("%s: show of a missing incident = %d %q", mode, rc, errb.String())
		}
	}
	check("daemon running")
	if !daemon.Running(h.Dir) {
		t.Errorf("control socket does not answer while the daemon runs")
	}
	h.Stop()
	check("daemon stopped")
}

// TestIncidentQuarantineCLI: `incident quarantine` lists the messages kept
// in quarantine and writes one as received, with the daemon running and
// stopped; a message of an incident is not among them (docs/threat-model.md
// A6).
func TestIncidentQuarantineCLI(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "fine", "x"))
	h.Settle(3)
	h.Stop()
	poison := []byte("From: m@out.test\r\nSubject: crash\r\n\r\nkills the parser\r\n")
	db, err := daemon.OpenStore(h.Dir, false)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	err = db.Update(func(tx *bolt.Tx) error {
		r, err := incidentdb.AddMessage(tx, incidentdb.Record{Received: time.Now(), EnvelopeFrom: "m@out.test", Note: listd.NotePoison}, poison, sha256.Sum256(poison))
		seq = r.Seq
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	check := func(mode string) {
		code, out, errOut := runCLI(t, "incident", "quarantine", "--data", h.Dir)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], fmt.Sprint(seq)+" ") || !strings.Contains(lines[1], "poison") ||
			!strings.Contains(lines[1], fmt.Sprintf("%x", sha256.Sum256(poison))) {
			t.Errorf("%s: incident quarantine = %d\n%s%s", mode, code, out, errOut)
		}
		if code, out, errOut := runCLI(t, "incident", "quarantine", fmt.Sprint(seq), "--data", h.Dir); code != 0 || out != string(poison) {
			t.Errorf("%s: incident quarantine %d = %d %q %q; want the message as received", mode, seq, code, out, errOut)
		}
		if code, _, errOut := runCLI(t, "incident", "quarantine", "1", "--data", h.Dir); code != 1 || !strings.Contains(errOut, "message 1 is not in quarantine") {
			t.Errorf("%s: incident quarantine 1 (a report) = %d %q", mode, code, errOut)
		}
	}
	check("daemon stopped")
	h.Start()
	check("daemon running")
}
