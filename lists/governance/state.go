package governance

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Defaults of [governance].
const (
	DefaultQuorum        = 2
	DefaultLazyConsensus = 5 * 24 * time.Hour
)

// Limits that keep unauthenticated applications from flooding the SRC.
const (
	MaxOpenApplications = 20                  // open at once; more are refused
	ExpiryWarning       = 30 * 24 * time.Hour // a key expiring sooner is flagged
)

// SchemaVersion is the version of the stored State.
const SchemaVersion = 1

// State is the governance record: the daemon stores it as one JSON value and
// passes it to every call, which returns a changed copy.
type State struct {
	Version int `json:"v"`
	// Year and Seq number the proposals: GOV-Year-Seq.
	Year int `json:"year,omitempty"`
	Seq  int `json:"seq,omitempty"`
	// Overrides are the roster entries made by mail, one per address: they
	// shadow the configuration file's entry for that address (a removal is
	// a tombstone), so that a SIGHUP never undoes what a quorum decided.
	Overrides []Entry `json:"overrides,omitempty"`
	// Proposals, open and decided: the audit trail of every change.
	Proposals []Proposal `json:"proposals,omitempty"`
}

// Origin says where a roster entry came from.
type Origin string

// The origins.
const (
	OriginFile        Origin = "file"        // the configuration file (the bootstrap)
	OriginCommand     Origin = "command"     // /member add, passed by the SRC
	OriginApplication Origin = "application" // a distributor application, admitted
)

// Entry is one member of the effective roster, or (Removed) a tombstone.
type Entry struct {
	Email       string    `json:"email"`
	Name        string    `json:"name,omitempty"`
	Roles       []string  `json:"roles,omitempty"`
	Fingerprint string    `json:"fpr,omitempty"`
	Product     string    `json:"product,omitempty"` // a distributor's product
	Origin      Origin    `json:"origin"`
	Ref         string    `json:"ref,omitempty"`    // the proposal that last changed the entry; "" for the file's
	Change      string    `json:"change,omitempty"` // what Ref did: added, roles, key, removed
	Since       time.Time `json:"since,omitzero"`   // when Ref was decided
	Removed     bool      `json:"removed,omitempty"`
	Reason      string    `json:"reason,omitempty"` // of a removal
	// Key is the armored public key pinned by mail; the file's keys live in
	// keys_dir and are not copied here.
	Key string `json:"key,omitempty"`
}

// Member converts the entry to the roster's type.
func (e Entry) Member() lists.Member {
	return lists.Member{Email: e.Email, Name: e.Name, Roles: slices.Clone(e.Roles), Fingerprint: e.Fingerprint}
}

// Has reports whether the entry holds role.
func (e Entry) Has(role string) bool { return slices.Contains(e.Roles, role) }

// Kind is what a proposal would change.
type Kind string

// The kinds.
const (
	KindApplication Kind = "application"   // a distributor application (distributors+apply@)
	KindAdd         Kind = "member-add"    // /member add: a new member, or new roles
	KindRemove      Kind = "member-remove" // /member remove
	KindKey         Kind = "member-key"    // /member key: a new pinned key
)

// Status is where a proposal stands.
type Status string

// The statuses.
const (
	StatusOpen    Status = "open"
	StatusPassed  Status = "passed"
	StatusDenied  Status = "denied"
	StatusExpired Status = "expired"
)

// Proposal is one change of the roster under decision, with its votes.
type Proposal struct {
	ID          string       `json:"id"` // GOV-YYYY-NNNN; its thread is security+ID@
	Kind        Kind         `json:"kind"`
	Command     string       `json:"cmd,omitempty"` // the canonical /member command (member kinds)
	Email       string       `json:"email"`         // the member concerned; an application's security alias
	Roles       []string     `json:"roles,omitempty"`
	Reason      string       `json:"reason,omitempty"` // /member remove REASON
	Key         *KeyVerdict  `json:"key,omitempty"`    // the new key (add, key, application)
	Application *Application `json:"application,omitempty"`
	Opened      time.Time    `json:"opened"`
	OpenedBy    string       `json:"opened_by"` // the proposer; an application's sender
	// Deadline: an application passes by lazy consensus from it; a /member
	// change expires at it.
	Deadline  time.Time `json:"deadline"`
	RootMsg   string    `json:"root_msg,omitempty"` // anchors the thread in mail clients
	Approvals []Vote    `json:"approvals,omitempty"`
	Denial    *Vote     `json:"denial,omitempty"`
	Status    Status    `json:"status"`
	Decided   time.Time `json:"decided,omitzero"`
	Outcome   string    `json:"outcome,omitempty"` // how it was decided, one sentence
}

// Vote is one SRC member's signed /admit, /deny or identical /member command.
type Vote struct {
	Email       string    `json:"email"`
	Fingerprint string    `json:"fpr"`
	At          time.Time `json:"at"`
	MessageID   string    `json:"msgid,omitempty"`
	Reason      string    `json:"reason,omitempty"` // of a /deny
}

// KeyVerdict is what the caller's key checks (package keys) found in one
// public key: governance decides from it and never parses OpenPGP itself.
type KeyVerdict struct {
	Fingerprint string    `json:"fpr"`            // primary key, hex
	UserIDs     []string  `json:"uids,omitempty"` // "Name <addr>"
	Algorithm   string    `json:"algo,omitempty"` // for display, e.g. "ed25519"
	Created     time.Time `json:"created,omitzero"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
	// Problems make the key unusable: each a sentence (keys.Key.Check:
	// expired, revoked, weak algorithm, SHA-1 binding, no encryption
	// subkey). Warnings do not (expiring soon).
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	Armored  string   `json:"armored,omitempty"` // the public key, armored, to pin
}

var fprPattern = regexp.MustCompile(`^([0-9A-F]{40}|[0-9A-F]{64})$`)

// check returns the problems of v at now, its own and those governance
// sees (a malformed fingerprint, no key material, expired by now), and the
// warnings (expiring within ExpiryWarning; addr not among its user IDs).
func (v KeyVerdict) check(addr string, now time.Time) (problems, warnings []string) {
	problems = slices.Clone(v.Problems)
	warnings = slices.Clone(v.Warnings)
	if !fprPattern.MatchString(strings.ToUpper(v.Fingerprint)) {
		problems = append(problems, fmt.Sprintf("the fingerprint %q is not 40 (v4) or 64 (v6) hex digits", v.Fingerprint))
	}
	if v.Armored == "" {
		problems = append(problems, "no public key material")
	}
	switch {
	case !v.Expires.IsZero() && !v.Expires.After(now):
		problems = append(problems, "the key expired "+workflow.FormatInstant(v.Expires))
	case !v.Expires.IsZero() && v.Expires.Before(now.Add(ExpiryWarning)):
		warnings = append(warnings, "the key expires "+workflow.FormatInstant(v.Expires))
	}
	if addr != "" && !v.HasAddress(addr) {
		warnings = append(warnings, addr+" is not a user ID of the key")
	}
	return problems, warnings
}

// HasAddress reports whether one of the key's user IDs carries addr.
func (v KeyVerdict) HasAddress(addr string) bool {
	for _, u := range v.UserIDs {
		a := u
		if i, j := strings.LastIndexByte(u, '<'), strings.LastIndexByte(u, '>'); i >= 0 && j > i {
			a = u[i+1 : j]
		}
		if strings.EqualFold(strings.TrimSpace(a), addr) {
			return true
		}
	}
	return false
}

// Config is what governance needs beyond its state.
type Config struct {
	Quorum        int           // distinct SRC approvals a change needs; 0: DefaultQuorum
	LazyConsensus time.Duration // lazy_consensus_days; 0: DefaultLazyConsensus
	File          []lists.Member
	// KeyStates is the caller's check of every pinned key at now, by
	// fingerprint, for /member list (Problems, Warnings, Expires).
	KeyStates map[string]KeyVerdict
}

func (c Config) withDefaults() Config {
	if c.Quorum < 1 {
		c.Quorum = DefaultQuorum
	}
	if c.LazyConsensus <= 0 {
		c.LazyConsensus = DefaultLazyConsensus
	}
	return c
}

// clone deep-copies the state, so a working copy never reaches the caller's.
func (st State) clone() State {
	n := st
	n.Overrides = slices.Clone(st.Overrides)
	for i := range n.Overrides {
		n.Overrides[i].Roles = slices.Clone(n.Overrides[i].Roles)
	}
	n.Proposals = make([]Proposal, len(st.Proposals))
	for i, p := range st.Proposals {
		p.Roles = slices.Clone(p.Roles)
		p.Approvals = slices.Clone(p.Approvals)
		if p.Denial != nil {
			d := *p.Denial
			p.Denial = &d
		}
		if p.Key != nil {
			k := *p.Key
			p.Key = &k
		}
		if p.Application != nil {
			a := *p.Application
			p.Application = &a
		}
		n.Proposals[i] = p
	}
	return n
}

// nextID numbers a new proposal.
func (st *State) nextID(now time.Time) string {
	if y := now.UTC().Year(); y != st.Year {
		st.Year, st.Seq = y, 0
	}
	st.Seq++
	return fmt.Sprintf("%s%04d-%04d", workflow.ProposalPrefix, st.Year, st.Seq)
}

// Proposal finds a proposal by ID.
func (st State) Proposal(id string) (Proposal, bool) {
	for _, p := range st.Proposals {
		if strings.EqualFold(p.ID, id) {
			return p, true
		}
	}
	return Proposal{}, false
}

func (st *State) proposal(id string) *Proposal {
	for i := range st.Proposals {
		if strings.EqualFold(st.Proposals[i].ID, id) {
			return &st.Proposals[i]
		}
	}
	return nil
}

// Open lists the open proposals, oldest first.
func (st State) Open() []Proposal {
	var out []Proposal
	for _, p := range st.Proposals {
		if p.Status == StatusOpen {
			out = append(out, p)
		}
	}
	return out
}

// openFor finds the open proposal of kind about addr.
func (st *State) openFor(kind Kind, addr string) *Proposal {
	for i := range st.Proposals {
		p := &st.Proposals[i]
		if p.Status == StatusOpen && p.Kind == kind && strings.EqualFold(p.Email, addr) {
			return p
		}
	}
	return nil
}

// setOverride records the mail-made entry for e.Email, replacing any.
func (st *State) setOverride(e Entry) {
	for i := range st.Overrides {
		if strings.EqualFold(st.Overrides[i].Email, e.Email) {
			st.Overrides[i] = e
			return
		}
	}
	st.Overrides = append(st.Overrides, e)
}
