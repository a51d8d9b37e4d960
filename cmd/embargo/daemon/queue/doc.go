// Package queue is embargo's one persistent outbound queue: the rows in bbolt,
// the worker that delivers them, and the relays that take them to the next hop
// (an SMTP smarthost, a local MTA, or a Maildir in development).
//
// # Rows are written in the caller's transaction
//
// Every outgoing mail (an acknowledgement to a reporter, a copy to a committee
// member, an alert) is a row that Enqueue writes inside the caller's bbolt
// write transaction. An inbound message, the incident change it causes and
// all the mail it triggers therefore commit together, and the SMTP server
// answers 250 only after that commit (RFC 5321 §6.1: a 250 means we are now
// responsible for the message; docs/threat-model.md A1, A2). A rolled-back
// transaction leaves no row, so no notice ever goes out about a change that
// did not happen. The worker reads committed rows only.
//
// # Delivery is at-least-once
//
// The worker claims due rows (state "sending", attempt counted, committed),
// hands each to the relay with no transaction open, and records the outcome
// after the relay's answer: delivered rows are deleted, refused recipients
// are failed, the rest wait for their next attempt. The same model as
// Postfix and qmail: write, sync, publish, reply, and cross off each
// recipient only after its delivery (docs/threat-model.md §0.9).
//
// One goroutine writes: each turn it commits, in one transaction, the
// outcomes that came back since the last turn and the claim of the rows due
// now. Under load one commit (two fsyncs) serves many rows, where a commit
// per row would bound the drain at a few hundred rows a second; a lone row
// still waits for one commit only, with no timer (a group commit, like the
// one bbolt's own Batch makes with a delay we do not want).
//
// A crash after the relay's 250 but before the outcome is committed leaves
// the row in "sending"; the next start sends it again, once, with the same
// bytes and so the same Message-ID, by which a recipient (or a filter) can
// recognise the duplicate, and its attempt counted. Options.MaxClaimed
// bounds the rows in "sending" at any instant, and so the copies one crash
// can send again (DefaultMaxClaimed, 64). Exactly-once is not promised: no
// SMTP client can, because the 250 and our commit cannot be one atomic step
// (docs/threat-model.md §3, promise 3). What is promised is that no row is
// silently dropped: each is retried until it is delivered, refused
// permanently, or expired, and the last two call Options.Failed inside the
// same transaction so the committee is alerted.
//
// # Shared bodies and sealing at delivery
//
// A row's message is its Data, or Data followed by a Body that several rows
// share, or what Options.Sealer makes of a Body and a Seal spec. The copies
// of one report to six members are six rows over one stored body: the
// store holds it once, in 64 KiB chunks (a large value beside others makes
// bbolt rewrite them on every change to their leaf), counts the rows that
// use it, and deletes it with the last of them (delivered, or failed and
// dropped; a failed row keeps it for `queue retry`). An encrypted copy is queued as a spec (the key to encrypt to,
// the list that signs, the outer and the protected header, hence a fixed
// Message-ID) and sealed when it is delivered, outside any transaction, so
// that the caller's write transaction does no cryptography and the store
// holds no per-member ciphertext. A spec that cannot be sealed at delivery
// (its key removed or expired meanwhile) fails the row with an alert; it
// never turns into a plaintext message.
//
// Memory per delivery is bounded: the body is read a chunk at a time, each
// in a short View, and the worker starts deliveries only while the sizes
// in flight stay under Options.MaxInflightBytes (one large row at a time at
// the default), each holding about three times its size at its peak.
//
// # Retries
//
// A temporary failure (a 4xx reply, a refused or broken connection, a missing
// STARTTLS, a certificate that does not verify) reschedules the row after an
// exponential backoff with jitter, from Options.MinBackoff to MaxBackoff. A
// 5xx to MAIL, RCPT or DATA is permanent and fails the row (or the refused
// recipients of it) at once. RFC 5321 §4.5.4.1 asks for retries until a
// give-up time of at least 4-5 days; Options.Lifetime defaults to 5 days, as
// Postfix's maximal_queue_lifetime, after which the row fails as "expired".
// Its intervals (30 minutes or more) concern the long haul to a remote MX,
// which our smarthost does; we retry our own next hop sooner.
//
// # Schedule
//
// The schedule lives in bbolt: an index bucket keyed by NextAttempt and ID
// makes "what is due" a cursor walk from the start. The worker keeps one timer
// set to the earliest NextAttempt and is kicked after each commit that adds
// rows (mjl-/mox queue/queue.go does the same), so a restart needs no
// catch-up and loses no retry.
//
// # Relays
//
// NewRelay builds a relay from a URL: smtp:// (loopback only), smtp+starttls://
// (STARTTLS mandatory, certificate and host name verified, AUTH PLAIN only
// after TLS), smtps:// (implicit TLS, RFC 8314) and maildir:///path. Messages
// must already be canonical (CRLF line ends, no bare CR or LF): the queue does
// not rewrite them, and refuses to send one that is not (docs/threat-model.md B2).
//
// The SMTP relays pipeline commands when the relay offers it (RFC 2920) and
// take a backlog in batches (BatchRelay) whose copies share writes, one
// round trip a copy. They keep the connections that ended a transaction
// cleanly and send the next messages over them (a drain costs a few
// handshakes, not one per copy); each delivery or batch in progress holds
// one, and an idle one is closed
// after a few seconds. The Maildir relay takes rows in batches
// (BatchRelay): a batch's files are synced together and its directory once,
// all before any of its rows is recorded as sent.
package queue
