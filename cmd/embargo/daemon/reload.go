package daemon

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
)

// Reload is what SIGHUP (systemctl reload) does, without a restart and
// without refusing or losing any mail (docs/design.md §1, §5):
//
//   - the SMTP certificate is read again (new connections get it);
//   - with Options.Load, the configuration file and keys_dir are read
//     again and what they say about who is who and the texts is put in
//     force for the next message: the members and their keys, the
//     holidays, the on-call rotation, the channels, the templates and
//     [governance]. The roster in force is the file's members as signed
//     mail changed them (the governance record), so a reload never undoes
//     a decision by mail. A message being handled finishes with the roster
//     it began with (listd.Service keeps one immutable snapshot per
//     message).
//
// A file with errors (or a keys_dir or templates_dir that cannot be read)
// changes nothing: the error is logged and the SRC alerted, each copy
// encrypted. Settings that only a restart can change (the listeners, the
// data directory, the lists, the relay, DKIM, HTTP, the records) are kept
// as they are, and the log says which of them the file changed.
func (d *Daemon) Reload() error {
	errs := []error{d.reloadCert()}
	if d.o.Load != nil {
		errs = append(errs, d.reloadConfig())
	}
	return errors.Join(errs...)
}

func (d *Daemon) reloadConfig() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	now := d.o.Now()
	cfg, err := d.o.Load()
	var set listd.Settings
	if err == nil {
		set, err = d.reloadSettings(cfg, now)
	}
	if err == nil {
		for _, key := range restartOnly(d.cfg, cfg) {
			d.log.Warn("reload: " + key + " changed in the file: it takes effect at the next restart (systemctl restart embargo)")
		}
		err = d.svc.Reload(set)
	}
	if err != nil {
		d.log.Error("reload: the configuration has errors; the running roster, keys and settings stay in force", "err", err)
		if aerr := d.svc.AlertConfig(d.cfg.Source, err); aerr != nil {
			d.log.Error("reload: the SRC could not be alerted", "err", aerr)
		}
		return err
	}
	d.log.Info("reload: configuration in force", "config", cfg.Source, "members", len(cfg.Members), "quorum", cfg.Governance.Quorum)
	return nil
}

// reloadSettings reads cfg's keys_dir (or takes the keys the drill made)
// and its templates, logs the members' key problems as the start does, and
// returns the settings listd.Service.Reload puts in force.
func (d *Daemon) reloadSettings(cfg *config.Config, now time.Time) (listd.Settings, error) {
	ring, problems := d.o.MemberKeys, []keys.Problem(nil)
	if ring == nil {
		var err error
		if ring, problems, err = loadMemberKeys(cfg, now); err != nil {
			return listd.Settings{}, err
		}
	}
	tmpl, err := templates.New(cfg.TemplatesDir)
	if err != nil {
		return listd.Settings{}, err
	}
	for _, p := range (&Keys{Problems: problems}).ProblemLines() {
		d.log.Warn("member key problem: " + p)
	}
	return settings(cfg, ring, problems, tmpl), nil
}

// settings are what cfg says that a reload may change, with the members'
// keys and the templates loaded from it.
func settings(cfg *config.Config, ring *keys.Keyring, problems []keys.Problem, tmpl *templates.Set) listd.Settings {
	return listd.Settings{
		Members:           fileMembers(cfg),
		Keys:              ring,
		KeyProblems:       problems,
		Holidays:          cfg.HolidayTimes(),
		Rotation:          Rotation(cfg),
		Channels:          channels(cfg),
		Templates:         tmpl,
		Quorum:            cfg.Governance.Quorum,
		LazyConsensus:     cfg.Governance.LazyConsensus(),
		RequireEncryption: cfg.Commands.RequireEncryption,
		RequireBinding:    cfg.Commands.RequireBinding,
	}
}

// fileMembers are the configuration's [[members]] as the roster takes them.
func fileMembers(cfg *config.Config) []lists.Member {
	var out []lists.Member
	for _, m := range cfg.Members {
		out = append(out, lists.Member{Email: m.Email, Name: m.Name, Roles: m.Roles, Fingerprint: m.Fingerprint})
	}
	return out
}

// restartOnly names the settings that differ between the running
// configuration and a reloaded one, among those a reload does not change.
func restartOnly(old, cur *config.Config) []string {
	fields := []struct {
		name     string
		old, cur any
	}{
		{"domain", old.Domain, cur.Domain},
		{"project", old.Project, cur.Project},
		{"data_dir", old.DataDir, cur.DataDir},
		{"key_passphrase_file", old.KeyPassphraseFile, cur.KeyPassphraseFile},
		{"log_level", old.LogLevel, cur.LogLevel},
		{"[smtp]", old.SMTP, cur.SMTP},
		{"[relay]", old.Relay, cur.Relay},
		{"[intake]", old.Intake, cur.Intake},
		{"[lists]", old.Lists, cur.Lists},
		{"[lmtp]", old.LMTP, cur.LMTP},
		{"[dkim]", old.DKIM, cur.DKIM},
		{"[http]", old.HTTP, cur.HTTP},
		{"[cve]", old.CVE, cur.CVE},
		{"[osv]", old.OSV, cur.OSV},
	}
	var out []string
	for _, f := range fields {
		if !reflect.DeepEqual(f.old, f.cur) {
			out = append(out, f.name)
		}
	}
	return out
}

// membersCommand is `embargo members list` inside the daemon (the control
// socket): the roster in force, as the running daemon sees it.
func (d *Daemon) membersCommand(tx *bolt.Tx, args []string, w io.Writer) error {
	if len(args) != 0 {
		return fmt.Errorf("embargo members list takes no arguments")
	}
	return d.svc.MembersList(tx, w)
}

// MembersList is `embargo members list` on a store no daemon holds: the
// roster cfg and the store's governance record make, with the keys of
// cfg's keys_dir checked at now.
func MembersList(cfg *config.Config, now time.Time) ReadCommand {
	return func(tx *bolt.Tx, args []string, w io.Writer) error {
		if len(args) != 0 {
			return fmt.Errorf("embargo members list takes no arguments")
		}
		ring, problems, err := loadMemberKeys(cfg, now)
		if err != nil {
			return err
		}
		st, err := govdb.Load(tx)
		if err != nil {
			return err
		}
		set := listd.Settings{Members: fileMembers(cfg), Keys: ring, KeyProblems: problems}
		_, err = io.WriteString(w, listd.MembersText(set, st, now.UTC()))
		return err
	}
}
