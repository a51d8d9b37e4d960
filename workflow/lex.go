package workflow

import (
	"errors"
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

// forwardMarker matches the line a mail client puts above a message it
// forwards or quotes without ">" marks (Thunderbird "-------- Forwarded
// Message --------", Gmail "---------- Forwarded message ---------", Outlook
// "-----Original Message-----", Apple Mail "Begin forwarded message:"):
// what follows is someone else's text, as if quoted.
var forwardMarker = regexp.MustCompile(`(?i)^\s*(-{2,}\s*(original|forwarded)\s+message\s*-{2,}|begin forwarded message:)\s*$`)

// ErrCommandBlocks classifies the error of a message with more than one
// command block: which one was meant is not guessed.
var ErrCommandBlocks = errors.New("workflow: more than one command block")

// Extract finds the command block of a message text (the verified text/plain,
// format=flowed already decoded) and lexes it (docs/design.md §3,
// docs/threat-model.md E5).
//
// The command block is the first paragraph that starts with a command line
// ("/" at column 0) outside quoted text: at the top of the text, or below the
// quoted text of a reply, or after prose and a blank line. A paragraph starts
// at the top of the text, after a blank line or after quoted (">") text. The
// block ends at the first blank line, quoted line or signature separator
// ("-- ", or "--" once a mail client stripped the space) after a command.
// Quoted text never counts, and neither does anything after the signature
// separator or after a line that introduces a forwarded or original message
// without quote marks ("-------- Forwarded Message --------", "-----Original
// Message-----", "Begin forwarded message:"). A "/" line in the middle of a
// prose paragraph is prose. A text with no such paragraph has no commands.
// Two command blocks are an error that names both lines: put all commands in
// one block. Lines end in LF or CRLF.
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
// lines, "/", ">" and "-- " lines too. Trailing white space on each line and
// blank lines at either end of the body are dropped.
//
// Errors (a *CommandError) name the line: a command line that is not a
// command, text right after a command (a line wrapped by a mail client, or a
// missing blank line: rejecting it is safer than silently dropping half a
// value), an unclosed here-document, control characters, invalid UTF-8, more
// than MaxCommands commands, or a second command block (ErrCommandBlocks).
func Extract(text string) ([]Line, error) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	starts := blockStarts(lines)
	switch len(starts) {
	case 0:
		return nil, nil
	case 1:
		return lexBlock(lines, starts[0])
	}
	first, second := starts[0]+1, starts[1]+1
	return nil, &CommandError{Line: second, Verb: verbOf(lines[starts[1]]), Err: argErr(ErrCommandBlocks,
		"two command blocks: lines %d and %d; put all commands in one block", first, second)}
}

// blockStarts returns the index of the first line of every command block,
// in order: "/" lines that start a paragraph outside quoted text, before
// the signature and any forwarded message. Here-document bodies are skipped
// as the lexer reads them, so a "/" or blank line inside one is text.
func blockStarts(lines []string) []int {
	var starts []int
	paraStart := true
	for i := 0; i < len(lines); {
		l := lines[i]
		switch {
		case isSignature(l) || forwardMarker.MatchString(l):
			return starts
		case isBlank(l) || isQuoted(l):
			paraStart = true
			i++
		case paraStart && strings.HasPrefix(l, "/"):
			starts = append(starts, i)
			i = skipBlock(lines, i)
			paraStart = false
		default:
			paraStart = false
			i++
		}
	}
	return starts
}

// skipBlock returns the index of the first line after the command lines and
// here-documents that start at lines[i].
func skipBlock(lines []string, i int) int {
	for i < len(lines) && strings.HasPrefix(lines[i], "/") {
		_, args := splitCommand(lines[i])
		i++
		if delim, _, ok := heredocOf(args); ok {
			for i < len(lines) && strings.TrimSpace(lines[i]) != delim {
				i++
			}
			i++ // the delimiter line
		}
	}
	return i
}

func isQuoted(l string) bool    { return strings.HasPrefix(l, ">") }
func isSignature(l string) bool { return l == "-- " || l == "--" }

// splitCommand splits a command line into its verb (as written) and the
// rest of the line.
func splitCommand(l string) (verb, args string) {
	verb = strings.TrimPrefix(l, "/")
	if j := strings.IndexFunc(verb, unicode.IsSpace); j >= 0 {
		verb, args = verb[:j], verb[j:]
	}
	return verb, args
}

// heredocOf reports whether args end with a here-document opener and
// returns its delimiter and the arguments before it.
func heredocOf(args string) (delim, rest string, ok bool) {
	f := strings.Fields(args)
	if len(f) == 0 {
		return "", "", false
	}
	m := heredoc.FindStringSubmatch(f[len(f)-1])
	if m == nil {
		return "", "", false
	}
	return m[1], strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(args), f[len(f)-1])), true
}

// lexBlock lexes the command block that starts at lines[i].
func lexBlock(lines []string, i int) ([]Line, error) {
	var out []Line
	for i < len(lines) {
		l := lines[i]
		if !strings.HasPrefix(l, "/") {
			if isBlank(l) || isQuoted(l) || isSignature(l) || forwardMarker.MatchString(l) {
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
		verb, args := splitCommand(l)
		if !validVerb(verb) { // ASCII only: no Unicode case folding into a verb
			return nil, &CommandError{Line: i + 1, Verb: verb, Err: argErr(ErrUnknownCommand, "not a command; send /help for the list")}
		}
		verb = strings.ToLower(verb)
		cmd := Line{N: i + 1, Verb: verb, Args: strings.TrimSpace(args)}
		i++
		if delim, rest, ok := heredocOf(args); ok {
			cmd.Doc, cmd.Args = true, rest
			var body []string
			closed := false
			for ; i < len(lines); i++ {
				if strings.TrimSpace(lines[i]) == delim {
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
				return nil, &CommandError{Line: cmd.N, Verb: verb, Err: argErr(ErrSyntax, "here-document <<%s not closed: end it with a line %s", delim, delim)}
			}
			cmd.Value = canonicalBody(body)
			if len(cmd.Value) > MaxValueBytes {
				return nil, &CommandError{Line: cmd.N, Verb: verb, Err: argErr(ErrSyntax, "value longer than %d bytes", MaxValueBytes)}
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
