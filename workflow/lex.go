package workflow

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on a command block; a message over them is refused whole.
const (
	MaxCommands   = 50        // command lines in one message
	MaxValueBytes = 64 * 1024 // one here-document value
)

// Line is one command as written: the lexer's output, before the command
// table gives it meaning.
type Line struct {
	N     int    // 1-based line number of the command line in the text
	Verb  string // as written, without the slash, lower-cased
	Args  string // the rest of the line, surrounding white space trimmed
	Doc   bool   // a here-document followed the line ("<<END" ended Args)
	Value string // the here-document's body (Doc only), canonicalised
}

// heredoc matches a here-document opener: the last word of a command line.
var heredoc = regexp.MustCompile(`^<<([A-Za-z][A-Za-z0-9_-]*)$`)

// Extract finds the command block of a message: the lines that start with "/"
// at column 0 at the top of the verified text/plain part (leading blank lines
// aside), each optionally followed by a here-document (DESIGN.md §3,
// threats.md E5). The block ends at the first blank line, quoted (">") line or
// signature separator ("-- ", or "--" once a mail client stripped the space)
// after a command; nothing after it ever counts. A text whose first non-blank
// line is not a command has no commands. Lines end in LF or CRLF.
//
// A here-document carries a multi-line value, immune to the wrapping at 72
// columns and the trailing-space stripping of mail clients:
//
//	/set mitigation <<END
//	Disable the feature gate:
//
//	  --feature-gates=Foo=false
//	END
//
// The delimiter is any word (letters, digits, "_", "-", starting with a
// letter); the body ends at the first line that is the delimiter alone
// (surrounding white space ignored). Inside, every line counts as text: blank
// lines, "/" and ">" lines too. Trailing white space on each line and blank
// lines at either end of the body are dropped.
//
// Errors (a *CommandError) name the line: a command line that is not a
// command, text right after a command (a line wrapped by a mail client, or a
// missing blank line: rejecting it is safer than silently dropping half a
// value), an unclosed here-document, control characters, invalid UTF-8, or
// more than MaxCommands commands.
func Extract(text string) ([]Line, error) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	i := 0
	for i < len(lines) && isBlank(lines[i]) {
		i++
	}
	var out []Line
	for i < len(lines) {
		l := lines[i]
		if !strings.HasPrefix(l, "/") {
			if len(out) == 0 || isBlank(l) || strings.HasPrefix(l, ">") || l == "-- " || l == "--" {
				break
			}
			return nil, &CommandError{Line: i + 1, Verb: out[len(out)-1].Verb, Err: argErr(ErrSyntax,
				"text right after the commands: leave a blank line after the last command, and give a multi-line value as a here-document (<<END, the lines, END)")}
		}
		if len(out) == MaxCommands {
			return nil, &CommandError{Line: i + 1, Verb: verbOf(l), Err: argErr(ErrSyntax, "more than %d commands in one message", MaxCommands)}
		}
		if err := checkText(l); err != nil {
			return nil, &CommandError{Line: i + 1, Verb: verbOf(l), Err: err}
		}
		verb, args := l[1:], ""
		if j := strings.IndexFunc(verb, unicode.IsSpace); j >= 0 {
			verb, args = verb[:j], verb[j:]
		}
		if !validVerb(verb) { // ASCII only: no Unicode case folding into a verb
			return nil, &CommandError{Line: i + 1, Verb: verb, Err: argErr(ErrUnknownCommand, "not a command; send /help for the list")}
		}
		verb = strings.ToLower(verb)
		cmd := Line{N: i + 1, Verb: verb, Args: strings.TrimSpace(args)}
		i++
		if f := strings.Fields(cmd.Args); len(f) > 0 {
			if m := heredoc.FindStringSubmatch(f[len(f)-1]); m != nil {
				cmd.Doc = true
				cmd.Args = strings.TrimSpace(strings.TrimSuffix(cmd.Args, f[len(f)-1]))
				var body []string
				closed := false
				for ; i < len(lines); i++ {
					if strings.TrimSpace(lines[i]) == m[1] {
						closed = true
						i++
						break
					}
					if err := checkText(lines[i]); err != nil {
						return nil, &CommandError{Line: i + 1, Verb: verb, Err: err}
					}
					body = append(body, lines[i])
				}
				if !closed {
					return nil, &CommandError{Line: cmd.N, Verb: verb, Err: argErr(ErrSyntax, "here-document <<%s not closed: end it with a line %s", m[1], m[1])}
				}
				cmd.Value = canonicalBody(body)
				if len(cmd.Value) > MaxValueBytes {
					return nil, &CommandError{Line: cmd.N, Verb: verb, Err: argErr(ErrSyntax, "value longer than %d bytes", MaxValueBytes)}
				}
			}
		}
		out = append(out, cmd)
	}
	return out, nil
}

// canonicalBody trims trailing white space from each line and drops blank
// lines at both ends.
func canonicalBody(lines []string) string {
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	for len(lines) > 0 && isBlank(lines[0]) {
		lines = lines[1:]
	}
	for len(lines) > 0 && isBlank(lines[len(lines)-1]) {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}

func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

func verbOf(l string) string {
	v := strings.TrimPrefix(l, "/")
	if i := strings.IndexFunc(v, unicode.IsSpace); i >= 0 {
		v = v[:i]
	}
	if len(v) > 32 || !utf8.ValidString(v) {
		v = "?"
	}
	return strings.ToLower(v)
}

func validVerb(v string) bool {
	if v == "" || len(v) > 32 {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// checkText refuses invalid UTF-8 and control characters other than tab.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return argErr(ErrSyntax, "invalid UTF-8")
	}
	for _, r := range s {
		if r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029') {
			return argErr(ErrSyntax, "control character %U", r)
		}
	}
	return nil
}
