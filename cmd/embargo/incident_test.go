package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
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
