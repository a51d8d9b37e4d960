package main

import (
	"fmt"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
)

const membersHelp = `Usage: embargo members list [--config FILE] [--data DIR]

Prints the roster in force: the configuration file's members as signed mail
changed them (distributor applications, /member add, remove and key). For
each member: the roles, the pinned key's state and expiry, and where the
entry came from (the file, or the proposal GOV-YYYY-NNNN that made it and
when); then the file entries a removal by mail shadows, and the open
proposals. Through the running daemon when there is one (the roster it
uses), else from the store with the file's keys_dir.

Examples:
  embargo members list
  embargo members list --config /etc/embargo/embargo.toml

Flags:
`

func cmdMembers(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("members", membersHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "members needs a subcommand: list")
	if sub == "" || err != nil {
		return err
	}
	if sub != "list" {
		return usageError(fmt.Sprintf("unknown members subcommand %q: use list", sub))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	cmds := map[string]daemon.ReadCommand{"members list": daemon.MembersList(cfg, time.Now())}
	return daemon.Read(cfg.DataDir, cmds, "members list", pos, s.out)
}
