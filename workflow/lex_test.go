package workflow

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestExtractPlacement: the command block is read wherever it stands outside
// quoted text, above or below the quote, and only there.
func TestExtractPlacement(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // verbs with line numbers, "" for none
		err  string // error text, "" for success
	}{
		{"top of the text", "/accept\n/lead me\n\nThanks.\n", "1:accept 2:lead", ""},
		{"reply above the quote (Thunderbird)", "/accept\n\nOn 01/03/2026 10:00, Alice wrote:\n> Please take it.\n", "1:accept", ""},
		{"reply below the quote (mutt)", "* Alice <a@src.test> [2026-03-01 10:00]:\n> Please take it.\n\n/accept\n/lead me\n\n-- \nCarol\n", "4:accept 5:lead", ""},
		{"right below the quote, no blank line", "Alice wrote:\n> Please take it.\n/accept\n", "3:accept", ""},
		{"after prose and a blank line", "Looks right to me.\n\n/accept\n", "3:accept", ""},
		{"interleaved: between two quotes", "> first question\n\n/accept\n\n> second question\n\nYes.\n", "3:accept", ""},
		{"slash line inside prose is prose", "Looks good; I ran\n/usr/bin/foo --check\nand it passed.\n", "", ""},
		{"quoted commands only", "> /disclose now\n>> /public\n", "", ""},
		{"after the signature", "Thanks.\n-- \n/disclose now\n", "", ""},
		{"after a stripped signature", "Thanks.\n--\n\n/disclose now\n", "", ""},
		{"in a Thunderbird forward", "FYI\n\n-------- Forwarded Message --------\nSubject: x\n\n/disclose now\n", "", ""},
		{"in an Outlook original message", "See below.\n\n-----Original Message-----\nFrom: Alice\n\n/disclose now\n", "", ""},
		{"in an Apple Mail forward", "FYI\n\nBegin forwarded message:\n\n/disclose now\n", "", ""},
		{"in a Gmail forward", "FYI\n\n---------- Forwarded message ---------\n/disclose now\n", "", ""},
		{"forward marker ends the block", "/accept\n-------- Forwarded Message --------\n/disclose now\n", "1:accept", ""},
		{"here-document keeps blank, quoted, slash and signature lines", "/set mitigation <<END\nfirst\n\n> quoted\n/not a command\n-- \nEND\n/fixed\n\n> q\n", "1:set 8:fixed", ""},
		{"here-document below the quote", "> old text\n\n/set impact <<END\nAn attacker reads secrets.\n\nAll of them.\nEND\n", "3:set", ""},
		{"CRLF", "> q\r\n\r\n/accept\r\n\r\nbye\r\n", "3:accept", ""},

		{"two blocks", "/accept\n\n/lead me\n", "", "line 3: /lead: two command blocks: lines 1 and 3; put all commands in one block"},
		{"two blocks around the quote", "/accept\n\n> Please take it.\n\n/lead me\n", "", "line 5: /lead: two command blocks: lines 1 and 5; put all commands in one block"},
		{"two blocks, the second after a here-document", "/set impact <<END\nx\n\nEND\n\nprose\n\n/fixed\n", "", "line 8: /fixed: two command blocks: lines 1 and 8; put all commands in one block"},
		{"two blocks named at lines 3 and 12", "Hello,\n\n/accept\n\n> a\n> b\n> c\n> d\n> e\n> f\n\n/lead me\n", "", "line 12: /lead: two command blocks: lines 3 and 12; put all commands in one block"},
		{"text right after a block below the quote", "> q\n\n/set summary Heap overflow in the\nparser\n", "", "line 4: /set: text right after the commands: leave a blank line after the last command, and give a multi-line value as a here-document (<<END, the lines, END)"},
		{"unclosed here-document below the quote", "> q\n\n/reply <<END\nhello\n", "", "line 3: /reply: here-document <<END not closed: end it with a line END"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines, err := Extract(tt.text)
			if tt.err != "" {
				var ce *CommandError
				if err == nil || err.Error() != tt.err || !errors.As(err, &ce) {
					t.Fatalf("Extract(%q) error = %v, want %q", tt.text, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Extract(%q): %v", tt.text, err)
			}
			var got []string
			for _, l := range lines {
				got = append(got, fmt.Sprintf("%d:%s", l.N, l.Verb))
			}
			if s := strings.Join(got, " "); s != tt.want {
				t.Errorf("Extract(%q) = %q, want %q", tt.text, s, tt.want)
			}
		})
	}
}

// TestExtractTwoBlocksSentinel: the receipt can tell a second block from a
// syntax error.
func TestExtractTwoBlocksSentinel(t *testing.T) {
	_, err := Extract("/accept\n\n/lead me\n")
	if !errors.Is(err, ErrCommandBlocks) || errors.Is(err, ErrSyntax) {
		t.Fatalf("err = %v, want ErrCommandBlocks alone", err)
	}
}

// TestExtractHereDocumentBelowQuote: a value written below the quote keeps
// its blank lines and ends at its delimiter.
func TestExtractHereDocumentBelowQuote(t *testing.T) {
	lines, err := Extract("On Monday, Alice wrote:\n> What do we tell users?\n\n/set mitigation <<END\nDisable the parser:\n\n  --parser=off   \nEND\n\n-- \nBob\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || !lines[0].Doc || lines[0].Args != "mitigation" || lines[0].Value != "Disable the parser:\n\n  --parser=off" {
		t.Fatalf("Extract = %+v", lines)
	}
}
