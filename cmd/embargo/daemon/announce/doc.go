// Package announce runs the announce list: the public, output-only list of
// signed advisories (docs/design.md §4). It owns the subscribers, subscription
// by mail with double opt-in, and the fan-out of one release to every
// subscriber; daemon/listd routes the mail to it, daemon/web calls
// Unsubscribe for RFC 8058 one-click requests.
//
// # Subscribers
//
// One bbolt record per address (key: the address in lower case): state
// pending, active or disabled, when it subscribed, its bounce count. Active
// subscribers also sit in an index keyed by a sequence number assigned at
// each activation, so a release walks them in a stable order (the order
// they subscribed) with a cursor, whatever their number.
//
// # Subscription by mail
//
// A mail to announce+subscribe@ or announce+unsubscribe@ is answered with a
// confirmation that asks for a reply: its Reply-To is
// announce+confirm-<token>@. The token is 128 bits from crypto/rand, stored
// only as a SHA-256 hash that includes its action, bound to the address it
// was sent to, used once, valid 48 hours (docs/threat-model.md F1). The confirmation
// is the same whether or not the address is subscribed, so neither the
// answer nor its absence says anything about the list (F3), and at most
// three go to one address a day (F2). Confirmations and the result mails
// come from the null sender with Auto-Submitted: auto-replied (RFC 3834);
// automatic mail never gets one and never confirms anything.
//
// # Subscribers by the operator
//
// Import and Add put addresses on the list without a confirmation: the
// operator vouches that they opted in to the list they come from
// (ParseListing reads a Mailman 3 members listing or a Google Groups member
// export). Each address new to the list gets one notice, signed by the list
// key, saying where advisories now come from and how to leave, with its own
// one-click URI when OneClick is on; it is never asked to confirm, and an
// address already active gets nothing, so an import can be run again.
// Addresses that left (one-click, a confirmed unsubscribe, an operator's
// Remove) are remembered as a SHA-256 of the address key, never the
// address, so that an import does not bring them back; Add does, and so
// does a subscription the address confirms itself.
//
// # Releases
//
// StartRelease stores one release: the advisory, already PGP/MIME-signed
// with the announce key, stored once. At T the Fanout checks the signature
// and sets the list fields in the outer header (List-Id, RFC 2919;
// List-Unsubscribe, List-Post: NO, RFC 2369; Precedence: list; X-Loop):
// the signature covers only the first body part (RFC 3156 §5), so the outer
// header can change without signing again. It then walks the subscribers
// active at that moment in batches of BatchSize, Connections batches at
// once: each connection sends its batch (one SMTP transaction with that
// many RCPTs, or with OneClick one transaction per subscriber) and one
// bbolt Update records it: the job's cursor and the stretches done above
// it (connections finish out of order), refusals, and recipients refused
// for now in a small retry set. Batches that end together share the
// commit. Subscribers are read from the store batch by batch, never all at
// once: the delivery index holds each one's address and one-click token,
// so a release reads nothing else.
//
// With Options.SMTP the fan-out keeps its own connections to the relay
// (package pipeline): many transactions each, with command pipelining
// (RFC 2920) when the relay offers it, so a copy costs one round trip. It
// signs each copy with DKIM itself (Options.DKIM), the body hash computed
// once per release. Without it, every transaction goes through the
// queue's relay (a Maildir in development).
//
// A crash between the relay's 250 and the Update sends the batches in
// flight again: at most one batch per connection, each extra copy with
// the same Message-ID (docs/threat-model.md A3). A stop (SIGTERM) first records
// what the relay answered, so only the transactions cut off mid-way go
// again. A batch whose sending kills the process (a fatal error, the OOM
// killer) would do so at every start: with Options.Guard the batches in
// flight at a death are sent alone at the next start, and one in flight
// at BatchPoisonDeaths deaths is set aside while the others are served,
// then the release held (guard.go, docs/threat-model.md A6).
//
// Nothing leaves before T. The Fanout persists a heartbeat of the wall
// clock and compares the wall clock with the monotonic clock since then; a
// forward jump of more than MaxClockJump holds (Held hook, Resume) every
// job whose T falls inside the jump, also when the jump happened while the
// daemon was down (docs/threat-model.md G4).
//
// # List-Unsubscribe
//
// A transaction with many RCPTs has one body, so its List-Unsubscribe can
// name nobody: the shared copy carries the mailto URI of
// announce+unsubscribe@ (which answers with a confirmation) and, if
// configured, a generic page, and no List-Unsubscribe-Post, because RFC
// 8058 §3.1 wants a one-click URI to identify the recipient. With
// OneClick (the configuration's lists.announce.one_click), each copy goes
// in its own transaction with a per-subscriber HTTPS URI and
// List-Unsubscribe-Post; the signed body is still shared. The DKIM
// signature covers both fields (RFC 8058 §4).
// The package benchmarks measure both.
//
// # Bounces
//
// One return path per release, announce+bounces-<id>@ (VERP is impossible
// with many RCPTs per transaction). HandleBounce parses the RFC 3464
// delivery-status report and counts Action: failed per subscriber, once
// per release; permanent RCPT refusals at the relay count the same way.
// MaxBounces releases that failed disable the address until it subscribes
// again.
package announce
