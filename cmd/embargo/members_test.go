package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestMembersAndSIGHUP runs the real process: `embargo members list`
// through its control socket, SIGHUP with a file that adds a member (in
// force at once), with a broken file (nothing changes, the log says why), and
// `embargo members list` from the store once the daemon is stopped.
func TestMembersAndSIGHUP(t *testing.T) {
	dir := t.TempDir()
	addr := daemontest.FreePort(t)
	cfgPath := filepath.Join(dir, "embargo.toml")
	base := fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n%s", filepath.Join(dir, "data"), daemontest.DefaultMembers)
	tail := fmt.Sprintf("[smtp]\nlisten = %q\n[relay]\nurl = \"maildir://%s\"\n", addr, filepath.Join(dir, "outbox"))
	daemontest.WriteFile(t, cfgPath, base+tail)
	cmd, out := embargoProcess(t, dir, "serve", "--config", cfgPath)
	waitPort(t, addr, out)

	list := mustCLI(t, "members", "list", "--config", cfgPath)
	daemontest.MustContain(t, "members list", list, "3 member(s), 2 in the SRC", "alice@ex.test", "dist@vendor.test", "no key pinned", "origin: file")

	carol := "[[members]]\nemail = \"carol@ex.test\"\nroles = [\"src\"]\n"
	daemontest.WriteFile(t, cfgPath, base+carol+tail)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitFor(t, "the reload", func() bool { return strings.Contains(out.String(), "reload: configuration in force") })
	daemontest.MustContain(t, "members list after SIGHUP", mustCLI(t, "members", "list", "--config", cfgPath), "4 member(s), 3 in the SRC", "carol@ex.test")

	daemontest.WriteFile(t, cfgPath, base+carol+"bogus = 1\n"+tail)
	cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the failed reload", func() bool {
		return strings.Contains(out.String(), "reload: the configuration has errors")
	})
	daemontest.MustContain(t, "log", out.String(), `unknown key \"members.bogus\"`)
	// The broken file cannot be read by the command line either: the
	// running daemon answers for the roster in force through --data.
	daemontest.MustContain(t, "members list after a broken file", mustCLI(t, "members", "list", "--data", filepath.Join(dir, "data")), "4 member(s), 3 in the SRC")

	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	daemontest.WriteFile(t, cfgPath, base+carol+tail)
	offline := mustCLI(t, "members", "list", "--config", cfgPath)
	daemontest.MustContain(t, "members list from the store", offline, "4 member(s), 3 in the SRC", "carol@ex.test")
	if code, _, errOut := runCLI(t, "members", "frob", "--config", cfgPath); code != 2 || !strings.Contains(errOut, "use list") {
		t.Errorf("members frob: exit %d, %q", code, errOut)
	}
	os.Remove(cfgPath)
}
