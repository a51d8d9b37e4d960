package workflow

import (
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/help.golden and ../docs/commands.md")

// strip drops the line numbers, which are not part of a command's identity.
func strip(cmds []Command) []Command {
	out := make([]Command, len(cmds))
	for i, c := range cmds {
		c.Line = 0
		if len(c.Args) == 0 {
			c.Args = nil
		}
		out[i] = c
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // Format of the commands, "" for none
		err  string // error text, "" for success
	}{
		{"one", "/accept\n", "/accept\n", ""},
		{"none: prose first", "Looks good.\n/accept\n", "", ""},
		{"leading blank lines", "\n\n  \n/accept\n\nthanks", "/accept\n", ""},
		{"mixed case verb", "/ACCEPT\n/Fixed\n", "/accept\n/fixed\n", ""},
		{"alias", "/fix-team add ENG@Example.org\n", "/fixteam add eng@example.org\n", ""},
		{"CRLF", "/accept\r\n/cvss CVSS:3.1/S:U/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H\r\n\r\n> /disclose now\r\n", "/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", ""},
		{"quoted line ends the block", "/accept\n> /disclose now\n", "/accept\n", ""},
		{"quoted command alone", "> /disclose now\n", "", ""},
		{"signature ends the block", "/accept\n-- \n/disclose now\n", "/accept\n", ""},
		{"stripped signature ends the block", "/accept\n--\n/disclose now\n", "/accept\n", ""},
		{"blank line ends the block", "/accept\n\n/disclose now\n", "", "line 3: /disclose: two command blocks: lines 1 and 3; put all commands in one block"},
		{"indented is not a command", " /accept\n", "", ""},
		{"tab separates", "/set\tsummary\tHeap overflow\n", "/set summary Heap overflow\n", ""},
		{"here-document", "/set mitigation <<END\nDisable it:   \n\n  --feature-gates=Foo=false\n/not a command\n> not a quote\nEND\n/fixed\n", "/set mitigation <<END\nDisable it:\n\n  --feature-gates=Foo=false\n/not a command\n> not a quote\nEND\n/fixed\n", ""},
		{"here-document other delimiter", "/reply <<EOT\nEND\nEOT\n", "/reply END\n", ""},
		{"here-document needing a new delimiter", "/reply <<EOT\nfirst\n END \nEOT\n", "/reply <<END2\nfirst\n END\nEND2\n", ""},
		{"here-document, indented delimiter", "/reply <<END\nhello\n  END  \n", "/reply hello\n", ""},
		{"here-document trimmed blank ends", "/set impact <<END\n\nread secrets\n\nEND\n", "/set impact read secrets\n", ""},
		{"empty here-document clears", "/set condition <<END\nEND\n", "/set condition <<END\nEND\n", ""},
		{"disclose date", "/disclose 2026-12-03T16:00z\n", "/disclose 2026-12-03\n", ""},
		{"disclose instant lower z", "/disclose 2026-12-03t09:30z EMERGENCY\n", "/disclose 2026-12-03T09:30Z emergency\n", ""},
		{"cve dedupe upper", "/cve cve-2026-1234 CVE-2026-1234 CVE-2026-99999\n", "/cve CVE-2026-1234 CVE-2026-99999\n", ""},
		{"severity moderate", "/severity Moderate\n", "/severity medium\n", ""},
		{"help one", "/help /Disclose\n", "/help disclose\n", ""},
		{"close resolution", "/close OUT-OF-SCOPE\n", "/close out-of-scope\n", ""},

		{"unknown command", "/accept\n/frobnicate\n", "", "line 2: /frobnicate: unknown command; send /help for the list"},
		{"not a verb", "/usr/bin/foo is affected\n", "", "line 1: /usr/bin/foo: not a command; send /help for the list"},
		{"empty verb", "/\n", "", "line 1: /: not a command; send /help for the list"},
		{"bad cvss", "/accept\n\n", "/accept\n", ""},
		{"bad cvss names metric", "/accept\n/lead me\n/cvss CVSS:3.1/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", "", "line 3: /cvss: base metric AV missing; example: /cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
		{"args to accept", "/accept now\n", "", "line 1: /accept: takes no arguments; example: /accept"},
		{"text right after", "/set summary Heap overflow in the\nparser of the API server\n", "", "line 2: /set: text right after the commands: leave a blank line after the last command, and give a multi-line value as a here-document (<<END, the lines, END)"},
		{"unclosed here-document", "/set mitigation <<END\nDisable it\n", "", "line 1: /set: here-document <<END not closed: end it with a line END"},
		{"here-document on accept", "/accept <<END\nx\nEND\n", "", "line 1: /accept: takes no here-document; example: /accept"},
		{"value twice", "/set summary x <<END\ny\nEND\n", "", "line 1: /set: give the value on the line or as a here-document, not both; example: /set summary Node authorizer bypass via crafted requests"},
		{"summary one line", "/set summary <<END\na\nb\nEND\n", "", "line 1: /set: summary takes one line; example: /set summary Node authorizer bypass via crafted requests"},
		{"url", "/set issue-url http://example.org/1\n", "", "line 1: /set: issue-url takes an https URL; example: /set summary Node authorizer bypass via crafted requests"},
		{"unknown field", "/set colour red\n", "", "line 1: /set: unknown FIELD \"colour\" (want summary, actor, impact, condition, affected, fixed, mitigation, action-required, fix-impact, detection, upgrade-docs, issue-url, credit, component, cwe, references); example: /set summary Node authorizer bypass via crafted requests"},
		{"set without value", "/set summary\n", "", "line 1: /set: value missing (an empty here-document clears the field); example: /set summary Node authorizer bypass via crafted requests"},
		{"date with zone", "/disclose 2026-12-03T16:00+01:00\n", "", "line 1: /disclose: \"2026-12-03T16:00+01:00\": want YYYY-MM-DD (16:00 UTC) or YYYY-MM-DDTHH:MMZ, in UTC; example: /disclose 2026-12-03"},
		{"bad date", "/disclose 2026-02-30\n", "", "line 1: /disclose: \"2026-02-30\": want YYYY-MM-DD (16:00 UTC) or YYYY-MM-DDTHH:MMZ, in UTC; example: /disclose 2026-12-03"},
		{"bad cve", "/cve CVE-26-1\n", "", "line 1: /cve: \"CVE-26-1\" is not a CVE ID (CVE-YYYY-NNNN); example: /cve CVE-2026-12345"},
		{"bad address", "/handoff not-an-address\n", "", "line 1: /handoff: \"not-an-address\" is not an address (local@domain); example: /handoff security@other-project.example"},
		{"bad reason", "/reject meh\n", "", "line 1: /reject: unknown REASON \"meh\" (want not-a-vulnerability, container-cve, clickjacking, spf or out-of-scope); example: /reject not-a-vulnerability"},
		{"control character", "/reply hi\x1b[2J\n", "", "line 1: /reply: control character U+001B"},
		{"invalid utf-8", "/reply \xff\n", "", "line 1: /reply: invalid UTF-8"},
		{"unicode case folding is no verb", "/\u212Aelp\n", "", "line 1: /\u212Aelp: not a command; send /help for the list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, err := Parse(tt.text)
			if tt.err != "" {
				var ce *CommandError
				if err == nil || err.Error() != tt.err || !errors.As(err, &ce) {
					t.Fatalf("Parse(%q) error = %v, want %q", tt.text, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.text, err)
			}
			if got := Format(cmds); got != tt.want {
				t.Fatalf("Parse(%q) = %q, want %q", tt.text, got, tt.want)
			}
			again, err := Parse(Format(cmds))
			if err != nil || !reflect.DeepEqual(strip(again), strip(cmds)) {
				t.Fatalf("Parse(Format(%q)) = %v, %v, want %v", tt.text, again, err, cmds)
			}
		})
	}
}

func TestParseLineNumbers(t *testing.T) {
	cmds, err := Parse("\r\n/accept\r\n/set mitigation <<END\r\na\r\n\r\nb\r\nEND\r\n/fixed\r\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, c := range cmds {
		got = append(got, c.Line)
	}
	if want := []int{2, 3, 8}; !reflect.DeepEqual(got, want) {
		t.Errorf("lines = %v, want %v", got, want)
	}
	if cmds[1].Value != "a\n\nb" {
		t.Errorf("value = %q, want %q", cmds[1].Value, "a\n\nb")
	}
}

func TestParseTooMany(t *testing.T) {
	_, err := Parse(strings.Repeat("/status\n", MaxCommands+1))
	if err == nil || !errors.Is(err, ErrSyntax) {
		t.Errorf("Parse(%d commands) error = %v, want ErrSyntax", MaxCommands+1, err)
	}
}

// TestExamplesParse runs every example of the command table through the
// parser (what prow's help records never had), and checks each is canonical.
func TestExamplesParse(t *testing.T) {
	names := map[string]bool{}
	for _, s := range Commands() {
		if names[s.Name] {
			t.Errorf("command %s listed twice", s.Name)
		}
		names[s.Name] = true
		for _, a := range s.Aliases {
			if names[a] {
				t.Errorf("alias %s taken twice", a)
			}
			names[a] = true
		}
		if s.Usage == "" || s.Help == "" || s.WhoCanUse == 0 || len(s.Examples) == 0 || s.Parse == nil {
			t.Errorf("command %s: incomplete table entry", s.Name)
		}
		if !strings.HasPrefix(s.Usage, "/"+s.Name) {
			t.Errorf("command %s: usage %q does not start with /%s", s.Name, s.Usage, s.Name)
		}
		for _, e := range s.Examples {
			cmds, err := Parse(e + "\n")
			if err != nil {
				t.Errorf("example %q: %v", e, err)
				continue
			}
			if len(cmds) != 1 || cmds[0].Name != s.Name {
				t.Errorf("example %q parses to %v, want one /%s", e, cmds, s.Name)
				continue
			}
			if got := cmds[0].String(); got != e {
				t.Errorf("example %q is not canonical: %q", e, got)
			}
		}
	}
}

func TestHelpGolden(t *testing.T) {
	golden(t, "testdata/help.golden", HelpText(""))
	if got := HelpText("cvss"); !strings.HasPrefix(got, "\n  /cvss VECTOR\n") || strings.Contains(got, "/accept") {
		t.Errorf("HelpText(cvss) = %q", got)
	}
	// Sent text never starts a line with "/" (it could be carried into a reply).
	if cmds, err := Parse(HelpText("")); err != nil || len(cmds) != 0 {
		t.Errorf("Parse(HelpText) = %v, %v, want no commands", cmds, err)
	}
	for _, l := range strings.Split(HelpText(""), "\n") {
		if strings.HasPrefix(l, "/") {
			t.Errorf("help line starts with a slash: %q", l)
		}
	}
}

// TestCommandsDoc fails when docs/commands.md is stale; go generate (or
// -update) rewrites it.
func TestCommandsDoc(t *testing.T) {
	golden(t, "../docs/commands.md", CommandsMarkdown())
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go generate ./workflow)", err)
	}
	if string(want) != got {
		t.Errorf("%s is stale: run go generate ./workflow (or go test ./workflow -update)\n--- got:\n%s", path, got)
	}
}

// FuzzCommandParser: Parse never panics, every accepted command re-serialises
// to a canonical form that parses back to the same commands, and that form is
// a fixed point (docs/threat-model.md E6).
func FuzzCommandParser(f *testing.F) {
	for _, s := range Commands() {
		for _, e := range s.Examples {
			f.Add(e + "\n")
		}
	}
	f.Add("/accept\r\n/set mitigation <<END\r\n\r\nx  \r\n END\r\n> /disclose now\r\n")
	f.Add("/reply <<EOT\nEND\n<<END\nEOT\n")
	f.Add("/set summary a <<b\n")
	f.Fuzz(func(t *testing.T, text string) {
		cmds, err := Parse(text)
		if err != nil {
			var ce *CommandError
			if !errors.As(err, &ce) || ce.Line < 1 {
				t.Fatalf("Parse(%q) error %v is not a *CommandError with a line", text, err)
			}
			return
		}
		for _, c := range cmds {
			if c.Line < 1 {
				t.Fatalf("Parse(%q): command %v without a line", text, c)
			}
		}
		printed := Format(cmds)
		again, err := Parse(printed)
		if err != nil {
			t.Fatalf("Parse(Format(Parse(%q))) = %v; printed %q", text, err, printed)
		}
		if !reflect.DeepEqual(strip(again), strip(cmds)) {
			t.Fatalf("round trip of %q: %#v, want %#v; printed %q", text, strip(again), strip(cmds), printed)
		}
		if p2 := Format(again); p2 != printed {
			t.Fatalf("Format not a fixed point: %q then %q", printed, p2)
		}
	})
}
