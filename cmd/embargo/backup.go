package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
)

const backupHelp = `Usage: embargo backup FILE [--config FILE] [--data DIR]

Writes a consistent copy of the store to FILE (mode 0600), while the daemon
runs (through its control socket, in one read transaction: mail keeps
flowing) or while it is stopped. The copy is synced to disk, checked with
bbolt's consistency check, and only then renamed to FILE, so an interrupted
backup never replaces a good one. It prints what the copy holds.

The copy holds embargoed reports in clear: keep it on encrypted storage, or
encrypt it before it leaves the host (gpg --encrypt). Restore with
embargo restore.

Examples:
  embargo backup /var/backups/embargo/embargo-$(date +%F).db
  embargo backup /tmp/embargo.db --config /etc/embargo/embargo.toml
  embargo backup /tmp/embargo.db && gpg --encrypt -r backup@example.org /tmp/embargo.db

Flags:
`

func cmdBackup(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("backup", backupHelp, &cf, false)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("usage: embargo backup FILE")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	dst, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	online, err := daemon.Backup(cfg.DataDir, dst)
	if err != nil {
		return err
	}
	sum, err := daemon.DescribeStore(dst)
	if err != nil {
		return err
	}
	how := "from the store file (no daemon running)"
	if online {
		how = "through the running daemon"
	}
	fmt.Fprintf(s.out, "backup written to %s %s: %s\n", dst, how, sum)
	return nil
}

const restoreHelp = `Usage: embargo restore FILE [--config FILE] [--data DIR]

Puts a backup made with embargo backup in place of the store. The daemon must
be stopped. The backup is copied beside the store and the copy checked as the
store is (a damaged backup is refused and nothing changes). Whatever is in
place now, damaged, empty or missing, is never opened: it is kept beside the
store as embargo.db.replaced-<time>. The restored store has mode 0600.
Mail that arrived after the backup was taken is not in it: the senders' copies
and the committee's mailboxes are where to find it.

Examples:
  systemctl stop embargo
  embargo restore /var/backups/embargo/embargo-2026-11-23.db --config /etc/embargo/embargo.toml
  systemctl start embargo

Flags:
`

func cmdRestore(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("restore", restoreHelp, &cf, false)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("usage: embargo restore FILE")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	kept, err := daemon.Restore(cfg.DataDir, pos[0], time.Now())
	if err != nil {
		return err
	}
	dst := filepath.Join(cfg.DataDir, daemon.DBFile)
	sum, err := daemon.DescribeStore(dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "restored %s to %s: %s\n", pos[0], dst, sum)
	if kept != "" {
		fmt.Fprintf(s.out, "the previous store is kept as %s\n", kept)
	}
	return nil
}
