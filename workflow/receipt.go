package workflow

import (
	"fmt"
	"strings"
	"time"
)

// Receipt tells the signer what became of each command of a message. The
// caller signs, encrypts and sends its Text; the quoted command lines start
// with "> ", so the receipt can never be taken for commands (docs/threat-model.md E5).
type Receipt struct {
	Incident ID
	Signer   string    // the signer's address
	At       time.Time // when the message was processed
	Applied  bool
	Refused  string // why nothing was applied; "" when Applied
	Lines    []ReceiptLine
}

// ReceiptLine is the outcome of one command.
type ReceiptLine struct {
	Line    int    // in the signed text
	Command string // canonical form
	Result  string // what changed, dates as absolute UTC instants; "" if not reached or failed
	Err     string // why the command failed
	// Pending marks an irreversible command that waits for more SRC
	// signatures (the two-person rule): its signature was recorded, nothing
	// else happened.
	Pending bool
}

// Text renders the receipt body.
func (r Receipt) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Commands for %s", r.Incident)
	if r.Signer != "" {
		fmt.Fprintf(&b, ", signed by %s", r.Signer)
	}
	fmt.Fprintf(&b, ", processed %s.\n", FormatInstant(r.At))
	for _, l := range r.Lines {
		b.WriteString("\n")
		for _, q := range strings.Split(l.Command, "\n") {
			b.WriteString(strings.TrimRight("> "+q, " ") + "\n")
		}
		switch {
		case l.Err != "":
			fmt.Fprintf(&b, "error (line %d): %s\n", l.Line, l.Err)
		case r.Applied && l.Pending:
			fmt.Fprintf(&b, "pending: %s\n", l.Result)
		case r.Applied:
			fmt.Fprintf(&b, "ok: %s\n", l.Result)
		default:
			b.WriteString("not applied\n")
		}
	}
	b.WriteString("\n")
	pending := 0
	for _, l := range r.Lines {
		if l.Pending {
			pending++
		}
	}
	if r.Applied && pending > 0 {
		fmt.Fprintf(&b, "Applied, except the %d command(s) marked pending: they wait for more SRC signatures, and nothing of them has happened yet.\n", pending)
		return b.String()
	}
	if r.Applied {
		if len(r.Lines) == 1 {
			b.WriteString("The command was applied.\n")
		} else {
			fmt.Fprintf(&b, "All %d commands were applied.\n", len(r.Lines))
		}
		return b.String()
	}
	fmt.Fprintf(&b, "Nothing was applied: %s\nCommands apply all together or not at all; send them again, corrected and freshly signed.\n", r.Refused)
	return b.String()
}
