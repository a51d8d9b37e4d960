package smtpd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// statusError is what the domain layer returns to refuse on purpose. It is matched with
// errors.As anywhere in the chain, so a Handler may wrap it with context.
type statusError interface {
	error
	SMTPStatus() (code int, enhanced string)
}

// replyError is one of smtpd's own conditions. Its text is fixed and safe to send.
// It deliberately has no SMTPStatus method: its Error() carries the package prefix for
// logs, and the client gets text instead.
type replyError struct {
	code     int
	enhanced smtp.EnhancedCode
	text     string
}

func (e *replyError) Error() string { return "smtpd: " + strings.ToLower(e.text) }

func (e *replyError) reply() *smtp.SMTPError {
	return &smtp.SMTPError{Code: e.code, EnhancedCode: e.enhanced, Message: e.text}
}

// smtpd's own conditions. Codes from RFC 5321 §4.2.2/§4.3.2, enhanced codes from RFC 3463.
var (
	// Syntax tricks get the same reply as an unknown recipient, so probing the parser
	// tells an attacker nothing (RFC 3463 X.1.1: bad destination mailbox address).
	errNoSuchRecipient = &replyError{550, smtp.EnhancedCode{5, 1, 1}, "No such recipient here"}
	// RFC 5321 §4.3.2 lists 553 for MAIL; RFC 3463 X.1.7: bad sender's mailbox syntax.
	errBadSender = &replyError{553, smtp.EnhancedCode{5, 1, 7}, "Sender address not accepted: expected local-part@domain without quotes"}
	// RFC 5321 §4.1.4: out of order; RFC 3463 X.5.1: invalid command.
	errNestedMail = &replyError{503, smtp.EnhancedCode{5, 5, 1}, "Nested MAIL command"}
	// RFC 3463 X.3.4: message too big for system. Same as go-smtp's ErrDataTooLarge.
	errTooLarge = &replyError{552, smtp.EnhancedCode{5, 3, 4}, "Maximum message size exceeded"}
	// RFC 5322 §2.3: CR and LF occur only together. §2.3 is written without the section
	// sign because reply text must be ASCII (RFC 5321 §4.2).
	errBareLineEnd = &replyError{550, smtp.EnhancedCode{5, 5, 2}, "Message contains a bare CR or LF; lines must end in CRLF (RFC 5322 section 2.3)"}
	// RFC 5321 §6.3 loop detection by counting Received fields; RFC 3463 X.4.6 routing loop.
	errLoop = &replyError{554, smtp.EnhancedCode{5, 4, 6}, "Too many Received headers: mail loop?"}
	// go-smtp answers an overlong command line with 500 5.4.0 and closes; a line in
	// DATA or BDAT gets the same code so all paths agree.
	errLineTooLong = &replyError{500, smtp.EnhancedCode{5, 4, 0}, "Line too long"}
	// RFC 5321 §4.5.3.1.10: too many recipients is a temporary 452, RFC 3463 X.5.3.
	// smtpd enforces MaxRecipients itself so that the refusal counts towards MaxErrors.
	errTooManyRecipients = &replyError{452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients; send the others in another transaction"}
	// Postfix's reply at MAIL when its queue file system is short of queue_minfree:
	// RFC 5321 §4.5.3.1.10 and §4.2.2 (452, insufficient system storage), RFC 3463
	// X.3.1 (mail system full). Temporary, so the client keeps the message and retries.
	errInsufficientStorage = &replyError{452, smtp.EnhancedCode{4, 3, 1}, "Insufficient system storage, please try again later"}
	// Too many message bytes in memory at once (inflight.go; docs/threat-model.md C1):
	// at MAIL for a SIZE= that does not fit (RFC 1870 §6.1), after the final dot for
	// a message that outgrew what was left (RFC 5321 §4.3.2 lists 452 for DATA).
	// RFC 3463 X.3.1, mail system full. Temporary: the client keeps it and retries.
	errInflight = &replyError{452, smtp.EnhancedCode{4, 3, 1}, "Insufficient system storage: too many messages in transfer at once, please try again later"}
	// RFC 5321 §4.1.1.11: a MAIL parameter of an extension not offered gets 555; AUTH
	// (RFC 4954 §5) is never offered on this listener. RFC 3463 X.5.4: bad arguments.
	errAuthParam = &replyError{555, smtp.EnhancedCode{5, 5, 4}, "MAIL FROM parameter AUTH not recognised: this server offers no AUTH"}
	// RFC 5321 §4.1.1.1: the EHLO argument is a domain or an address literal, so a
	// control character is a syntax error (RFC 3463 X.5.2). Never echoed.
	errBadHelo = &replyError{501, smtp.EnhancedCode{5, 5, 2}, "HELO/EHLO name must be a domain or address literal without control characters"}
	// A repeated EHLO is answered by go-smtp with the name in it before smtpd can
	// refuse, so smtpd closes the connection instead (RFC 5321 §3.8 allows 421 only).
	errBadHeloClosing = &replyError{421, smtp.EnhancedCode{4, 5, 2}, "HELO/EHLO name must be a domain or address literal without control characters, closing connection"}
	// RFC 5322 §3.6: a message has at least the From and Date header fields; one with
	// no header at all is no message. RFC 3463 X.6.0: other media error.
	errNoHeader = &replyError{554, smtp.EnhancedCode{5, 6, 0}, "Message has no header; it must start with header fields such as From and Date (RFC 5322 section 3.6)"}
	// RFC 3463 X.4.2: bad connection. The connection closes after each of these.
	errTimeout     = &replyError{421, smtp.EnhancedCode{4, 4, 2}, "Timeout during message transfer, closing connection"}
	errIdleTimeout = &replyError{421, smtp.EnhancedCode{4, 4, 2}, "Timeout waiting for a command, closing connection"}
	// RFC 5321 §2.3.8: a command line ends with CRLF; one still open at the timeout or
	// at the client's EOF is not run.
	errPartialLine = &replyError{421, smtp.EnhancedCode{4, 4, 2}, "Command line not ended with CRLF, closing connection"}
	errLifetime    = &replyError{421, smtp.EnhancedCode{4, 4, 2}, "Session lifetime over, closing connection"}
	// A read failed during a message (reset, broken connection).
	errConnection = &replyError{421, smtp.EnhancedCode{4, 4, 0}, "Connection error during message transfer, closing connection"}
	// The transfer broke off (connection lost); the reply most likely goes nowhere, but
	// it must still be a temporary one. A BDAT transfer cut off by RSET gets no reply
	// at all (session.go abandonTransfer).
	errTransfer = &replyError{451, smtp.EnhancedCode{4, 4, 2}, "Message transfer failed, please try again"}
	// RFC 5321 §3.8 and §4.2.2: 421 announces that the server closes the channel.
	errTooManyErrors = &replyError{421, smtp.EnhancedCode{4, 7, 0}, "Too many errors, closing connection"}
)

// errTooSlow is the reply to a DATA or BDAT transfer that fell below the minimum data
// rate (datarate.go; docs/threat-model.md B7). RFC 3463 X.4.2, bad connection, as for
// the timeouts; RFC 5321 §3.8: 421, and the connection closes.
func errTooSlow(rate int64) *replyError {
	return &replyError{421, smtp.EnhancedCode{4, 4, 2},
		"Data arriving too slowly (below " + strconv.FormatInt(rate, 10) + " bytes/s), closing connection"}
}

// tooManyConnections is written by the listener before go-smtp sees the connection, in
// place of the 220 greeting (RFC 5321 §3.1 allows 421 at connection open).
const tooManyConnections = "421 4.7.0 Too many connections, try again later\r\n"

// maxReplyText caps human text so a reply line stays within RFC 5321 §4.5.3.1.5's 512
// octets, code, enhanced code and CRLF included.
const maxReplyText = 400

// reply converts any error into the reply go-smtp sends. It is the only place that
// builds replies from errors: go-smtp recognises only an unwrapped *smtp.SMTPError and
// sends anything else's text to the client, after DATA as a permanent 554 (conn.go
// writeError, dataErrorToStatus). Internal details go to log, never to the client.
// It returns nil for nil.
func reply(log *slog.Logger, sessionID string, err error) *smtp.SMTPError {
	if err == nil {
		return nil
	}

	var own *replyError
	if errors.As(err, &own) {
		return own.reply()
	}

	var st statusError
	if errors.As(err, &st) {
		code, enhanced := st.SMTPStatus()
		if r, ok := policyReply(code, enhanced, st.Error()); ok {
			log.Info("smtpd: refused by policy", "code", r.Code, "enhanced", enhanced, "err", err)
			return r
		}
		log.Error("smtpd: handler returned an invalid SMTP status; answering 451", "code", code, "enhanced", enhanced, "err", err)
		return internalReply(sessionID, smtp.EnhancedCode{4, 3, 0})
	}

	// go-smtp's own errors, from the data reader or a Handler that speaks go-smtp.
	if errors.Is(err, smtp.ErrDataTooLarge) {
		return errTooLarge.reply()
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if r, ok := policyReply(se.Code, formatEnhanced(se.EnhancedCode), se.Message); ok {
			return r
		}
	}

	// maddy's rule: a deadline is the system being slow, not the sender's fault
	// (RFC 3463 X.4.5: mail system congestion).
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("smtpd: handler timed out; answering 451 4.4.5", "err", err)
		return internalReply(sessionID, smtp.EnhancedCode{4, 4, 5})
	}

	log.Error("smtpd: internal error; answering 451 4.3.0", "err", err)
	return internalReply(sessionID, smtp.EnhancedCode{4, 3, 0})
}

// internalReply is temporary on purpose: a storage failure must make the sender retry,
// never bounce a report for good (docs/threat-model.md A1). RFC 3463 X.3.0: mail system status.
func internalReply(sessionID string, enhanced smtp.EnhancedCode) *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         451,
		EnhancedCode: enhanced,
		Message:      "Temporary local problem, please try again later (ref " + sessionID + ")",
	}
}

// policyReply validates a refusal chosen outside smtpd. Only 4xx and 5xx are replies to
// a refused command (RFC 5321 §4.2.1); an enhanced code whose class differs from the
// reply's is dropped so go-smtp derives X.0.0 (RFC 3463 §2: the classes must agree).
func policyReply(code int, enhanced, text string) (*smtp.SMTPError, bool) {
	if code < 400 || code > 599 {
		return nil, false
	}
	ec, ok := parseEnhanced(enhanced)
	if !ok || ec[0] != code/100 {
		ec = smtp.EnhancedCodeNotSet
	}
	text = sanitizeText(text)
	if text == "" {
		if code/100 == 4 {
			text = "Temporary failure, please try again later"
		} else {
			text = "Refused"
		}
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}, true
}

// parseEnhanced reads "class.subject.detail" (RFC 3463 §2: class 2, 4 or 5; subject and
// detail 1-3 digits).
func parseEnhanced(s string) (smtp.EnhancedCode, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, false
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		if len(p) == 0 || len(p) > 3 || (i == 0 && len(p) != 1) {
			return smtp.EnhancedCode{}, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p[0] == '+' {
			return smtp.EnhancedCode{}, false
		}
		ec[i] = n
	}
	if ec[0] != 2 && ec[0] != 4 && ec[0] != 5 {
		return smtp.EnhancedCode{}, false
	}
	return ec, true
}

// formatReplyLine writes one reply line as go-smtp does (conn.go writeResponse).
func formatReplyLine(code int, enhanced, text string) string {
	return strconv.Itoa(code) + " " + enhanced + " " + text + "\r\n"
}

func formatEnhanced(ec smtp.EnhancedCode) string {
	return strconv.Itoa(ec[0]) + "." + strconv.Itoa(ec[1]) + "." + strconv.Itoa(ec[2])
}

// sanitizeText makes text safe for one reply line. CR and LF would split the reply and
// let the text forge a second one (go-smtp #275, docs/threat-model.md B4); other controls and
// non-ASCII are not reply text either (RFC 5321 §4.2: textstring is HT and 32-126).
func sanitizeText(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if b.Len() >= maxReplyText {
			break
		}
		switch {
		case r == '\t' || r == '\r' || r == '\n' || r == ' ' || r < 0x20 || r == 0x7f:
			space = true
			continue
		case r > 0x7e:
			r = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// replyLine formats an smtpd reply as go-smtp would write it.
func replyLine(e *replyError) string {
	r := e.reply()
	return formatReplyLine(r.Code, formatEnhanced(r.EnhancedCode), r.Message)
}

// sanitizeReplyBytes returns b with every control character other than HT and a
// final CRLF replaced by '?'. It returns b itself when there is none.
func sanitizeReplyBytes(b []byte) []byte {
	body := b
	if bytes.HasSuffix(body, []byte("\r\n")) {
		body = body[:len(body)-2]
	}
	clean := true
	for _, ch := range body {
		if isControl(ch) {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, len(b))
	copy(out, b)
	for i, ch := range out[:len(body)] {
		if isControl(ch) {
			out[i] = '?'
		}
	}
	return out
}

func isControl(ch byte) bool { return ch < 0x20 && ch != '\t' || ch == 0x7f }
