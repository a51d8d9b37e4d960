package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// storeCounts reads what the harness store holds (the daemon must be stopped).
func storeCounts(t *testing.T, dir string) daemon.StoreSummary {
	t.Helper()
	s, err := daemon.DescribeStore(filepath.Join(dir, daemon.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBackupRestore: an online backup through the running daemon, then the
// store is deleted, restored from the backup, and holds the same; the daemon
// starts on it and goes on numbering incidents. docs/threat-model.md A5's E test.
func TestBackupRestore(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	cfg := h.ConfigFile()
	for i := range 3 {
		h.MustSend("reporter@example.net", []string{"security@ex.test"}, daemontest.Report("reporter@example.net", "report "+string(rune('A'+i)), "steps"))
	}
	h.WaitMail(1 + 3*2) // one ack (one per sender and day) and two committee copies per report
	backup := filepath.Join(t.TempDir(), "embargo-backup.db")

	out := mustCLI(t, "backup", backup, "--config", cfg)
	daemontest.MustContain(t, "backup output", out, "through the running daemon", "3 incidents, 3 archived messages")
	fi, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup has mode %v, want 0600", fi.Mode().Perm())
	}
	want, err := daemon.DescribeStore(backup)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "restore", backup, "--config", cfg); code != 1 || !strings.Contains(errOut, "stop it first") {
		t.Errorf("restore while the daemon runs: exit %d, %q; want a refusal", code, errOut)
	}

	h.Stop()
	before := storeCounts(t, h.Dir)
	if before.Incidents != 3 {
		t.Fatalf("store holds %v, want 3 incidents", before)
	}
	// An offline backup reads the file itself and says so.
	daemontest.MustContain(t, "offline backup", mustCLI(t, "backup", filepath.Join(t.TempDir(), "offline.db"), "--config", cfg), "no daemon running", before.String())

	if err := os.Remove(filepath.Join(h.Dir, daemon.DBFile)); err != nil {
		t.Fatal(err)
	}
	out = mustCLI(t, "restore", backup, "--config", cfg)
	daemontest.MustContain(t, "restore output", out, want.String())
	// The backup may hold rows that were being delivered when it was taken:
	// the restored daemon sends them again (at-least-once), never loses one.
	if after := storeCounts(t, h.Dir); after != want {
		t.Errorf("restored store holds %v, want %v as in the backup", after, want)
	}
	fi, err = os.Stat(filepath.Join(h.Dir, daemon.DBFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored store: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// The daemon starts on the restored store; the next report is number 4.
	h.Start()
	h.MustSend("other@example.net", []string{"security@ex.test"}, daemontest.Report("other@example.net", "report D", "steps"))
	h.WaitMail(7 + want.QueueRows + 3)
	daemontest.MustContain(t, "incident list", mustCLI(t, "incident", "list", "--config", cfg), "SEC-", "0004")

	// Restoring over an existing store keeps the old one aside.
	h.Stop()
	out = mustCLI(t, "restore", backup, "--config", cfg)
	daemontest.MustContain(t, "second restore", out, "previous store is kept as")
	// A file that is not a store is refused and changes nothing.
	junk := filepath.Join(t.TempDir(), "junk.db")
	daemontest.WriteFile(t, junk, "not a bbolt file")
	if code, _, errOut := runCLI(t, "restore", junk, "--config", cfg); code != 1 || !strings.Contains(errOut, "not a usable backup") {
		t.Errorf("restore of junk: exit %d, %q", code, errOut)
	}
	if after := storeCounts(t, h.Dir); after != want {
		t.Errorf("after the refused restore the store holds %v, want %v", after, want)
	}
}
