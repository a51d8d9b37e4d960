package message

import (
	"strings"
	"testing"
)

// TestDecodeFlowed is built from the rules and examples of RFC 3676 and from
// text as Thunderbird 115 and mutt (text_flowed) send it.
func TestDecodeFlowed(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		delSp bool
		want  string
	}{
		// §4.1, §4.2: a line ending in a space continues on the next line.
		{"soft break joins", "This is a paragraph that \nwraps here.\n", false, "This is a paragraph that wraps here.\n"},
		{"three lines", "one \ntwo \nthree\nfixed\n", false, "one two three\nfixed\n"},
		{"fixed lines unchanged", "line one\nline two\n", false, "line one\nline two\n"},
		{"CRLF input", "soft \r\nbreak\r\n", false, "soft break\n"},
		{"no final newline", "soft \nend", false, "soft end"},
		{"flowed last line", "ends flowed \n", false, "ends flowed \n"},
		{"blank lines separate paragraphs", "para one\n\npara \ntwo\n", false, "para one\n\npara two\n"},
		// §4.2: DelSp=yes deletes the space the sender inserted.
		{"DelSp=yes", "Verbindungs \naufbau\n", true, "Verbindungsaufbau\n"},
		{"DelSp=yes without spaces in the text", "日本語の文章を \n続けます\n", true, "日本語の文章を続けます\n"},
		{"DelSp=no keeps the space", "Verbindungs \naufbau\n", false, "Verbindungs aufbau\n"},
		{"DelSp=yes deletes only one space", "two  \nspaces\n", true, "two spaces\n"},
		// §4.4: space-stuffing.
		{"stuffed From", " From the team\n", false, "From the team\n"},
		{"stuffed leading space", "  indented\n", false, " indented\n"},
		{"stuffed > is not a quote mark", " >not a quote\n", false, ">not a quote\n"},
		{"stuffed line that flows", " From here \non\n", false, "From here on\n"},
		// §4.3: the signature separator is not flowed.
		{"signature separator", "Thanks\n-- \nAlice\n", false, "Thanks\n-- \nAlice\n"},
		{"signature separator with DelSp=yes", "Thanks\n-- \nAlice\n", true, "Thanks\n-- \nAlice\n"},
		{"signature separator after a flowed line", "Thanks, \n-- \nAlice\n", true, "Thanks,\n-- \nAlice\n"},
		{"stuffed signature separator", " -- \nAlice\n", false, "-- \nAlice\n"},
		// §4.5: quoted lines.
		{"quoted flowed", "> This is quoted \n> text.\n", false, "> This is quoted text.\n"},
		{"quoted without stuffing space", ">quoted \n>text\n", false, "> quoted text\n"},
		{"nested quote", ">> deeper \n>> text\n> shallow\n", false, ">> deeper text\n> shallow\n"},
		{"depth change stops the flow", "> flowed \nunquoted\n", false, "> flowed \nunquoted\n"},
		{"deeper quote stops the flow", "> a \n>> b\n", false, "> a \n>> b\n"},
		{"empty quoted line", ">\n> x\n", false, ">\n> x\n"},
		{"quoted signature separator", "> -- \n> Alice\n", false, "> -- \n> Alice\n"},
		{"space between marks is text", "> > old \n> > text\n", false, "> > old > text\n"},

		{"Thunderbird 115 reply above the quote", tbAbove, false, tbAboveWant},
		{"mutt text_flowed reply below the quote", muttBelow, false, muttBelowWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DecodeFlowed(tt.in, tt.delSp); got != tt.want {
				t.Errorf("DecodeFlowed(%q, %v)\n got %q\nwant %q", tt.in, tt.delSp, got, tt.want)
			}
		})
	}
}

// Thunderbird 115 wraps at 72 columns with a trailing space, writes quote
// marks without spaces between them (">>"), and does not flow a line before
// a hard break.
const tbAbove = "/set mitigation <<END\n" +
	"Disable the parser until you upgrade to the fixed release, which we \n" +
	"expect to publish next week together with the advisory.\n" +
	"END\n" +
	"/severity high\n" +
	"\n" +
	"On 01/03/2026 10:00, Alice wrote:\n" +
	"> The parser crashes on crafted input; we should disable it until the \n" +
	"> fix lands.\n" +
	">> Older text that an earlier reply wrapped at seventy-two columns for \n" +
	">> everyone.\n" +
	"\n" +
	"-- \n" +
	"Bob\n"

const tbAboveWant = "/set mitigation <<END\n" +
	"Disable the parser until you upgrade to the fixed release, which we expect to publish next week together with the advisory.\n" +
	"END\n" +
	"/severity high\n" +
	"\n" +
	"On 01/03/2026 10:00, Alice wrote:\n" +
	"> The parser crashes on crafted input; we should disable it until the fix lands.\n" +
	">> Older text that an earlier reply wrapped at seventy-two columns for everyone.\n" +
	"\n" +
	"-- \n" +
	"Bob\n"

// mutt with text_flowed=yes space-stuffs quote-free lines that start with a
// space and writes "> " before quoted text.
const muttBelow = "* Alice <alice@src.test> [2026-03-01 10:00]:\n" +
	"> Can someone take the lead on this one? The reporter is waiting for \n" +
	"> an answer.\n" +
	"\n" +
	"/accept\n" +
	"/lead me\n" +
	"\n" +
	"I will look at it today; the fix is small:\n" +
	"\n" +
	"   if n > len(buf) {\n" +
	"\n" +
	"-- \n" +
	"Carol\n"

const muttBelowWant = "* Alice <alice@src.test> [2026-03-01 10:00]:\n" +
	"> Can someone take the lead on this one? The reporter is waiting for an answer.\n" +
	"\n" +
	"/accept\n" +
	"/lead me\n" +
	"\n" +
	"I will look at it today; the fix is small:\n" +
	"\n" +
	"  if n > len(buf) {\n" +
	"\n" +
	"-- \n" +
	"Carol\n"

// TestParseFlowed: Parse undoes format=flowed in the text/plain it hands out,
// after the transfer encoding and the charset.
func TestParseFlowed(t *testing.T) {
	raw := "From: bob@src.test\nSubject: x\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=ISO-8859-1; format=flowed; delsp=yes\n" +
		"Content-Transfer-Encoding: quoted-printable\n\n" +
		"/set impact <<END\nAn attacker can read the caf=E9=20\nsecrets of every tenant.\nEND\n"
	m, err := Parse(crlf(raw), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/set impact <<END\nAn attacker can read the cafésecrets of every tenant.\nEND\n"; m.Text != want {
		t.Errorf("Text = %q, want %q", m.Text, want)
	}
	// Without format=flowed, trailing spaces are plain text.
	plain := strings.Replace(raw, "; format=flowed; delsp=yes", "", 1)
	m, err = Parse(crlf(plain), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/set impact <<END\nAn attacker can read the café \nsecrets of every tenant.\nEND\n"; m.Text != want {
		t.Errorf("Text (fixed) = %q, want %q", m.Text, want)
	}
}
