// Package smtpd is embargo's inbound SMTP and LMTP listener.
//
// It speaks the protocol on top of github.com/emersion/go-smtp and knows nothing of
// incidents or lists. Each recipient is offered to a [Handler] at RCPT TO; each message
// is handed over once, complete and checked, after the final dot or BDAT LAST; and the
// client gets 250 only after the Handler has stored the message durably (RFC 5321 §6.1:
// a 250 transfers responsibility for the message).
//
// # What smtpd adds to go-smtp
//
// go-smtp is a correct protocol engine with permissive defaults (docs/threats.md §0).
// smtpd closes these gaps:
//
//   - Bare CR and bare LF reach Session.Data unchanged, in DATA and in BDAT chunks. smtpd
//     rejects any CR not followed by LF and any LF not preceded by CR with 550 5.5.2
//     instead of normalising, which defeats SMTP smuggling (threats.md B1).
//   - go-smtp's address parser strips source routes and unquotes local parts. smtpd
//     re-parses every recipient strictly and refuses anything but a plain
//     dot-atom@domain with 550 5.1.1 before the Handler sees it (threats.md B3).
//   - A plain error returned to go-smtp after DATA becomes a permanent 554 carrying the
//     error text. smtpd turns every error into a reply in one function (reply.go):
//     policy refusals keep their code, everything else becomes 451 4.3.0 with generic
//     text, and the details go to the log only (threats.md A1, B4).
//   - go-smtp has no connection caps, counts nobody until EHLO and has no session
//     lifetime or error limit. smtpd wraps the listener (threats.md B7).
//   - More than MaxReceived Received fields are refused as a mail loop (threats.md B9).
//
// # Standards
//
//   - RFC 5321 (SMTP): §3.1 (421 at connection open), §3.3 and §4.1.1.4 (transaction,
//     DATA), §3.6.1 (source routes), §4.1.2 (path syntax), §4.2.2 and §4.3.2 (reply codes
//     per command), §4.5.2 (transparency), §4.5.3.1 (size limits), §4.5.3.2 (timeouts),
//     §6.1 (reliable delivery), §6.3 (loop detection).
//   - RFC 5322 §2.3 (CR and LF occur only together as CRLF), §3.2.3 (atext, dot-atom),
//     §3.6.7 (Received trace fields).
//   - RFC 3030 (CHUNKING, BDAT), RFC 1870 (SIZE), RFC 2920 (PIPELINING), RFC 6152
//     (8BITMIME), RFC 6531 (SMTPUTF8), RFC 9422 (LIMITS), as advertised by go-smtp.
//   - RFC 3207 (STARTTLS): buffered plaintext is discarded at the handshake.
//   - RFC 2033 (LMTP): one reply per recipient after the final dot.
//   - RFC 2034 and RFC 3463 (enhanced status codes).
//   - RFC 3696 §2 (a top-level domain is never all-numeric).
//
// # Replies chosen by smtpd
//
//	550 5.1.1  recipient refused by syntax (same reply as an unknown one: no oracle)
//	553 5.1.7  MAIL FROM syntax refused (RFC 5321 §4.3.2 allows 553 for MAIL)
//	503 5.5.1  a second MAIL inside a transaction (RFC 5321 §4.1.4)
//	552 5.3.4  message larger than MaxMessageBytes (also SIZE= on MAIL, from go-smtp)
//	452 4.5.3  more than MaxRecipients (from go-smtp)
//	550 5.5.2  bare CR or bare LF in the message
//	554 5.4.6  more than MaxReceived Received fields
//	500 5.4.0  a line longer than MaxLineLength (go-smtp's own code for it)
//	451 4.3.0  any other error: generic text with the session ID, details in the log
//	451 4.4.5  the Handler ran out of time (context.DeadlineExceeded)
//	421 4.4.2  timeout inside DATA or BDAT, or session lifetime over
//	421 4.4.0  connection error inside DATA or BDAT
//	421 4.7.0  too many connections, or MaxErrors refusals; then the connection closes
//
// go-smtp itself answers commands out of sequence (DATA or RCPT before MAIL or RCPT)
// with 502 5.5.1 where RFC 5321 §4.2.2 suggests 503, and VRFY with 252 2.5.0.
//
// # go-smtp behaviours worked around or noted (v0.25.1)
//
//   - A read error inside a BDAT chunk is answered "554 5.0.0 Error: transaction
//     failed: <error text>". smtpd's connection wrapper turns read errors into 421
//     replies while a message is being received (listener.go conn.Read).
//   - "BDAT n LAST" followed by fewer than n bytes and a close is taken as complete
//     (io.Copy treats the early EOF as the end). smtpd does not hand over a BDAT
//     message once the client has closed its side (session.go deliver).
//   - The DATA reader drops "." and the CR after it at the start of a line when no LF
//     follows (state stateDotCR; net/textproto keeps the CR). So "CRLF . CR X" arrives
//     as "CRLF X": the bare CR is gone before smtpd can see it. The message still
//     arrives as one message, ended only by CRLF.CRLF; BDAT is not affected.
//   - After closing a connection for too many protocol errors, go-smtp still runs the
//     commands it had buffered, with a nil session; it recovers the resulting panic.
//   - The line limit is lifted only for chunk bytes read after the BDAT command line;
//     bytes that arrived in the same read are checked, giving 500 5.4.0.
package smtpd
