package workflow

import "time"

// Action is something Apply asks the caller to do: send a message. Rendering
// and delivery belong to the caller (templates, keys, the outbox); workflow
// only decides. The concrete types are listed below; the set is closed.
type Action interface {
	// Kind names the action for logs and tests.
	Kind() string
	action()
}

// ReporterMail sends a message to the incident's reporter, from security@:
// a stage update, a canned reply, or a /reply text.
//
// Templates and their fields:
//
//	accepted                  id                      /accept
//	fixed                     id                      /fixed
//	date                      id, t, previous_t       /disclose DATE (previous_t empty the first time)
//	disclosed                 id, t, cve, summary     /disclose now (and the release at T)
//	reply                     id, text                /reply
//	duplicate                 id                      /duplicate (never the other incident's ID)
//	handoff                   id, contact             /handoff
//	canned-not-a-vulnerability, canned-container-cve, canned-clickjacking,
//	canned-spf, canned-out-of-scope
//	                          id                      /reject (process.md §7.7)
type ReporterMail struct {
	Template string
	Fields   map[string]string
}

// DistributorNotice sends the embargoed notice to the distributors list
// (process.md §7.1), rendered from the incident. Previous is zero for the
// first notice; on a re-notification (T changed, or /notify again) it is the
// T the distributors were told before. Final marks the final notice (§7.2):
// the public advisory text exactly as it will go out, sent by T-24 h (Tick).
type DistributorNotice struct {
	T        time.Time
	Previous time.Time
	Renotify bool
	Final    bool
}

// EmbargoLifted tells the distributors the embargo is over, ahead of the
// release (/disclose now).
type EmbargoLifted struct{ At time.Time }

// Release publishes the advisory: announce@, every outside channel, the
// tracking-issue text and CVE data to the SRC (docs/design.md §2, disclosed).
type Release struct{ At time.Time }

// AlertSRC tells the whole committee (and the fix team) something that needs
// attention. Templates and fields: embargo-break (id, by), release-held (id,
// t), reminder (id, deadline, what, due: a Deadline fell due, Tick),
// two-person-pending (id, command, by, signed, needed, quorum, awaited,
// expires, how: an irreversible command awaits more signatures, approval.go).
type AlertSRC struct {
	Template string
	Fields   map[string]string
}

// DistributorAnswer tells the SRC (the committee, each copy encrypted to
// its member) a distributor's answer to the notice (/affected): never any
// other distributor. Previous is their answer before; Answered of Notified
// distributors have answered so far.
type DistributorAnswer struct {
	Distributor        string
	Status, Previous   Affected
	Note               string
	At                 time.Time
	Answered, Notified int
}

// StatusReply answers /status to the signer.
type StatusReply struct{ Text string }

// HelpReply answers /help to the signer.
type HelpReply struct{ Text string }

func (ReporterMail) Kind() string      { return "reporter-mail" }
func (DistributorNotice) Kind() string { return "distributor-notice" }
func (EmbargoLifted) Kind() string     { return "embargo-lifted" }
func (Release) Kind() string           { return "release" }
func (AlertSRC) Kind() string          { return "alert-src" }
func (DistributorAnswer) Kind() string { return "distributor-answer" }
func (StatusReply) Kind() string       { return "status-reply" }
func (HelpReply) Kind() string         { return "help-reply" }

func (ReporterMail) action()      {}
func (DistributorNotice) action() {}
func (EmbargoLifted) action()     {}
func (Release) action()           {}
func (AlertSRC) action()          {}
func (DistributorAnswer) action() {}
func (StatusReply) action()       {}
func (HelpReply) action()         {}
