package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestKeysExportAndCheck: the exported list key is what signs the mail; check
// reports a member whose pinned key is missing.
func TestKeysExportAndCheck(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "e.toml")
	daemontest.WriteFile(t, cfgPath, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\nkeys_dir = %q\n", filepath.Join(dir, "data"), dir)+
		daemontest.TOMLMember("carol@ex.test", "0123456789ABCDEF0123456789ABCDEF01234567")+"[governance]\nquorum = 1\n")
	var out, errb strings.Builder
	if rc := run([]string{"keys", "export", "announce", "--config", cfgPath}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("keys export: %d %q", rc, errb.String())
	}
	g := daemontest.NewGPG(t)
	g.ImportKey([]byte(out.String()))
	if fi, err := os.Stat(filepath.Join(dir, "data", "keys", "announce.key.asc")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("list key file: %v %v, want mode 0600", fi.Mode(), err)
	}
	out.Reset()
	errb.Reset()
	if rc := run([]string{"check", "--config", cfgPath}, &out, &errb); rc != 1 {
		t.Errorf("check with a missing pinned key: exit %d, want 1", rc)
	}
	daemontest.MustContain(t, "check output", out.String()+errb.String(), "carol@ex.test", "no key with the pinned fingerprint")
	if rc := run([]string{"keys", "export", "nope", "--config", cfgPath}, &out, &errb); rc != 2 {
		t.Errorf("keys export of an unknown list: exit %d, want 2", rc)
	}
}
