package incidentdb

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The acknowledgement limits (docs/threat-model.md B8; RFC 3834 §2: an
// automatic responder limits its replies). Anyone can forge the envelope
// sender a report is acknowledged to, so each acknowledgement may land on
// a stranger (backscatter). Two counts bound it, each a fixed 12-byte record
// in the acks bucket (the window's start in Unix nanoseconds, then the
// count, both big-endian), read and written in the report's transaction:
//
//   - per address: the acknowledgements sent to it in the AckWindow from
//     the first of them ([intake] acks_per_sender_per_day);
//   - all addresses together (ackAllKey): the acknowledgements asked for in
//     the AckWindow from the first, sent or held back by the cap ([intake]
//     acks_per_day). A flood forging a new sender for each report passes
//     the first limit with every report; the cap bounds what embargo sends
//     in a day to addresses it cannot verify.

// AckWindow is the period both limits count over: 24 hours from the first
// acknowledgement counted, then a new count begins.
const AckWindow = 24 * time.Hour

// ackAllKey is the cap's record. It lives beside the per-address records
// because it is the same record, read by the same code (ackNext); no
// address can take the key: every envelope sender smtpd accepts has one
// "@" (RFC 5321 §4.1.2) in a dot-atom, without spaces or parentheses, and
// the applicants' keys ("apply/" + address) have their "@" too.
var ackAllKey = []byte("(all addresses)")

// The limits that hold an acknowledgement back, as AckVerdict.Held names
// them (and /metrics labels them).
const (
	AckSender = "sender" // acks_per_sender_per_day
	AckGlobal = "global" // acks_per_day
)

// AckVerdict is the decision on one acknowledgement.
type AckVerdict struct {
	// Held is "" when the acknowledgement may go, else the limit that
	// holds it back: AckSender or AckGlobal.
	Held string
	// First marks the first acknowledgement the cap holds back in its
	// window: the one the SRC is told about, once per window.
	First bool
	// Asked is how many acknowledgements the cap's window counted, this
	// one included, and Until when that window ends (zero without a cap).
	Asked int
	Until time.Time
}

// Allowed reports whether the acknowledgement may go.
func (v AckVerdict) Allowed() bool { return v.Held == "" }

// Ack decides whether an acknowledgement to addr may go at now, and counts
// it: at most perAddr to one address in its AckWindow, checked first, then
// at most all to every address together in the cap's window (0: no cap).
// One held back per address counts for nothing; one held back by the cap
// counts in the cap's window only (the count says how many were held back),
// never against its address, whose acknowledgement may then go once the
// cap's window ends. Call it in the transaction that queues the
// acknowledgement: a transaction that rolls back counts nothing.
func Ack(tx *bolt.Tx, addr string, now time.Time, perAddr, all int) (AckVerdict, error) {
	b := tx.Bucket(bucketAcks)
	key := []byte(strings.ToLower(addr))
	start, count, ok := ackNext(b.Get(key), now, perAddr)
	if !ok {
		return AckVerdict{Held: AckSender}, nil
	}
	var v AckVerdict
	if all > 0 {
		// The cap counts every acknowledgement asked for (limit 0: never
		// refused here), so that the first one beyond it is known in the
		// transaction itself, and told once.
		gs, gc, _ := ackNext(b.Get(ackAllKey), now, 0)
		if err := putAck(b, ackAllKey, gs, gc); err != nil {
			return v, err
		}
		v.Asked, v.Until = gc, gs.Add(AckWindow)
		if gc > all {
			v.Held, v.First = AckGlobal, gc == all+1
			return v, nil
		}
	}
	return v, putAck(b, key, start, count)
}

// AllowAck applies the per-address limit alone (Ack without a cap): at most
// perDay acknowledgements to one address in the 24 hours from the first of
// them; then the count starts again with the next one. With perDay 1 (the
// default) that is one in any 24 hours. It records the ack when allowed.
func AllowAck(tx *bolt.Tx, addr string, now time.Time, perDay int) (bool, error) {
	v, err := Ack(tx, addr, now, perDay, 0)
	return v.Allowed(), err
}

// ackNext is a record's window after one more acknowledgement at now: the
// same window with the count raised, or a new one from now when the old
// one ended (or lies ahead: the clock went back). ok is false, and nothing
// changes, when the window already holds limit (0: no limit).
//
// The record is a fixed 12 bytes, read and written in every report's
// transaction: a list of every instant, as before, grew with each report
// from a sender allowed many and was decoded and encoded whole each time
// (O(n) per report). Records of that form are read as the window they
// describe.
func ackNext(v []byte, now time.Time, limit int) (start time.Time, count int, ok bool) {
	start, count = ackWindow(v, now)
	if count > 0 && now.Sub(start) < AckWindow && now.Sub(start) >= 0 {
		if limit > 0 && count >= limit {
			return start, count, false
		}
		return start, count + 1, true
	}
	return now.UTC(), 1, true
}

// putAck writes a 12-byte record: the window's start and its count (at
// most MaxUint32).
func putAck(b *bolt.Bucket, key []byte, start time.Time, count int) error {
	v := make([]byte, 12)
	binary.BigEndian.PutUint64(v, uint64(start.UnixNano()))
	binary.BigEndian.PutUint32(v[8:], uint32(min(count, math.MaxUint32)))
	return b.Put(key, v)
}

// ackWindow reads an acknowledgement record: its window's start and count.
// A JSON list of instants (the older form) reads as the window of those
// within 24 hours of now; a damaged record as none (it only resets one
// sender's limit).
func ackWindow(v []byte, now time.Time) (time.Time, int) {
	if len(v) == 12 {
		return time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(), int(binary.BigEndian.Uint32(v[8:]))
	}
	var times []time.Time
	if len(v) == 0 || json.Unmarshal(v, &times) != nil {
		return time.Time{}, 0
	}
	var start time.Time
	n := 0
	for _, t := range times {
		if now.Sub(t) < AckWindow {
			if n == 0 || t.Before(start) {
				start = t
			}
			n++
		}
	}
	return start, n
}
