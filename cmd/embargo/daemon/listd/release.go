package listd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
	"github.com/embargo-project/embargo/workflow/record"
)

// Announcer fans one signed advisory out to the announce list's subscribers:
// the body is stored once and a persisted cursor walks the subscribers in
// batches (docs/design.md §4). It returns how many subscribers the release covers.
type Announcer interface {
	Release(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (subscribers int, err error)
}

// Channel is an outside list that gets its own copy of each advisory, such
// as oss-security (process.md §7.4).
type Channel struct {
	Address string
	Tag     string // subject tag, e.g. "[example]"
}

// release publishes an advisory at T (docs/design.md §2, disclosed): the signed
// advisory to the announce subscribers and every outside channel, the public
// version to the distributors, and the release-day pack to the SRC. It runs
// in the transaction that marks the incident disclosed, so the incident and
// every copy (or the fan-out job) commit together: a crash loses nothing and
// sends nothing twice but for the one in flight.
//
// notBefore holds the public copies back when the distributors are being told
// "embargo lifted" in the same step, so that they hear first (docs/threat-model.md G5).
func (s *Service) release(tx *bolt.Tx, inc *workflow.Incident, a workflow.Release, now, notBefore time.Time) ([]queue.Msg, error) {
	defer s.observe("release", time.Now())
	d := s.advisory(inc)
	d.T = workflow.FormatInstant(a.At)
	text, err := s.o.Templates.Render("advisory", d)
	if err != nil {
		return nil, err
	}
	subject := advisorySubject(d)
	ann := s.o.Roster.List(lists.Announce)
	var out []queue.Msg

	// The announce list: one signed message, fanned out by the Announcer.
	if s.o.AnnounceKey != nil {
		mid, err := s.newMessageID(ann.Domain())
		if err != nil {
			return nil, err
		}
		om := s.announceMail(ann, subject, text, now)
		om.To, om.MessageID = []*mail.Address{{Address: ann.Address}}, mid
		data, err := om.signed(s.o.AnnounceKey, s.keyOptions())
		if err != nil {
			return nil, err
		}
		if s.o.Announcer != nil {
			n, err := s.o.Announcer.Release(tx, string(inc.ID), data, notBefore)
			if err != nil {
				return nil, err
			}
			d.Subscribers = n
		}
		// Outside channels: their own copy, with the project tag (§7.4).
		for _, ch := range s.o.Channels {
			cmid, err := s.newMessageID(ann.Domain())
			if err != nil {
				return nil, err
			}
			cm := s.announceMail(ann, ch.Tag+" "+d.CVE+": "+d.Summary, text, now)
			cm.To, cm.MessageID = []*mail.Address{{Address: ch.Address}}, cmid
			body, err := cm.entity()
			if err != nil {
				return nil, err
			}
			spec, err := signSpec(lists.Announce, &cm) // signed at delivery (seal.go)
			if err != nil {
				return nil, err
			}
			out = append(out, queue.Msg{From: ann.SubAddress(lists.DetailBounces), To: []string{ch.Address}, Body: body, Seal: spec, MessageID: cmid, Kind: "advisory-channel", Incident: string(inc.ID), NotBefore: notBefore})
			d.Channels++
		}
	}

	// The distributors: the public version, still only encrypted.
	dist, err := s.toDistributors(inc, distMail{Kind: "advisory-distributors", Subject: subject, Body: text}, now)
	if err != nil {
		return nil, err
	}
	out = append(out, dist...)
	d.Distributors = len(s.o.Roster.WithRole(workflow.RoleDistributor))

	// The SRC: the text to post on the project's public tracker, the chat
	// line, the CVE record and the CVE data map for the release team
	// (docs/process.md §7.5, §7.6, §7.9). The attachments' names are what
	// the release pack lists (templates/mail/release-pack.txt).
	post, err := s.o.Templates.Render("tracking-issue", d)
	if err != nil {
		return nil, err
	}
	chat, err := s.o.Templates.Render("chat-line", d)
	if err != nil {
		return nil, err
	}
	attach := []message.Attachment{
		{Name: "tracker-post.md", Type: "text/markdown", Data: []byte(post)},
		{Name: "chat.txt", Type: "text/plain", Data: []byte(chat)},
	}
	cve, dataMap, err := s.records(&d, inc)
	if err != nil {
		return nil, err
	}
	if cve != nil {
		attach = append(attach, message.Attachment{Name: "cve-record.json", Type: "application/json", Data: cve})
	}
	if dataMap != nil {
		attach = append(attach, message.Attachment{Name: record.DataMapFile, Type: "application/yaml", Data: dataMap})
	}
	pack, err := s.o.Templates.Render("release-pack", d)
	if err != nil {
		return nil, err
	}
	sec := s.o.Roster.List(lists.Security)
	om := outMail{
		From:        s.listAddress(sec),
		Subject:     fmt.Sprintf("[%s] released: %s", inc.ID, d.Summary),
		Date:        now,
		AutoSubmit:  "auto-generated",
		XLoop:       sec.Address,
		Body:        pack,
		Attachments: attach,
	}
	if inc.RootMsg != "" {
		om.InReplyTo, om.References = inc.RootMsg, []string{inc.RootMsg}
	}
	packs, err := s.copyEach(sec, s.committee(), om, queue.Msg{Kind: "release-pack", Incident: string(inc.ID)})
	if err != nil {
		return nil, err
	}
	out = append(out, packs...)
	s.log.Info("advisory released", "incident", inc.ID, "subscribers", d.Subscribers, "channels", d.Channels, "distributors", d.Distributors)
	return out, nil
}

// records drafts the CVE JSON 5 record and the CVE data map of the release
// pack (each nil when the incident lacks what it needs: the pack says why)
// and fills what the pack says about the records: what the incident's
// records lack, what the configuration leaves out of every record, and
// where the archive publishes the OSV record.
func (s *Service) records(d *advisoryData, inc *workflow.Incident) (cve, dataMap []byte, err error) {
	p := s.o.Record.WithDefaults()
	cve, err = record.CVEJSON(p, inc)
	switch {
	case errors.Is(err, record.ErrNoCVE):
		cve = nil
	case err != nil:
		return nil, nil, err
	}
	d.CVEDraft = cve != nil
	// The data map for the release team (docs/process.md §7.9): it also
	// needs a pull request, by whose number krel finds it.
	dataMap, err = record.CVEDataMap(p, inc)
	switch {
	case errors.Is(err, record.ErrNoCVE):
	case errors.Is(err, record.ErrNoPR):
		d.DataMapNoPR = true
	case err != nil:
		return nil, nil, err
	}
	d.DataMap = dataMap != nil
	gap := func(g record.Gap) string {
		return fmt.Sprintf("%s (%s): %s.", strings.ReplaceAll(g.Record, ", ", " and "), g.Key, g.Why)
	}
	for _, g := range record.Missing(p, inc) {
		// Without a CVE the pack says so in its own words, and what a draft
		// would lack does not matter.
		if cve != nil || g.Record != "CVE" {
			d.RecordGaps = append(d.RecordGaps, gap(g))
		}
	}
	for _, g := range record.DataMapGaps(p, inc) {
		d.RecordGaps = append(d.RecordGaps, gap(g))
	}
	for _, g := range p.Check() {
		d.ConfigGaps = append(d.ConfigGaps, gap(g))
	}
	if u := p.AdvisoryPage(string(inc.ID)); u != "" {
		d.OSVURL = u + ".osv.json"
	}
	return cve, dataMap, nil
}

// announceMail is a message from the announce list with the list fields of
// RFC 2369 and RFC 2919; it is signed, never encrypted. The caller sets To
// and the Message-ID.
func (s *Service) announceMail(ann lists.List, subject, body string, now time.Time) outMail {
	return outMail{
		From:    &mail.Address{Name: s.o.Project + " Security Announcements", Address: ann.Address},
		Subject: subject,
		Date:    now,
		ListID:  ann.ListID(),
		XLoop:   ann.Address,
		Body:    body,
		Extra: [][2]string{
			{"List-Unsubscribe", "<mailto:" + ann.SubAddress(lists.DetailUnsubscribe) + ">"},
			{"List-Post", "NO"},
		},
	}
}

// AlertRelease tells the SRC that the announce fan-out of an incident's
// release is held (j.HeldFor: a clock jump, a message the list key did not
// sign, the relay's refusal of the message), in the transaction that holds
// it: announce-held, which says what to fix for that cause and how to
// resume (`embargo release resume`). release-held is the tick's hold at
// T−24 h, which /approve and /disclose lift; they do not lift this one. The
// reason may quote the relay's reply, whose text the relay chose:
// quoteOutside.
//
// j.ID is the incident's for the release at T, or <incident>-preN for a
// pre-announcement (workflow.PreannounceJob), whose alert goes to that
// incident and names the pre-announcement; the resume command takes j.ID.
func (s *Service) AlertRelease(tx *bolt.Tx, j announce.Job) error {
	s = s.current()
	now := s.o.Now().UTC()
	id, pre := workflow.ID(j.ID), ""
	if incID, ok := workflow.PreannounceIncident(j.ID); ok {
		id, pre = incID, "yes"
	}
	inc := &workflow.Incident{ID: id}
	if p, err := incidentdb.Get(tx, id); err == nil {
		inc = p
	}
	due := j.At
	if due.IsZero() {
		due = inc.T
	}
	out, err := s.alertSRC(inc, workflow.AlertSRC{Template: "announce-held", Fields: map[string]string{
		"id": j.ID, "pre": pre, "t": workflow.FormatInstant(due), "reason": quoteOutside(j.Held, "    "),
		"cause": string(j.HeldFor), "sent": strconv.Itoa(j.Sent), "total": strconv.Itoa(j.Total),
	}}, now)
	if err != nil {
		return err
	}
	return s.enqueue(tx, now, out...)
}
