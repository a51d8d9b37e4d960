package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/config"
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

// TestCheckEscapesReport: what check prints reaches the operator's
// terminal, and a roster address or key user ID may be an outsider's text.
func TestCheckEscapesReport(t *testing.T) {
	hostile := "eve@example.org\x1b]8;;http://x\x07\u202e"
	r := &config.Report{
		Warnings: []string{"member " + hostile + " has no fingerprint"},
		Keys:     []string{"member " + hostile + ", key ABCD: ok"},
		Errors:   []error{errors.New("line 3: bad member " + hostile + "\n  context\r/disclose now")},
	}
	var out strings.Builder
	err := printReport(&out, r)
	if err == nil {
		t.Fatal("printReport with errors returned nil")
	}
	for _, s := range []string{out.String(), err.Error()} {
		if strings.ContainsAny(s, "\x1b\x07\r\u202e") {
			t.Errorf("check printed a raw control or bidi character: %q", s)
		}
	}
	if !strings.Contains(out.String(), `eve@example.org\x1b]8;;http://x\a\u202e`) {
		t.Errorf("warning not escaped as expected: %q", out.String())
	}
	if !strings.Contains(err.Error(), "\n  context\\r/disclose now") {
		t.Errorf("error lines not kept or escaped: %q", err.Error())
	}
}
