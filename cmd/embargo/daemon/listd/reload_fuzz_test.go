package listd

import (
	"errors"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/config"
)

// FuzzReloadAlert is the SRC's alert that a configuration was not
// reloaded (SIGHUP with a file that has errors, Service.AlertConfig as
// the daemon's reloadConfig calls it). The configuration's path, the file
// itself and a further problem come from the fuzzer: the file is read by
// config.Parse, as a reload reads it, and its errors (which quote the
// operator's values: a member's address, a key's name, a listen address)
// are joined with the further one (what keys_dir, templates_dir or the
// governance record may answer). Both copies must be sealed and checked
// by checkAlerts; the problems read as one escaped, indented block
// (docs/threat-model.md E5), cut to maxAlertText.
func FuzzReloadAlert(f *testing.F) {
	k := newStoreKeys(f)
	f.Add("/etc/embargo/embargo.toml", "domain = \"example.org\"\n[smtp]\nlisten = \"0.0.0.0\"\n", "")
	// More in testdata/fuzz/FuzzReloadAlert: member addresses and keys
	// with a line break and a "/" command after it, escape sequences and
	// bidi overrides in values, unknown keys, TOML syntax errors, invalid
	// UTF-8, many and long problems, a hostile path.
	f.Fuzz(func(t *testing.T, source, toml, extra string) {
		s, db := storeService(t, k)
		var problem error
		if _, err := config.Parse([]byte(toml), source); err != nil {
			problem = err
		}
		if extra != "" || problem == nil {
			problem = errors.Join(problem, errors.New(extra))
		}
		if err := s.AlertConfig(source, problem); err != nil {
			t.Fatalf("AlertConfig: %v", err)
		}
		checkAlerts(t, s, db, k, 0, "alert-reload", 2, "")
	})
}
