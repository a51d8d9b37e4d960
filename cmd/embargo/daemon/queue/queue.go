package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/chunk"
)

// Bucket names; this package owns them.
var (
	bucketRows  = []byte("queue_rows")      // ID → record JSON (envelope, state, seal spec; no body)
	bucketData  = []byte("queue_data")      // ID → message bytes, or the header fields before a shared body; kept apart so a state change never rewrites them
	bucketDue   = []byte("queue_due")       // NextAttempt unix-nanos ‖ ID → nil, for every row not failed
	bucketBlobs = []byte("queue_blobs")     // body ID ‖ chunk number → a shared body in chunks (internal/chunk)
	bucketRefs  = []byte("queue_blob_refs") // body ID → rows that use it (8 bytes) ‖ its length (8 bytes)
)

// schemaVersion is the version of the row records written. Version 2
// added shared bodies and seal specs; version 3 stores a seal spec's
// headers as text (sealJSON); version 4 adds composed specs (Seal.Compose);
// version 5 is a binary record in place of JSON (rowcodec.go). Older rows
// are still read. An older embargo refuses newer rows (it would send a
// header without its body, or a spec without its headers; version 5 is no
// JSON at all) instead of misreading them.
const schemaVersion = 5

// Errors returned by the row operations.
var (
	ErrNotFound = errors.New("queue: no such row")
	ErrSending  = errors.New("queue: row is being sent")
	ErrNoInit   = errors.New("queue: buckets missing (Init not called)")
)

// Msg is one outbound message for one envelope. Private lists write one row per
// recipient, so that one refusal or one key problem concerns one row only.
//
// The message is Data followed by Body, or, with Seal, what the Sealer makes
// of Body at delivery.
type Msg struct {
	From string   // envelope sender; "" is the null sender <> (RFC 3834 auto-replies, RFC 5321 §4.5.5)
	To   []string // envelope recipients, at least one
	// Data is the complete RFC 5322 message with CRLF line ends, already
	// rendered (and signed or encrypted where it must be), or, followed by
	// Body, the header fields that precede a shared body. Empty with Seal.
	Data []byte
	// Body is content that several rows share: the six copies of a report
	// to six members carry one Body and the store holds it once. Messages
	// of one Enqueue call whose Body is the same slice share one stored
	// body, which counts the rows that use it and is deleted with the last
	// of them. Enqueue keeps Body without copying it until the transaction
	// ends: the caller must not change it before then.
	Body []byte
	// Seal, with Body, makes the message at delivery: the worker hands the
	// spec and the stored body to Options.Sealer, which signs and encrypts
	// them. Sealing at delivery keeps the cryptography out of the caller's
	// write transaction and stores one body however many copies it has.
	Seal *Seal

	MessageID string // the Message-ID of the message, stable across retries: a duplicate after a crash carries the same one
	Kind      string // short label for logs and metrics: "ack", "report-copy", "reply-copy", "alert", ...
	Incident  string // incident ID for logs; may be empty
	NoAlert   bool   // a failure of this row raises no alert (an alert about an alert would loop)
	// NotBefore holds the row until then: a message that must follow others
	// (the announcement after "embargo lifted", docs/threat-model.md G5).
	// Zero: now.
	NotBefore time.Time
}

// Seal says how a Sealer makes a row's message from its body. The header
// blocks are rendered header fields (CRLF line ends, no blank line at the
// end), written by the caller with go-message, which refuses CR or LF in a
// value (docs/threat-model.md B10).
//
// A spec either encrypts to exactly one key (To) or, marked SignOnly, is
// signed and not encrypted; Enqueue refuses a spec that says neither or
// both, so a missing fingerprint can never turn into a plaintext message.
// An encrypting spec is never sent unencrypted: when its key is missing,
// expired or revoked at delivery the Sealer fails and the row fails with
// an alert (docs/threat-model.md D6).
type Seal struct {
	// Signer names the list whose key signs the message ("security",
	// "distributors", "announce").
	Signer string `json:"signer"`
	// To is the full primary fingerprint of the one key the message is
	// encrypted to: a member's pinned key or, with Reporter, the key pinned
	// to the row's incident for its reporter.
	To       string `json:"to,omitempty"`
	Reporter bool   `json:"reporter,omitempty"`
	// Key, when set, is the armored public key to encrypt to, carried in
	// the row for a recipient whose key is pinned nowhere the Sealer looks
	// (a distributor applicant, a member just removed): its fingerprint
	// must be To.
	Key []byte `json:"key,omitempty"`
	// SignOnly marks a message that is signed and sent unencrypted (an
	// acknowledgement to a reporter without a key). Never with To.
	SignOnly bool `json:"sign_only,omitempty"`
	// Outer is the header relays see: From, To, a generic Subject, Date,
	// Message-ID, … For a signed-only message, its whole header.
	Outer []byte `json:"outer"`
	// Inner is the header protected inside the encryption: the real
	// Subject, From, To, … (draft-autocrypt-lamps-protected-headers).
	Inner []byte `json:"inner,omitempty"`
	// Compose, in place of Outer and Inner, is what the Sealer writes both
	// headers (and, as it says, the body's MIME form) from at delivery: the
	// caller defines it, the queue stores it as it is. Writing the headers
	// at delivery keeps that work out of the write transaction that queues
	// the row, and the row small.
	Compose []byte `json:"compose,omitempty"`
}

// check refuses a spec the Sealer could only get wrong.
func (s *Seal) check() error {
	switch {
	case s.Signer == "":
		return errors.New("seal names no signing key")
	case s.To == "" && !s.SignOnly:
		return errors.New("seal names no key to encrypt to and is not marked signed-only")
	case s.To != "" && s.SignOnly:
		return errors.New("seal is both encrypted and signed-only")
	case s.Reporter && s.To == "":
		return errors.New("seal to a reporter names no key")
	case len(s.Key) > 0 && (s.To == "" || s.Reporter):
		return errors.New("seal carries a key but names no fingerprint, or is a reporter's")
	case len(s.Compose) > 0 && (len(s.Outer) > 0 || len(s.Inner) > 0):
		return errors.New("seal has both header blocks and a composed spec")
	case len(s.Outer) == 0 && len(s.Compose) == 0:
		return errors.New("seal has no outer header")
	}
	return nil
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
	Size        int       // len(Data) + BodySize; List leaves Data and Body nil but fills the sizes
	BodySize    int       // the length of the shared body, 0 without one
	Created     time.Time // when it was enqueued
	Requeued    time.Time // when an operator last retried it; the lifetime counts from the later of the two
	NextAttempt time.Time // zero for failed rows
	LastAttempt time.Time
	Attempts    int
	LastError   string

	blob []byte // the stored body's key, set by the worker's claim
	// The Guard's verdict at the claim (guard.go): a suspect is sealed and
	// sent alone, a killer not at all.
	suspect, killer bool
	deaths          int
}

// Counts summarises the queue for metrics and `embargo status`.
type Counts struct {
	Queued, Sending, Failed int
	Oldest                  time.Time // Created of the oldest row not failed; zero if there is none
}

// record is a row as stored (rowcodec.go; JSON before schema version 5,
// sealjson.go). Data lives in bucketData.
type record struct {
	V           int
	From        string
	To          []string
	MessageID   string
	Kind        string
	Incident    string
	NoAlert     bool
	Size        int
	Body        uint64 // the shared body's ID
	BodySize    int
	Seal        *Seal
	State       State
	Created     time.Time
	Requeued    time.Time
	NextAttempt time.Time
	LastAttempt time.Time
	Attempts    int
	LastError   string
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
			Seal:      rec.Seal,
		},
		State:       rec.State,
		Size:        rec.Size,
		BodySize:    rec.BodySize,
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
	for _, name := range [][]byte{bucketRows, bucketData, bucketDue, bucketBlobs, bucketRefs} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("queue: create bucket %s: %w", name, err)
		}
	}
	return nil
}

// Enqueue adds msgs to the queue inside the caller's write transaction, so that
// they commit together with the state change that caused them, or not at all
// (docs/threat-model.md A2). The worker sees them only after the commit; call
// Worker.Kick after it, or use Worker.Enqueue, which does so on commit.
//
// Data is copied; Body is not (see Msg). A message without recipients or
// without content, or with a malformed Seal, is a caller bug and fails the
// transaction; the content itself (line ends, addresses) is checked at
// delivery, where a bad row fails alone and raises an alert instead of
// blocking the inbound message that caused it.
func Enqueue(tx *bolt.Tx, now time.Time, msgs ...Msg) error {
	_, err := enqueue(tx, now, msgs)
	return err
}

func enqueue(tx *bolt.Tx, now time.Time, msgs []Msg) ([]uint64, error) {
	bk, err := open(tx)
	if err != nil {
		return nil, err
	}
	var last lastBody // the body of the previous message: copies share one slice
	ids := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		if err := checkMsg(&m); err != nil {
			return nil, fmt.Errorf("queue: message %s (%s): %w", m.MessageID, m.Kind, err)
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
			Size:        len(m.Data) + len(m.Body),
			BodySize:    len(m.Body),
			Seal:        m.Seal,
			State:       StateQueued,
			Created:     now,
			NextAttempt: now,
		}
		if m.NotBefore.After(now) {
			rec.NextAttempt = m.NotBefore
		}
		if len(m.Body) > 0 {
			if last.same(m.Body) {
				err = bk.addRef(idKey(last.id))
			} else {
				last = lastBody{body: m.Body}
				last.id, err = bk.putBody(m.Body)
			}
			if err != nil {
				return nil, err
			}
			rec.Body = last.id
		}
		if len(m.Data) > 0 {
			// bbolt keeps the slice until commit; the caller may reuse its buffer before that.
			if err := bk.data.Put(idKey(id), bytes.Clone(m.Data)); err != nil {
				return nil, fmt.Errorf("queue: put data %d: %w", id, err)
			}
		}
		if err := bk.put(id, nil, &rec); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func checkMsg(m *Msg) error {
	switch {
	case len(m.To) == 0:
		return errors.New("no recipients")
	case len(m.Data) == 0 && len(m.Body) == 0:
		return errors.New("empty")
	case m.Seal == nil:
		return nil
	case len(m.Body) == 0:
		return errors.New("a seal without a body")
	case len(m.Data) > 0:
		return errors.New("a sealed message has no Data: the Sealer writes every header")
	}
	return m.Seal.check()
}

// lastBody remembers the body stored last: the copies of one message share
// one slice, stored once. Bodies get sequence numbers, not content hashes:
// new ones append to the end of the bucket (one leaf written, not one at
// a random place per body) and nothing is hashed in the transaction.
type lastBody struct {
	body []byte
	id   uint64
}

func (k lastBody) same(b []byte) bool {
	return len(k.body) == len(b) && len(b) > 0 && &k.body[0] == &b[0]
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
	if key, ok := rec.blobKey(); ok {
		r.Body, _ = chunk.Read(bk.blobs, key)
	}
	return r, nil
}

// Info returns one row without its data: its envelope and state, as List
// has them.
func Info(tx *bolt.Tx, id uint64) (Row, error) {
	bk, err := open(tx)
	if err != nil {
		return Row{}, err
	}
	rec, err := bk.get(id)
	if err != nil {
		return Row{}, err
	}
	return rec.row(id), nil
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

// buckets bundles the buckets of one transaction.
type buckets struct {
	rows, data, due, blobs, refs *bolt.Bucket
}

func open(tx *bolt.Tx) (buckets, error) {
	bk := buckets{
		rows:  tx.Bucket(bucketRows),
		data:  tx.Bucket(bucketData),
		due:   tx.Bucket(bucketDue),
		blobs: tx.Bucket(bucketBlobs),
		refs:  tx.Bucket(bucketRefs),
	}
	if bk.rows == nil || bk.data == nil || bk.due == nil || bk.blobs == nil || bk.refs == nil {
		return bk, ErrNoInit
	}
	if tx.Writable() {
		// Rows and due entries are added at the end of their bucket (rows
		// by sequence number, due entries mostly by the instant they are
		// queued at) and taken from the front as they are delivered.
		// bbolt's default splits a page half full, which suits inserts
		// anywhere: here every commit would write twice the pages its new
		// rows need, and the halves would stay half empty. The fill holds
		// for the transaction's handles, which every caller shares.
		bk.rows.FillPercent, bk.due.FillPercent = 1, 1
	}
	return bk, nil
}

// putBody stores a new body, used by one row, and returns its ID.
func (bk buckets) putBody(body []byte) (uint64, error) {
	id, err := bk.refs.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("queue: next body: %w", err)
	}
	if err := chunk.Put(bk.blobs, idKey(id), body); err != nil {
		return 0, fmt.Errorf("queue: put body: %w", err)
	}
	return id, bk.setBodyRefs(idKey(id), 1, uint64(len(body)))
}

// addRef counts one more row using a body already stored.
func (bk buckets) addRef(key []byte) error {
	n, size := bk.bodyRefs(key)
	if n == 0 {
		return fmt.Errorf("queue: body %x is not stored", key)
	}
	return bk.setBodyRefs(key, n+1, size)
}

// releaseBody counts one row less using a body and deletes the body with
// its last row.
func (bk buckets) releaseBody(key []byte) error {
	n, size := bk.bodyRefs(key)
	if n > 1 {
		return bk.setBodyRefs(key, n-1, size)
	}
	if err := chunk.Delete(bk.blobs, key); err != nil {
		return fmt.Errorf("queue: delete body: %w", err)
	}
	if err := bk.refs.Delete(key); err != nil {
		return fmt.Errorf("queue: delete body count: %w", err)
	}
	return nil
}

func (bk buckets) bodyRefs(key []byte) (n, size uint64) {
	v := bk.refs.Get(key)
	if len(v) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
}

func (bk buckets) setBodyRefs(key []byte, n, size uint64) error {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), n)
	if err := bk.refs.Put(key, binary.BigEndian.AppendUint64(v, size)); err != nil {
		return fmt.Errorf("queue: count body: %w", err)
	}
	return nil
}

// blobKey is the stored body's key, if the row has one.
func (rec *record) blobKey() ([]byte, bool) {
	if rec.Body == 0 {
		return nil, false
	}
	return idKey(rec.Body), true
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
	v, err := encodeRecord(rec)
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
	if key, ok := old.blobKey(); ok {
		if err := bk.releaseBody(key); err != nil {
			return err
		}
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

// decode reads a stored row: the binary record (rowcodec.go) or, written
// before it, JSON (sealjson.go).
func decode(k, v []byte) (*record, error) {
	if len(v) > 0 && v[0] == '{' {
		return decodeJSON(k, v)
	}
	rec, err := decodeBinary(v)
	if err != nil {
		return nil, fmt.Errorf("queue: decode row %x: %w", k, err)
	}
	return rec, nil
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
