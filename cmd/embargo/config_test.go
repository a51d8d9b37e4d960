package main

import (
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good.toml"
	bad := dir + "/bad.toml"
	daemontest.WriteFile(t, good, "domain = \"example.org\"\n[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n[governance]\nquorum = 1\n")
	daemontest.WriteFile(t, bad, "domain = \"example.org\"\nbogus = 1\n")
	var out, errb strings.Builder
	if code := run([]string{"check", "--config", good}, &out, &errb); code != 0 {
		t.Errorf("check good config: exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "configuration is valid") {
		t.Errorf("check output %q", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--config", bad}, &out, &errb); code != 1 {
		t.Errorf("check bad config: exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), `line 2: unknown key "bogus"`) {
		t.Errorf("check bad config stderr = %q", errb.String())
	}
}
