package queue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names; this package owns them.
var (
	bucketRows = []byte("queue_rows") // ID → record JSON (envelope and state, no body)
	bucketData = []byte("queue_data") // ID → message bytes, kept apart so a state change never rewrites the body
	bucketDue  = []byte("queue_due")  // NextAttempt unix-nanos ‖ ID → nil, for every row not failed
)

// schemaVersion is the "v" field of every row record.
const schemaVersion = 1

// Errors returned by the row operations.
var (
	ErrNotFound = errors.New("queue: no such row")
	ErrSending  = errors.New("queue: row is being sent")
	ErrNoInit   = errors.New("queue: buckets missing (Init not called)")
)

// Msg is one outbound message for one envelope. Private lists write one row per
// recipient, so that one refusal or one key problem concerns one row only.
type Msg struct {
	From      string   // envelope sender; "" is the null sender <> (RFC 3834 auto-replies, RFC 5321 §4.5.5)
	To        []string // envelope recipients, at least one
	Data      []byte   // the complete RFC 5322 message with CRLF line ends, already rendered, encrypted and signed
	MessageID string   // the Message-ID of Data, stable across retries: a duplicate after a crash carries the same one
	Kind      string   // short label for logs and metrics: "ack", "report-copy", "reply-copy", "alert", ...
	Incident  string   // incident ID for logs; may be empty
	NoAlert   bool     // a failure of this row raises no alert (an alert about an alert would loop)
	// NotBefore holds the row until then: a message that must follow others
	// (the announcement after "embargo lifted", threats.md G5). Zero: now.
	NotBefore time.Time
}

// State is where a row stands.
type State string

const (
	StateQueued  State = "queued"  // waiting for NextAttempt
	StateSending State = "sending" // handed to the relay; found at start-up, it means a crash mid-delivery
	StateFailed  State = "failed"  // refused permanently or expired; kept for `queue list` and `queue retry`
)

// Row is a stored message with its delivery state.
type Row struct {
	ID uint64
	Msg
	State       State
	Size        int       // len(Data); List leaves Data nil but fills Size
	Created     time.Time // when it was enqueued
	Requeued    time.Time // when an operator last retried it; the lifetime counts from the later of the two
	NextAttempt time.Time // zero for failed rows
	LastAttempt time.Time
	Attempts    int
	LastError   string
}

// Counts summarises the queue for metrics and `embargo status`.
type Counts struct {
	Queued, Sending, Failed int
	Oldest                  time.Time // Created of the oldest row not failed; zero if there is none
}

// record is the stored JSON of a row. Data lives in bucketData.
type record struct {
	V           int       `json:"v"`
	From        string    `json:"from"`
	To          []string  `json:"to"`
	MessageID   string    `json:"message_id,omitempty"`
	Kind        string    `json:"kind,omitempty"`
	Incident    string    `json:"incident,omitempty"`
	NoAlert     bool      `json:"no_alert,omitempty"`
	Size        int       `json:"size"`
	State       State     `json:"state"`
	Created     time.Time `json:"created"`
	Requeued    time.Time `json:"requeued,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
}

func (rec *record) row(id uint64) Row {
	return Row{
		ID: id,
		Msg: Msg{
			From:      rec.From,
			To:        append([]string(nil), rec.To...),
			MessageID: rec.MessageID,
			Kind:      rec.Kind,
			Incident:  rec.Incident,
			NoAlert:   rec.NoAlert,
		},
		State:       rec.State,
		Size:        rec.Size,
		Created:     rec.Created,
		Requeued:    rec.Requeued,
		NextAttempt: rec.NextAttempt,
		LastAttempt: rec.LastAttempt,
		Attempts:    rec.Attempts,
		LastError:   rec.LastError,
	}
}

// expires is when a row that keeps failing temporarily is given up.
func (rec *record) expires(lifetime time.Duration) time.Time {
	start := rec.Created
	if rec.Requeued.After(start) {
		start = rec.Requeued
	}
	return start.Add(lifetime)
}

// Init creates the queue's buckets. Call it once, inside the opener's Update.
func Init(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketRows, bucketData, bucketDue} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("queue: create bucket %s: %w", name, err)
		}
	}
	return nil
}

// Enqueue adds msgs to the queue inside the caller's write transaction, so that
// they commit together with the state change that caused them, or not at all
// (docs/threats.md A2). The worker sees them only after the commit; call
// Worker.Kick after it, or use Worker.Enqueue, which does so on commit.
//
// Data is copied. A message without recipients or without data is a caller bug
// and fails the transaction; the content itself (line ends, addresses) is
// checked at delivery, where a bad row fails alone and raises an alert instead
// of blocking the inbound message that caused it.
func Enqueue(tx *bolt.Tx, now time.Time, msgs ...Msg) error {
	_, err := enqueue(tx, now, msgs)
	return err
}

func enqueue(tx *bolt.Tx, now time.Time, msgs []Msg) ([]uint64, error) {
	bk, err := open(tx)
	if err != nil {
		return nil, err
	}
	ids := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		if len(m.To) == 0 {
			return nil, fmt.Errorf("queue: message %s (%s) has no recipients", m.MessageID, m.Kind)
		}
		if len(m.Data) == 0 {
			return nil, fmt.Errorf("queue: message %s (%s) is empty", m.MessageID, m.Kind)
		}
		id, err := bk.rows.NextSequence()
		if err != nil {
			return nil, fmt.Errorf("queue: next sequence: %w", err)
		}
		rec := record{
			V:           schemaVersion,
			From:        m.From,
			To:          append([]string(nil), m.To...),
			MessageID:   m.MessageID,
			Kind:        m.Kind,
			Incident:    m.Incident,
			NoAlert:     m.NoAlert,
			Size:        len(m.Data),
			State:       StateQueued,
			Created:     now,
			NextAttempt: now,
		}
		if m.NotBefore.After(now) {
			rec.NextAttempt = m.NotBefore
		}
		// bbolt keeps the slice until commit; the caller may reuse its buffer before that.
		if err := bk.data.Put(idKey(id), bytes.Clone(m.Data)); err != nil {
			return nil, fmt.Errorf("queue: put data %d: %w", id, err)
		}
		if err := bk.put(id, nil, &rec); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Get returns one row with its data, copied out of the transaction.
func Get(tx *bolt.Tx, id uint64) (Row, error) {
	bk, err := open(tx)
	if err != nil {
		return Row{}, err
	}
	rec, err := bk.get(id)
	if err != nil {
		return Row{}, err
	}
	r := rec.row(id)
	r.Data = bytes.Clone(bk.data.Get(idKey(id)))
	return r, nil
}

// List returns every row in ID order (the order they were enqueued), without
// their data: Size says how large each is, and Get fetches one in full.
func List(tx *bolt.Tx) ([]Row, error) {
	bk, err := open(tx)
	if err != nil {
		return nil, err
	}
	var rows []Row
	err = bk.rows.ForEach(func(k, v []byte) error {
		rec, err := decode(k, v)
		if err != nil {
			return err
		}
		rows = append(rows, rec.row(binary.BigEndian.Uint64(k)))
		return nil
	})
	return rows, err
}

// Stats counts the rows by state: the queue depth and the age of its oldest
// row, for metrics.
func Stats(tx *bolt.Tx) (Counts, error) {
	var s Counts
	bk, err := open(tx)
	if err != nil {
		return s, err
	}
	err = bk.rows.ForEach(func(k, v []byte) error {
		rec, err := decode(k, v)
		if err != nil {
			return err
		}
		switch rec.State {
		case StateFailed:
			s.Failed++
			return nil
		case StateSending:
			s.Sending++
		default:
			s.Queued++
		}
		if s.Oldest.IsZero() || rec.Created.Before(s.Oldest) {
			s.Oldest = rec.Created
		}
		return nil
	})
	return s, err
}

// Retry makes a queued or failed row due at now, with a fresh attempt count and
// a fresh lifetime. A row being sent returns ErrSending.
func Retry(tx *bolt.Tx, id uint64, now time.Time) error {
	bk, err := open(tx)
	if err != nil {
		return err
	}
	old, err := bk.get(id)
	if err != nil {
		return err
	}
	if old.State == StateSending {
		return fmt.Errorf("queue: retry %d: %w", id, ErrSending)
	}
	rec := *old
	rec.State = StateQueued
	rec.NextAttempt = now
	rec.Requeued = now
	rec.Attempts = 0
	return bk.put(id, old, &rec)
}

// Drop deletes a row in any state. If the worker is sending it at that moment,
// that one delivery may still happen; its outcome is then ignored.
func Drop(tx *bolt.Tx, id uint64) error {
	bk, err := open(tx)
	if err != nil {
		return err
	}
	old, err := bk.get(id)
	if err != nil {
		return err
	}
	return bk.delete(id, old)
}

// buckets bundles the three buckets of one transaction.
type buckets struct {
	rows, data, due *bolt.Bucket
}

func open(tx *bolt.Tx) (buckets, error) {
	bk := buckets{
		rows: tx.Bucket(bucketRows),
		data: tx.Bucket(bucketData),
		due:  tx.Bucket(bucketDue),
	}
	if bk.rows == nil || bk.data == nil || bk.due == nil {
		return bk, ErrNoInit
	}
	return bk, nil
}

func (bk buckets) get(id uint64) (*record, error) {
	k := idKey(id)
	v := bk.rows.Get(k)
	if v == nil {
		return nil, fmt.Errorf("queue: row %d: %w", id, ErrNotFound)
	}
	return decode(k, v)
}

// put stores rec and keeps the due index in step: old is the stored version
// (nil for a new row), whose index entry is replaced.
func (bk buckets) put(id uint64, old, rec *record) error {
	if old != nil && old.State != StateFailed {
		if err := bk.due.Delete(dueKey(old.NextAttempt, id)); err != nil {
			return fmt.Errorf("queue: unindex %d: %w", id, err)
		}
	}
	if rec.State != StateFailed {
		if err := bk.due.Put(dueKey(rec.NextAttempt, id), nil); err != nil {
			return fmt.Errorf("queue: index %d: %w", id, err)
		}
	}
	rec.V = schemaVersion
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("queue: encode row %d: %w", id, err)
	}
	if err := bk.rows.Put(idKey(id), v); err != nil {
		return fmt.Errorf("queue: put row %d: %w", id, err)
	}
	return nil
}

func (bk buckets) delete(id uint64, old *record) error {
	if old.State != StateFailed {
		if err := bk.due.Delete(dueKey(old.NextAttempt, id)); err != nil {
			return fmt.Errorf("queue: unindex %d: %w", id, err)
		}
	}
	if err := bk.data.Delete(idKey(id)); err != nil {
		return fmt.Errorf("queue: delete data %d: %w", id, err)
	}
	if err := bk.rows.Delete(idKey(id)); err != nil {
		return fmt.Errorf("queue: delete row %d: %w", id, err)
	}
	return nil
}

// dueIDs walks the index in NextAttempt order. It collects up to limit IDs due at
// now that skip does not exclude, and returns the NextAttempt of the first
// entry it did not take (zero if none): the time to wake up next.
func (bk buckets) dueIDs(now time.Time, limit int, skip func(uint64) bool) (ids []uint64, next time.Time) {
	c := bk.due.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 16 {
			continue // not ours; the index is rebuilt from rows at need
		}
		at := int64(binary.BigEndian.Uint64(k[:8]))
		id := binary.BigEndian.Uint64(k[8:])
		if skip(id) {
			continue
		}
		t := time.Unix(0, at)
		if len(ids) < limit && at <= unixNano(now) {
			ids = append(ids, id)
			continue
		}
		return ids, t
	}
	return ids, time.Time{}
}

func decode(k, v []byte) (*record, error) {
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("queue: decode row %x: %w", k, err)
	}
	if rec.V != schemaVersion {
		return nil, fmt.Errorf("queue: row %x has schema version %d, want %d", k, rec.V, schemaVersion)
	}
	return &rec, nil
}

func idKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
}

// dueKey sorts by time first, so "what is due" is the start of a cursor walk.
func dueKey(t time.Time, id uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(unixNano(t)))
	return binary.BigEndian.AppendUint64(k, id)
}

// unixNano clamps to the range where UnixNano is defined and the big-endian
// key sorts like the time (nothing here predates 1970).
func unixNano(t time.Time) int64 {
	if t.Before(time.Unix(0, 0)) {
		return 0
	}
	return t.UnixNano()
}
