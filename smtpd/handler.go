package smtpd

import "context"

// Handler is implemented by the domain layer, which satisfies it structurally without
// importing smtpd. Its methods may be called concurrently from many sessions.
//
// A returned error chooses the reply (see reply.go): an error anywhere in whose chain
// (errors.As) a value has the method SMTPStatus() (code int, enhanced string) is a
// deliberate refusal and is answered with that code and its Error() text, cleaned of
// control characters. Any other error is answered 451 4.3.0 with generic text, so the
// client retries and learns nothing of the cause.
type Handler interface {
	// Recipient is called at RCPT TO with the strictly re-parsed address: the local
	// part as the client gave it, the domain lower-cased. from is the reverse-path, ""
	// for the null sender. nil accepts the recipient. Accepted(ctx) holds the
	// recipients the transaction accepted before this one, so that a Handler can
	// refuse one that cannot share a transaction with them (a 452 makes the client
	// send it in another, RFC 5321 §4.5.3.1.10).
	Recipient(ctx context.Context, from, rcpt string) error

	// Handle is called once per message after the final dot (or BDAT LAST) with the
	// envelope and the complete raw message: CRLF line ends only, no bare CR or LF, at
	// most MaxMessageBytes. msg is not retained by smtpd; Handle may keep it. Handle
	// returns nil only after the message is durably stored; then the client gets 250.
	Handle(ctx context.Context, env Envelope, msg []byte) error
}

// Envelope is the SMTP envelope of one message. It is a copy: Handle may keep it.
type Envelope struct {
	// From is the reverse-path from MAIL FROM, "" for the null sender <>.
	From string
	// To holds the accepted recipients in RCPT order, normalised as passed to
	// Handler.Recipient, without duplicates.
	To []string
	// RemoteAddr is the client's network address.
	RemoteAddr string
	// Helo is the name the client gave in HELO, EHLO or LHLO. It is unverified.
	Helo string
	// SMTPUTF8 is true when MAIL FROM carried the SMTPUTF8 parameter (RFC 6531).
	SMTPUTF8 bool
	// SessionID names the connection in smtpd's log lines and in its 451 replies.
	SessionID string
}

// acceptedKey is the context key of Accepted.
type acceptedKey struct{}

// Accepted returns the recipients accepted so far in the transaction whose RCPT
// the Handler.Recipient call with ctx is judging, in RCPT order, normalised and
// without duplicates; nil outside such a call. The slice is the caller's copy.
func Accepted(ctx context.Context) []string {
	to, _ := ctx.Value(acceptedKey{}).([]string)
	return to
}
