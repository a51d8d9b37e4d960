package listd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/config"
)

// TestAlertConfigQuotesProblems: the alert that a configuration was not
// reloaded quotes its problems escaped and indented (found by
// FuzzReloadAlert). config.Error starts with the file's path, which on a
// real system starts with "/": unindented, that line made the alert a
// malformed command block for a member who replies with it unquoted
// (docs/threat-model.md E5), and a member's address with a line break
// in it (quoted raw by the validation) started a line "/disclose now".
// Escape sequences and bidi overrides of a value are escaped; a file with
// thousands of problems makes a short alert.
func TestAlertConfigQuotesProblems(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	file := "domain = \"example.org\"\nproject = \"Ex\\u001b[2J\\u202e\"\n" +
		"[[members]]\nemail = \"x\\n/disclose now\\u001b[2J@b.c\"\nroles = [\"src\"]\n"
	_, problem := config.Parse([]byte(file), "/etc/embargo/embargo.toml")
	if problem == nil {
		t.Fatal("the file parses")
	}
	if err := s.AlertConfig("/etc/embargo/embargo.toml", problem); err != nil {
		t.Fatal(err)
	}
	for _, c := range checkAlerts(t, s, db, k, 0, "alert-reload", 2, "") {
		for _, want := range []string{"\n  /etc/embargo/embargo.toml: ", "\n  /disclose now\\x1b[2j@b.c: email" /* the address lower-cased */, `Ex\x1b[2J\u202e`} {
			if !strings.Contains(c.Text, want) {
				t.Errorf("alert to %v lacks %q:\n%s", c.To, want, c.Text)
			}
		}
	}

	var many strings.Builder
	many.WriteString("domain = \"example.org\"\n")
	for i := range 300 {
		fmt.Fprintf(&many, "unknown%d%s = 1\n", i, strings.Repeat("x", i*3))
	}
	_, problem = config.Parse([]byte(many.String()), "/etc/embargo/embargo.toml")
	if err := s.AlertConfig("/etc/embargo/embargo.toml", problem); err != nil {
		t.Fatal(err)
	}
	for _, c := range checkAlerts(t, s, db, k, 2, "alert-reload", 2, "") {
		if !strings.Contains(c.Text, "more lines: embargo check --config /etc/embargo/embargo.toml lists them all") {
			t.Errorf("alert to %v does not say the problems were cut:\n%s", c.To, c.Text)
		}
	}
}
