package workflow

import (
	"errors"
	"fmt"
)

// Sentinel errors, grouped by phase. Tests and callers match them with
// errors.Is; the message a member reads is the wrapping error's.
var (
	// Lexing and parsing.
	ErrSyntax         = errors.New("workflow: command syntax")
	ErrUnknownCommand = errors.New("workflow: unknown command")
	ErrBadCVSS        = errors.New("workflow: bad CVSS vector")
	ErrBadSeverity    = errors.New("workflow: bad severity")
	ErrBadDate        = errors.New("workflow: bad date")
	ErrBadAddress     = errors.New("workflow: bad address")
	ErrBadCVE         = errors.New("workflow: bad CVE ID")

	// Authentication and authorisation: the whole message is refused.
	ErrStaleSignature  = errors.New("workflow: signature too old")
	ErrFutureSignature = errors.New("workflow: signature from the future")
	ErrOtherIncident   = errors.New("workflow: signed text names another incident")
	ErrNotAllowed      = errors.New("workflow: not allowed")
	ErrScope           = errors.New("workflow: command in the wrong place")

	// Guards: the command is well formed but the incident's state refuses it.
	ErrPhase      = errors.New("workflow: wrong phase")
	ErrGuard      = errors.New("workflow: precondition not met")
	ErrLocked     = errors.New("workflow: advisory approved and locked")
	ErrPast       = errors.New("workflow: date in the past")
	ErrNoticeRule = errors.New("workflow: less than 7 days after the distributor notice")
	ErrTrack      = errors.New("workflow: ruled out by the disclosure track")
)

// argError is an error whose text is meant for the member who wrote the
// command ("base metric AV missing"), classified by a sentinel.
type argError struct {
	kind error
	msg  string
}

func (e *argError) Error() string { return e.msg }
func (e *argError) Unwrap() error { return e.kind }

func argErr(kind error, format string, a ...any) error {
	return &argError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// Explain is an error whose text is meant for the member (a sentence that
// says what is wrong and how to write it), classified by the sentinel kind
// for errors.Is: the same shape for every pure core that answers members
// (lists/governance too).
func Explain(kind error, format string, a ...any) error { return argErr(kind, format, a...) }

// CommandError reports the command line that made a message fail, and shows a
// correct example of the command when there is one:
//
//	line 3: /cvss: base metric AV missing; example: /cvss CVSS:3.1/AV:N/…
type CommandError struct {
	Line    int    // 1-based line of the command in the message text
	Verb    string // as written, without the slash
	Err     error
	Example string // a correct use of the command, from the command table
}

func (e *CommandError) Error() string {
	s := fmt.Sprintf("line %d: /%s: %v", e.Line, e.Verb, e.Err)
	if e.Example != "" {
		s += "; example: " + e.Example
	}
	return s
}

func (e *CommandError) Unwrap() error { return e.Err }
