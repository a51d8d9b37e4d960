// Package web is embargo's HTTP listener: the few things a mail-only service
// still has to say over HTTP, and nothing else.
//
//   - /healthz and /metrics (Prometheus text exposition format 0.0.4,
//     written by hand) for operators. /metrics answers loopback clients
//     only, and never a request that came through a proxy, because open
//     incidents by phase tell that an embargo is running.
//   - The OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service,
//     direct and advanced methods) serving the list keys, so that mail
//     clients find the security@ key without a key server.
//   - The RFC 8058 one-click unsubscribe endpoint. GET only shows a button:
//     link scanners prefetch URLs, so only a POST acts. Every answer is the
//     same, and takes the same time, whether the token exists or not.
//   - Published advisories: an HTML index and one page per advisory, an Atom
//     feed (RFC 4287), a JSON Feed 1.1 in the shape of the Kubernetes official
//     CVE feed, and one OSV record (schema 1.6) per advisory. The daemon hands
//     over only disclosed incidents; this package drops anything whose
//     publication time is unset or still in the future as well (defense in
//     depth: docs/threat-model.md, nothing embargoed is reachable).
//
// The package knows no storage and no incident: it is given functions
// (Options) and plain structs (Snapshot, Advisory), set in cmd/embargo. It
// uses the standard library only. Every response carries a strict
// Content-Security-Policy, nosniff and no-referrer; access logs carry the
// method, the route, the status and the size, never a query string or an
// unsubscribe token.
package web
