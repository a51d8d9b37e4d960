package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestStoreDamageCLI runs daemontest.StoreCases through the command line: a
// damaged store makes `embargo serve` exit 1 with the refusal and the
// restore steps before any port is bound, and every command that opens the
// store without a daemon (incident list/show/export, status, queue
// list/retry, backup) refuses it with the same sentence; none crashes. A
// backup with the damage is refused by restore, and restore from a good
// backup repairs every case (docs/threat-model.md A5).
func TestStoreDamageCLI(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	h.WaitMail(3)
	h.Stop()
	daemontest.AddFiller(t, filepath.Join(h.Dir, daemon.DBFile))
	cfg := h.ConfigFile()
	good := filepath.Join(t.TempDir(), "good.db")
	mustCLI(t, "backup", good, "--config", cfg)
	id := "SEC-" + time.Now().UTC().Format("2006") + "-0001"
	readers := [][]string{
		{"incident", "list"}, {"incident", "show", id}, {"incident", "export", id},
		{"status"}, {"queue", "list"}, {"queue", "retry", "1"}, {"backup", filepath.Join(t.TempDir(), "b.db")},
	}
	for _, c := range daemontest.StoreCases() {
		t.Run(c.Name, func(t *testing.T) {
			fresh := func() string {
				dir := daemontest.CopyStoreDir(t, h.Dir)
				c.Break(t, dir)
				return dir
			}
			for _, args := range readers {
				dir := fresh()
				code, out, errOut := runCLI(t, append(args, "--config", cfg, "--data", dir)...)
				cliOutcome(t, strings.Join(args, " "), c.Refused, dir, code, out, errOut)
			}
			dir := fresh()
			if fi, err := os.Stat(filepath.Join(dir, daemon.DBFile)); err == nil && fi.Mode().IsRegular() && c.Refused != "" && c.Name != "world-readable" {
				code, _, errOut := runCLI(t, "restore", filepath.Join(dir, daemon.DBFile), "--config", cfg, "--data", t.TempDir())
				if code != 1 || !strings.Contains(errOut, "not a usable backup") {
					t.Errorf("restore of a %s backup: exit %d, %s", c.Name, code, errOut)
				}
			}
			serveOutcome(t, c, cfg, fresh())
			mustCLI(t, "restore", good, "--config", cfg, "--data", dir)
			daemontest.MustContain(t, "incident list after restore", mustCLI(t, "incident", "list", "--config", cfg, "--data", dir), id)
		})
	}
}

// cliOutcome checks one command's exit status and output against the case.
func cliOutcome(t *testing.T, cmd, refused, dir string, code int, out, errOut string) {
	t.Helper()
	if refused == "" {
		// queue retry 1 opened the store if it speaks of the row (gone, or
		// left "sending" when the harness stopped).
		if code != 0 && !(strings.HasPrefix(cmd, "queue retry") && (strings.Contains(errOut, "no queue row 1:") || strings.Contains(errOut, "row 1 is"))) {
			t.Errorf("embargo %s: exit %d, %s; want the store opened", cmd, code, errOut)
		}
		return
	}
	if code != 1 || !strings.Contains(errOut, refused) {
		t.Errorf("embargo %s: exit %d\nstdout: %s\nstderr: %s\nwant exit 1 and %q", cmd, code, out, errOut, refused)
	}
	if strings.Contains(errOut, "consistency check") || strings.Contains(errOut, "is gone") {
		daemontest.MustContain(t, "embargo "+cmd, errOut, daemontest.SentenceRestore+dir)
	}
}

// serveOutcome runs `embargo serve` on dir: it exits 1 with the refusal and
// never listens, or it starts (and is stopped).
func serveOutcome(t *testing.T, c daemontest.StoreCase, cfg, dir string) {
	t.Helper()
	addr := daemontest.FreePort(t)
	before, _ := os.Stat(filepath.Join(dir, daemon.DBFile))
	cmd, out := embargoProcess(t, t.TempDir(), "serve", "--config", cfg, "--data", dir, "--listen", addr)
	if c.Refused == "" || c.ServeCreates {
		waitPort(t, addr, out)
		// Not at once: go-smtp's Serve adds waitPort's connection to a
		// WaitGroup that its Shutdown may already wait on (-race flags it).
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve on a %s store: %v\n%s", c.Name, err, out)
		}
		if c.Warn != "" && !strings.Contains(out.String(), c.Warn) {
			t.Errorf("serve on a %s store did not warn %q:\n%s", c.Name, c.Warn, out)
		}
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Until it exits, nothing may answer on its port.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			t.Fatalf("serve on a %s store listens on %s", c.Name, addr)
		}
		select {
		case err := <-exited:
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("serve on a %s store: exit %d (%v), want 1", c.Name, code, err)
			}
			daemontest.MustContain(t, "serve", out.String(), c.Refused)
			after, _ := os.Stat(filepath.Join(dir, daemon.DBFile))
			if (before == nil) != (after == nil) || before != nil && before.Size() != after.Size() {
				t.Errorf("serve changed the store while refusing it: %v → %v", before, after)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on a %s store still runs:\n%s", c.Name, out)
		}
	}
}
