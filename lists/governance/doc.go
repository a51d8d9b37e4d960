// Package governance is the pure core of governance by mail (docs/design.md
// §1; docs/process.md §5, §7.9; docs/threat-model.md D5, F2): who is on the
// lists changes by signed mail, and no single key can change it.
//
// State model. The configuration file is the bootstrap roster; State holds
// what mail changed since: Overrides (one mail-made entry per address,
// shadowing the file's, a removal being a tombstone, so that a reload of the
// file never undoes a decision) and Proposals (every change under decision
// or decided: the audit trail). Effective merges the two: the roster in
// force, each entry with its Origin (file, command, application).
//
// Proposals. A distributor application (Submit, from distributors+apply@)
// or a signed /member add|remove|key (Apply) opens a proposal GOV-YYYY-NNNN
// with a thread of its own (security+GOV-YYYY-NNNN@). SRC members vote with
// /admit or /deny REASON in that thread, or by signing the identical
// /member command. A proposal passes with Config.Quorum distinct SRC
// approvals and no /deny; an application also by lazy consensus, at least
// one approval and no /deny LazyConsensus after it arrived (Tick). A /member
// change not passed by then expires, and so does an application nobody
// approved a further LazyConsensus later. A member may leave at once
// (/member remove me, signed with their own pinned key).
//
// Outcomes are Actions: the roster changes (PinKey, AddMember,
// RemoveMember), already part of the returned State, and the mail (Mail:
// the application to the SRC, the acknowledgement, the welcome encrypted to
// the new key, the removal or denial with how to re-apply, the roster-change
// notice to the member concerned and the SRC, the pending-signature notice).
//
// The package does no I/O and never reads the clock; OpenPGP stays with the
// caller, which passes what its key checks found (KeyVerdict).
package governance
