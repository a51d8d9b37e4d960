package listd

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// The acknowledgement limits (docs/threat-model.md B8, RFC 3834 §2): an
// automatic reply to an address nobody verified goes at most
// Options.AcksPerDay times a day to one address ([intake]
// acks_per_sender_per_day) and, checked after it, at most Options.AckCap
// times a day to all addresses together ([intake] acks_per_day): a flood
// forging a new sender for each report passes the first limit with every
// report, and would make embargo a source of backscatter. Both are decided
// and counted in the message's transaction (incidentdb.Ack), so a message
// that rolls back counts nothing. A held-back acknowledgement changes
// nothing else: the report is taken, archived and copied to the committee
// as always.
//
// The SRC is told once per window of the cap, by the acknowledgement that
// first finds it full: the cap's record counts every acknowledgement asked
// for, so that one is known in its own transaction and the alert commits
// with it (the intake limits' alerts need limit_alert/ instead, because a
// refused report commits nothing). /metrics counts every one held back,
// after the commit (Options.AckHeld).

// The limits that hold an acknowledgement back, as Options.AckHeld and
// /metrics name them.
const (
	AckLimitSender = incidentdb.AckSender // acks_per_sender_per_day
	AckLimitGlobal = incidentdb.AckGlobal // acks_per_day
)

// ackTally counts the acknowledgements one message's transaction held
// back, by limit. It belongs to one run of the transaction (outcome): a
// run that rolls back is forgotten with its tally, and the committed one
// is reported after the commit.
type ackTally struct{ sender, global int }

// allowAck applies the acknowledgement limits to one automatic reply: key
// is what the per-address limit counts (the address, or the applicant's
// key), id the incident or proposal it is about (for the log and the
// alert; "" for none). On the first reply the cap holds back in its window
// it queues the SRC's alert in tx.
func (s *Service) allowAck(tx *bolt.Tx, key string, id workflow.ID, now time.Time, tally *ackTally) (bool, error) {
	v, err := incidentdb.Ack(tx, key, now, s.o.AcksPerDay, s.o.AckCap)
	if err != nil || v.Allowed() {
		return err == nil, err
	}
	if v.Held == AckLimitSender {
		tally.sender++
		s.log.Info("acknowledgement suppressed by rate limit", "id", id, "limit", v.Held)
		return false, nil
	}
	tally.global++
	s.log.Info("acknowledgement suppressed by the global cap", "id", id, "limit", v.Held,
		"asked", v.Asked, "max", s.o.AckCap, "until", v.Until.Format(time.RFC3339))
	if !v.First {
		return false, nil
	}
	out, err := s.sealedEach(s.o.Roster.List(lists.Security), s.committee(), ackCapNotice(v, s.o.AckCap, id, now), now)
	if err != nil {
		return false, err
	}
	return false, s.enqueue(tx, now, out...)
}

// countAcks reports a committed message's held-back acknowledgements.
func (s *Service) countAcks(t ackTally) {
	if s.o.AckHeld == nil {
		return
	}
	for range t.sender {
		s.o.AckHeld(AckLimitSender)
	}
	for range t.global {
		s.o.AckHeld(AckLimitGlobal)
	}
}

// ackCapNotice is the SRC's alert that the cap is reached: since when,
// until when, and what to do. It names the incident whose acknowledgement
// was the first held back, and quotes nothing of any report.
func ackCapNotice(v incidentdb.AckVerdict, limit int, id workflow.ID, now time.Time) notice {
	first := ""
	if id != "" {
		first = ", report " + string(id)
	}
	body := fmt.Sprintf("embargo has stopped sending acknowledgements to reporters: %d went to all\n"+
		"addresses together in 24 hours, the cap of [intake] acks_per_day = %d.\n\n"+
		"  Counted since:    %s\n"+
		"  First held back:  %s%s\n"+
		"  Sent again from:  %s\n\n"+
		"Reports are still taken, archived and copied to you as always; only the\n"+
		"acknowledgement is not sent. Anyone can write any sender address, so many\n"+
		"reports from many addresses in a day are most likely a flood with forged\n"+
		"senders, whose acknowledgements would go to strangers (backscatter). A real\n"+
		"reporter among them can be answered in their incident's thread (/reply).\n\n"+
		"This is the only alert about the cap until it lets acknowledgements through\n"+
		"again, however many it holds back: /metrics counts them\n"+
		"(embargo_acks_suppressed_total{limit=%q}), and the log has a line\n"+
		"for each (\"acknowledgement suppressed by the global cap\", with the\n"+
		"incident ID). To send more, raise acks_per_day in the configuration and\n"+
		"restart embargo.\n",
		limit, limit, workflow.FormatInstant(v.Until.Add(-incidentdb.AckWindow)), workflow.FormatInstant(now), first,
		workflow.FormatInstant(v.Until), AckLimitGlobal)
	return notice{Subject: "[embargo] acknowledgements stopped: acks_per_day reached", Body: body, Kind: "alert-ackcap"}
}
