package workflow

import (
	"strings"
	"time"
)

// Inbound is what workflow needs to know about one message that reached the
// intake list (security@). The caller parses the mail; workflow only decides.
type Inbound struct {
	Sender    string   // the author's address (From header), as given
	Detail    string   // sub-address detail of the recipient: "SEC-2026-0001" in security+SEC-2026-0001@
	Subject   string   // decoded and sanitised
	MessageID string   // without angle brackets
	Refs      []string // In-Reply-To first, then References, newest first; without angle brackets
	Auto      bool     // automatic mail (RFC 3834 Auto-Submitted, list or bulk mail, null sender)
}

// Lookup gives Thread read access to what the store knows. The functions must not
// have side effects.
type Lookup struct {
	Incident  func(ID) (*Incident, bool)    // by ID
	MessageID func(msgid string) (ID, bool) // the incident a stored Message-ID belongs to
	IsSRC     func(addr string) bool        // a committee member (roles src or associate)
}

// Thread returns the incident an inbound message continues, or nil when it is a
// new report. The order is docs/design.md §2: the security+<id>@ sub-address, then
// In-Reply-To/References against stored Message-IDs, then the [SEC-…] subject
// tag. A match counts only if the sender belongs to that incident (the SRC, its fix
// team, its reporter): anyone else starts a new report, so mail to an incident
// address never reveals whether the incident exists.
func Thread(in Inbound, l Lookup) *Incident {
	return thread(in, l, func(inc *Incident) bool { return Belongs(inc, in.Sender, l.IsSRC) })
}

// DistributorThread is Thread for a message whose commands a distributor
// signed with their pinned key (the caller verified it; distributor is
// their roster address): it finds the incident the same way, and a match
// counts only if the incident's notice reached that distributor
// (Incident.Notified). That is all a distributor belongs to: the thread
// takes their signed answer (/affected), and nothing else they write. An
// incident whose notice did not reach them is not found, so their mail is
// a new report, answered as anybody's (docs/design.md §2): nothing tells
// them the incident exists.
func DistributorThread(in Inbound, l Lookup, distributor string) *Incident {
	return thread(in, l, func(inc *Incident) bool { return inc.Notified(distributor) })
}

func thread(in Inbound, l Lookup, belongs func(*Incident) bool) *Incident {
	try := func(id ID) *Incident {
		inc, ok := l.Incident(id)
		if !ok || !belongs(inc) {
			return nil
		}
		return inc
	}
	if id, ok := ParseID(in.Detail); ok {
		if inc := try(id); inc != nil {
			return inc
		}
	}
	for _, ref := range in.Refs {
		if id, ok := l.MessageID(ref); ok {
			if inc := try(id); inc != nil {
				return inc
			}
		}
	}
	if id, ok := SubjectTag(in.Subject); ok {
		if inc := try(id); inc != nil {
			return inc
		}
	}
	return nil
}

// Belongs reports whether addr takes part in the incident's private thread.
func Belongs(inc *Incident, addr string, isSRC func(string) bool) bool {
	if addr == "" {
		return false
	}
	return strings.EqualFold(addr, inc.Reporter) || inc.HasFixTeamMember(addr) || isSRC(addr)
}

// Audience names a group of recipients; the caller resolves it against the roster
// and the incident.
type Audience int

// The audiences.
const (
	AudienceUnset    Audience = iota
	AudienceReporter          // the incident's reporter
	AudienceSRC               // the committee members and the incident's fix team
)

// Mail is an action: send the named message to an audience.
type Mail struct {
	Template string   // the template that renders the body ("ack", "report", "reply", ...)
	To       Audience // who receives it
	Except   string   // an address to leave out (the author of a reply already has it)
	Forward  bool     // the body carries the inbound message's content
}

// Received is the result of taking one inbound message: the incident as it is now
// and the mail to send.
type Received struct {
	Incident Incident
	New      bool
	Mail     []Mail
}

// Receive applies one inbound message to its incident. inc is nil for a new
// report, in which case id is the identifier the store allocated for it. It never
// reads the clock: now is the time of receipt.
func Receive(inc *Incident, id ID, in Inbound, now time.Time) Received {
	now = now.UTC()
	if inc == nil {
		n := Incident{
			Version:  1,
			ID:       id,
			Phase:    PhaseTriage,
			Opened:   now,
			Updated:  now,
			Reporter: strings.ToLower(in.Sender),
			Subject:  in.Subject,
			Messages: 1,
		}
		r := Received{Incident: n, New: true, Mail: []Mail{{Template: "report", To: AudienceSRC, Forward: true}}}
		// RFC 3834 §2: never answer automatic mail. The caller adds its own rate
		// limit (docs/threat-model.md B8) on top.
		if !in.Auto && in.Sender != "" {
			r.Mail = append([]Mail{{Template: "ack", To: AudienceReporter}}, r.Mail...)
		}
		return r
	}
	n := *inc
	n.FixTeam = append([]string(nil), inc.FixTeam...)
	n.Messages++
	n.Updated = now
	// Reporter mail and committee mail both go to the committee (and fix team);
	// committee replies stay inside it: writing to the reporter is /reply.
	return Received{Incident: n, Mail: []Mail{{Template: "reply", To: AudienceSRC, Except: in.Sender, Forward: true}}}
}
