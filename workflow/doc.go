// Package workflow is the pure core of embargo's incident process: the
// incident record, the slash-commands SRC members send in signed replies, and
// the state machine they drive (docs/design.md §2–§3, docs/process.md). It does no
// I/O and never reads the clock: callers pass the time, the verified signer
// and the roster, and get back the new incident, the mail to send (Action
// values) and a receipt. purity_test.go enforces this.
//
// Phases and the commands that move between them:
//
//	triage ──/accept──► fix ──/notify──► embargo ──release at T──► disclosed ──/retro──► closed
//	   │                 │  /disclose now ─────────────────────────►    │        /close
//	   └─/reject, /duplicate, /handoff, /close ──► closed ◄─────────────┘
//	                                               │ /reopen: back to the phase reached
//
// Tick is the scheduler's half: from the persisted incident and the time it
// decides the final notice, the release at T (or holding it), and reminders
// (Reminders lists the timeline). The on-call (oncall.go: Rotation, OnCall,
// /oncall) commands new incidents; WeeklyDigest is the Monday summary.
//
// A message's command block (Extract) is parsed against one table (Commands)
// that also generates /help (HelpText) and docs/commands.md
// (CommandsMarkdown). Apply authenticates (signature age, incident ID named in
// the signed text), authorises (roles), then applies all commands or none.
//
// The two-person rule (approval.go): /disclose now, /embargo-break and
// /public complete only when Env.Quorum distinct SRC members sign them within
// 24 h; the incident carries the pending approval meanwhile. The roster
// commands (/member, /admit, /deny) share the table but not Apply: Classify
// sends them to lists/governance.
//
// The advisory lock: /approve locks the advisory fields (/set, /cvss,
// /severity, /cve are refused) until /approve withdraw; the release at T is
// held unless the advisory is approved 24 h before T.
//
// CVSS: vectors are parsed with pandatix/go-cvss; v4.0 scores are computed
// here with the FIRST reference's arithmetic and rounding, checked against
// all 104,976 base vectors (contrib/cvss).
package workflow

//go:generate go test -run TestCommandsDoc|TestHelpGolden -update .
