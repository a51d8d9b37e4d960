package listd

import (
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// preannounceData is everything the pre-announcement's template
// (templates/mail/preannounce.txt) is given, and everything its Subject is
// built from: the project's name, T, the severity ("" with /preannounce
// nosev) and, when the release was rescheduled, the T announced before.
// It is made from the workflow.Preannounce action alone, never from the
// incident, so no advisory field, summary, CVE, vector, component, report
// or ID can reach it, whatever a project's own template asks for: a
// template that names another field fails to render and nothing is sent
// (docs/threat-model.md G8).
type preannounceData struct {
	Project   string
	T         string // absolute UTC with the weekday (workflow.FormatInstant)
	Severity  string // "None" … "Critical"; "" to leave it out
	PreviousT string // "" unless rescheduled
}

func newPreannounceData(project string, a workflow.Preannounce) preannounceData {
	d := preannounceData{Project: project, T: workflow.FormatInstant(a.T)}
	if a.Severity != workflow.SeverityUnset {
		d.Severity = a.Severity.String()
	}
	if !a.Previous.IsZero() {
		d.PreviousT = workflow.FormatInstant(a.Previous)
	}
	return d
}

// preannounceSubject is the pre-announcement's Subject: the project and
// T, nothing of the incident.
func preannounceSubject(d preannounceData) string {
	if d.PreviousT != "" {
		return d.Project + " security release rescheduled to " + d.T
	}
	return d.Project + " security release planned for " + d.T
}

// errNoAnnounce: a pre-announcement reached a service whose announce list
// cannot send. workflow refuses /preannounce then (Env.Announce), so it
// means the two disagree: the message fails and is retried, nothing sent.
var errNoAnnounce = errors.New("listd: pre-announcement without an announce list key and fan-out")

// preannounce queues a pre-announcement on the announce list, in the
// transaction of the command: one message signed by the announce key,
// stored once and fanned out to every active subscriber now, each copy
// with the list's fields and, with one-click on, its subscriber's own
// List-Unsubscribe (daemon/announce). The release ID is the action's
// (<incident>-preN), apart from the release at T, which is the incident
// ID. It records in the incident how many subscribers it covers.
func (s *Service) preannounce(tx *bolt.Tx, inc *workflow.Incident, a workflow.Preannounce, now time.Time) error {
	if s.o.AnnounceKey == nil || s.o.Announcer == nil {
		return errNoAnnounce
	}
	d := newPreannounceData(s.o.Project, a)
	text, err := s.o.Templates.Render("preannounce", d)
	if err != nil {
		return err
	}
	ann := s.o.Roster.List(lists.Announce)
	mid, err := s.newMessageID(ann.Domain())
	if err != nil {
		return err
	}
	om := s.announceMail(ann, preannounceSubject(d), text, now)
	om.To, om.MessageID = []*mail.Address{{Address: ann.Address}}, mid
	data, err := om.signed(s.o.AnnounceKey, s.keyOptions())
	if err != nil {
		return err
	}
	n, err := s.o.Announcer.Release(tx, a.Job, data, now)
	if err != nil {
		return fmt.Errorf("listd: pre-announcement %s: %w", a.Job, err)
	}
	for i := range inc.Preannounced {
		if inc.Preannounced[i].Job == a.Job {
			inc.Preannounced[i].Sent = n
		}
	}
	s.log.Info("release pre-announced", "incident", inc.ID, "release", a.Job, "subscribers", n)
	return nil
}

// preannounceReceipt adds to the receipt of /preannounce how many
// subscribers the pre-announcement went to: the workflow cannot know it.
func preannounceReceipt(res *workflow.Result) {
	p, ok := res.Incident.LastPreannouncement()
	if !ok {
		return
	}
	for i, l := range res.Receipt.Lines {
		if l.Err == "" && l.Result != "" && (l.Command == "/preannounce" || l.Command == "/preannounce nosev") {
			res.Receipt.Lines[i].Result += fmt.Sprintf("; to %d subscribers", p.Sent)
		}
	}
}
