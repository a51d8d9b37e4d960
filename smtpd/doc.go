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
// go-smtp is a correct protocol engine with permissive defaults (docs/threat-model.md §0).
// smtpd closes these gaps:
//
//   - Bare CR and bare LF reach Session.Data unchanged, in DATA and in BDAT chunks. smtpd
//     rejects any CR not followed by LF and any LF not preceded by CR with 550 5.5.2
//     instead of normalising, which defeats SMTP smuggling (docs/threat-model.md B1).
//     go-smtp's DATA reader drops the dot and the CR of "CRLF . CR x" itself; smtpd's
//     connection reader sees those bytes go by and refuses the message too.
//   - go-smtp's address parser strips source routes and unquotes local parts. smtpd
//     re-parses every recipient strictly and refuses anything but a plain
//     dot-atom@domain with 550 5.1.1 before the Handler sees it (docs/threat-model.md B3).
//   - A plain error returned to go-smtp after DATA becomes a permanent 554 carrying the
//     error text. smtpd turns every error into a reply in one function (reply.go):
//     policy refusals keep their code, everything else becomes 451 4.3.0 with generic
//     text, and the details go to the log only (docs/threat-model.md A1, B4).
//   - go-smtp has no connection caps, counts nobody until EHLO and has no session
//     lifetime or error limit. smtpd wraps the listener (docs/threat-model.md B7), and every
//     refusal it or the Handler makes counts towards MaxErrors, the 452 for too many
//     recipients included.
//   - go-smtp's only bound on a DATA transfer is ReadTimeout, set at the DATA line, so a
//     client trickling a byte a second holds its connection for all of it. smtpd's
//     connection holds a DATA or BDAT transfer to MinDataRate on average once
//     DataRateGrace has passed (datarate.go; docs/threat-model.md B7).
//   - More than MaxReceived Received fields are refused as a mail loop (docs/threat-model.md B9).
//   - A message without any header, MAIL FROM with AUTH= (no AUTH is offered), an EHLO
//     name with control characters and, in BDAT, a line over MaxLineLength are refused.
//     Replies in plain text never carry a control character.
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
//	555 5.5.4  MAIL FROM parameter AUTH= (RFC 5321 §4.1.1.11; AUTH is not offered)
//	501 5.5.2  HELO/EHLO name with control characters (a repeated EHLO: 421 4.5.2 and close)
//	503 5.5.1  a second MAIL inside a transaction (RFC 5321 §4.1.4)
//	552 5.3.4  message larger than MaxMessageBytes (also SIZE= on MAIL, from go-smtp)
//	452 4.5.3  more than MaxRecipients (RFC 5321 §4.5.3.1.10)
//	452 4.3.1  MAIL while FreeSpace reports less than MinFreeBytes or 1.5 × SIZE= free
//	550 5.5.2  bare CR or bare LF in the message, or "CRLF . CR x" in DATA
//	554 5.6.0  a message with no header at all (RFC 5322 §3.6)
//	554 5.4.6  more than MaxReceived Received fields
//	500 5.4.0  a line longer than MaxLineLength (go-smtp's own code for it)
//	451 4.3.0  any other error: generic text with the session ID, details in the log
//	451 4.4.5  the Handler ran out of time (context.DeadlineExceeded)
//	421 4.4.2  read timeout (waiting for a command, inside DATA or BDAT, or a command
//	           line without CRLF), DATA or BDAT below MinDataRate, or session lifetime
//	           over; then the connection closes
//	421 4.4.0  connection error inside DATA or BDAT
//	421 4.7.0  too many connections, or MaxErrors refusals; then the connection closes
//
// Every refusal counts towards MaxErrors. A closing reply is followed by FIN, then
// smtpd drops what the client still sends for up to 2 s before it closes, so that
// the reply is not lost to a TCP reset (conn.shutdown).
//
// go-smtp itself answers commands out of sequence (DATA or RCPT before MAIL or RCPT)
// with 502 5.5.1 where RFC 5321 §4.2.2 suggests 503, and VRFY with 252 2.5.0.
//
// # go-smtp behaviours worked around or noted (v0.26.0)
//
// go-smtp v0.26.0 changes none of these; smtpd guards them.
//
//   - A BDAT transfer cut off by RSET, a new EHLO or STARTTLS leaves its Session.Data
//     goroutine running, and when Data returns, go-smtp sends its result to the
//     connection's current dataResult channel: the next transaction's BDAT LAST could
//     be answered with the old transfer's 451 while its own message was stored, and
//     the race detector flags the field (conn.go handleBdat). smtpd ends that goroutine
//     with runtime.Goexit before the send (session.go abandonTransfer). Left over: for
//     LMTP, the goroutine reads c.bdatStatus when it starts, which races with RSET if
//     the first chunk was empty ("BDAT 0"); smtpd cannot reach that read.
//   - bufio hands over a partial line without the read error, so go-smtp ran a command
//     line without CRLF at the read timeout and waited a new timeout. smtpd's
//     connection finishes at the first timeout: the session refuses everything, the
//     reply says why, the connection closes (conn.go readFailed).
//   - The DATA reader drops "." and the CR after it at the start of a line when no LF
//     follows (state stateDotCR; net/textproto keeps the CR). smtpd's connection hands
//     go-smtp one line per read, so go-smtp never holds bytes of a message before Data
//     runs, and refuses a message whose raw bytes held the sequence. After STARTTLS the
//     connection sees ciphertext: there the message is still one message, ended only
//     by CRLF.CRLF, with ".CR" missing (TestSmugglingOverTLS). The same holds for the
//     other plain-text guards: over TLS, replies are not cleaned (go-smtp still echoes
//     at most the 4 bytes of an unknown command word), and go-smtp's reply to a
//     partial line goes out before the close (the session still refuses it).
//   - A read error inside a BDAT chunk is answered "554 5.0.0 Error: transaction
//     failed: <error text>". smtpd's connection wrapper turns read errors into 421
//     replies while a message is being received (conn.go readSocket).
//   - "BDAT n LAST" followed by fewer than n bytes and a close is taken as complete
//     (io.Copy treats the early EOF as the end). smtpd does not hand over a BDAT
//     message once the client has closed its side (session.go deliver).
//   - MaxRecipients' 452 is written before the session is asked, so smtpd enforces the
//     limit itself (and LIMITS RCPTMAX is no longer advertised).
//   - MAIL FROM AUTH= is parsed whether or not AUTH is offered; EHLO names and unknown
//     command words are echoed in replies as received.
//   - After closing a connection for too many protocol errors, go-smtp still runs the
//     commands it had buffered, with a nil session; it recovers the resulting panic.
//   - The line limit is lifted while a BDAT chunk is copied.
//   - RCPT TO:<Postmaster> arrives as "Postmaster" without a domain (new in v0.26.0)
//     and is refused by the strict parser like any address without "@".
package smtpd
