// Package incidentdb keeps incidents and the archive of every inbound message in
// the bbolt file. Every function takes the caller's transaction, so that a
// message, the incident change it causes and the mail it triggers (daemon/queue)
// commit together or not at all (docs/threat-model.md A1, A2).
package incidentdb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/chunk"
	"github.com/embargo-project/embargo/workflow"
)

// Bucket names; this package owns them.
var (
	bucketIncidents = []byte("incidents")    // ID → Incident JSON
	bucketSeq       = []byte("incident_seq") // "YYYY" → last sequence number
	bucketMessages  = []byte("messages")     // seq → Record JSON
	bucketRaw       = []byte("messages_raw") // seq ‖ chunk number → raw bytes as received, in chunks (internal/chunk); seq → raw bytes in stores written before
	bucketByInc     = []byte("messages_by_incident")
	bucketMsgIDs    = []byte("message_ids")   // Message-ID → incident ID (inbound and outbound)
	bucketSeen      = []byte("seen")          // a delivery's key (MarkSeen) → empty, for duplicate deliveries (A4); sha256(raw) → seq in stores written before
	bucketAcks      = []byte("acks")          // address, or ackAllKey → window start (Unix ns) ‖ count: the acknowledgement limits (B8, acks.go)
	bucketRepKeys   = []byte("reporter_keys") // incident ID → the reporter's armored public key
)

const schemaVersion = 1

// ErrNotFound is returned for an unknown incident or message.
var ErrNotFound = errors.New("incidentdb: not found")

// Init creates the buckets. Call it once, inside the opener's Update.
func Init(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketIncidents, bucketSeq, bucketMessages, bucketRaw, bucketByInc, bucketMsgIDs, bucketSeen, bucketAcks, bucketRepKeys} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("incidentdb: create bucket %s: %w", b, err)
		}
	}
	if err := initDue(tx); err != nil {
		return err
	}
	if err := initLimits(tx); err != nil {
		return err
	}
	return initCommands(tx)
}

// Record describes one archived inbound message.
type Record struct {
	Version      int         `json:"v"`
	Seq          uint64      `json:"seq"`
	Incident     workflow.ID `json:"incident,omitempty"` // empty for mail that belongs to no incident (bounces)
	MessageID    string      `json:"message_id,omitempty"`
	Received     time.Time   `json:"received"`
	EnvelopeFrom string      `json:"envelope_from"`
	Rcpts        []string    `json:"rcpts"`
	Sender       string      `json:"sender,omitempty"`
	Size         int         `json:"size"`
	SHA256       string      `json:"sha256"`
	Note         string      `json:"note,omitempty"` // e.g. "bounce", "loop"
}

// NextID allocates the next incident ID of year.
func NextID(tx *bolt.Tx, year int) (workflow.ID, error) {
	b := tx.Bucket(bucketSeq)
	key := []byte(strconv.Itoa(year))
	var n uint64
	if v := b.Get(key); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	if err := b.Put(key, be(n)); err != nil {
		return "", fmt.Errorf("incidentdb: next id: %w", err)
	}
	return workflow.FormatID(year, n), nil
}

// Get reads an incident.
func Get(tx *bolt.Tx, id workflow.ID) (*workflow.Incident, error) {
	v := tx.Bucket(bucketIncidents).Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var inc workflow.Incident
	if err := json.Unmarshal(v, &inc); err != nil {
		return nil, fmt.Errorf("incidentdb: decode %s: %w", id, err)
	}
	return &inc, nil
}

// Put stores an incident and files it in the deadline index as due now: the
// next tick looks at it and files it under its next instant. The daemon
// writes incidents with PutNext, which knows that instant.
func Put(tx *bolt.Tx, inc *workflow.Incident) error {
	if err := put(tx, inc); err != nil {
		return err
	}
	return setDue(tx, inc.ID, dueNow, true)
}

func put(tx *bolt.Tx, inc *workflow.Incident) error {
	if _, ok := workflow.ParseID(string(inc.ID)); !ok {
		return fmt.Errorf("incidentdb: put: invalid id %q", inc.ID)
	}
	v, err := json.Marshal(inc)
	if err != nil {
		return fmt.Errorf("incidentdb: encode %s: %w", inc.ID, err)
	}
	return tx.Bucket(bucketIncidents).Put([]byte(inc.ID), v)
}

// List returns every incident, oldest first.
func List(tx *bolt.Tx) ([]workflow.Incident, error) {
	var out []workflow.Incident
	err := tx.Bucket(bucketIncidents).ForEach(func(k, v []byte) error {
		var inc workflow.Incident
		if err := json.Unmarshal(v, &inc); err != nil {
			return fmt.Errorf("incidentdb: decode %s: %w", k, err)
		}
		out = append(out, inc)
		return nil
	})
	// Keys sort as strings; SEC-2026-10000 would sort before SEC-2026-9999.
	sortIncidents(out)
	return out, err
}

// sortIncidents orders incidents by year and number. It runs on every open
// incident (the digest, `embargo status`): the number is parsed once per
// incident, and the sort is O(n log n) (an insertion sort took tens of
// seconds once numbers passed 9999 and sorted among the 1000s as strings).
func sortIncidents(l []workflow.Incident) {
	type key struct {
		prefix string
		n      int
	}
	keys := make(map[workflow.ID]key, len(l))
	for _, inc := range l {
		s := string(inc.ID)
		i := strings.LastIndexByte(s, '-')
		n, _ := strconv.Atoi(s[i+1:])
		keys[inc.ID] = key{s[:max(i, 0)], n}
	}
	slices.SortStableFunc(l, func(a, b workflow.Incident) int {
		ka, kb := keys[a.ID], keys[b.ID]
		if c := strings.Compare(ka.prefix, kb.prefix); c != 0 {
			return c
		}
		return ka.n - kb.n
	})
}

// AddMessage archives a raw inbound message and indexes it. It returns the
// record with its sequence number set.
//
// raw is stored as received, in chunks, without a copy: it must not change
// until the transaction ends (a copy of a 10 MB report would double what the
// transaction holds).
func AddMessage(tx *bolt.Tx, rec Record, raw []byte, sum [32]byte) (Record, error) {
	b, rb, ib := appendOnly(tx, bucketMessages), appendOnly(tx, bucketRaw), appendOnly(tx, bucketByInc)
	seq, err := b.NextSequence()
	if err != nil {
		return rec, fmt.Errorf("incidentdb: message sequence: %w", err)
	}
	rec.Version = schemaVersion
	rec.Seq = seq
	rec.Size = len(raw)
	rec.SHA256 = fmt.Sprintf("%x", sum)
	v, err := json.Marshal(rec)
	if err != nil {
		return rec, fmt.Errorf("incidentdb: encode message: %w", err)
	}
	if err := b.Put(be(seq), v); err != nil {
		return rec, err
	}
	if err := chunk.Put(rb, be(seq), raw); err != nil {
		return rec, err
	}
	if rec.Incident != "" {
		if err := ib.Put(append([]byte(rec.Incident+"/"), be(seq)...), nil); err != nil {
			return rec, err
		}
		if rec.MessageID != "" {
			if err := IndexMessageID(tx, rec.MessageID, rec.Incident); err != nil {
				return rec, err
			}
		}
	}
	return rec, nil
}

// appendOnly is a bucket of the archive, whose keys grow (the message's
// sequence number; the incident ID, then that number): new entries go at
// the end and nothing is ever deleted. bbolt splits a page half full by
// default, which suits inserts anywhere; here the halves would stay half
// empty for good, and every commit would write twice the pages its new
// entries need. The fill percent holds for the bucket's handle, which the
// transaction keeps: set on the one AddMessage uses.
func appendOnly(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = 1
	return b
}

// Seen reports whether a delivery with this key (MarkSeen) was already
// accepted (a client that lost our 250 and sent again, RFC 1047).
func Seen(tx *bolt.Tx, key [32]byte) bool {
	return tx.Bucket(bucketSeen).Get(key[:]) != nil
}

// IndexMessageID records that a Message-ID (inbound, or of a copy we sent)
// belongs to an incident, for threading by In-Reply-To/References.
func IndexMessageID(tx *bolt.Tx, msgid string, id workflow.ID) error {
	if msgid == "" || len(msgid) > 512 {
		return nil
	}
	b := tx.Bucket(bucketMsgIDs)
	if b.Get([]byte(msgid)) != nil {
		return nil // first owner wins: a later mail cannot re-point a thread
	}
	return b.Put([]byte(msgid), []byte(id))
}

// IncidentOf returns the incident a Message-ID belongs to.
func IncidentOf(tx *bolt.Tx, msgid string) (workflow.ID, bool) {
	v := tx.Bucket(bucketMsgIDs).Get([]byte(msgid))
	if v == nil {
		return "", false
	}
	return workflow.ID(string(v)), true
}

// Messages lists the archived messages of an incident in arrival order.
func Messages(tx *bolt.Tx, id workflow.ID) ([]Record, error) {
	var out []Record
	prefix := []byte(id + "/")
	c := tx.Bucket(bucketByInc).Cursor()
	mb := tx.Bucket(bucketMessages)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		v := mb.Get(k[len(prefix):])
		if v == nil {
			return nil, fmt.Errorf("incidentdb: index of %s names a missing message", id)
		}
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("incidentdb: decode message: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Message returns the record of an archived message.
func Message(tx *bolt.Tx, seq uint64) (Record, error) {
	var r Record
	v := tx.Bucket(bucketMessages).Get(be(seq))
	if v == nil {
		return r, ErrNotFound
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("incidentdb: decode message: %w", err)
	}
	return r, nil
}

// Raw returns a copy of an archived message's bytes.
func Raw(tx *bolt.Tx, seq uint64) ([]byte, error) {
	b := tx.Bucket(bucketRaw)
	if v := b.Get(be(seq)); v != nil {
		return bytes.Clone(v), nil // one value: a store written before chunks
	}
	raw, ok := chunk.Read(b, be(seq))
	if !ok {
		return nil, ErrNotFound
	}
	return raw, nil
}

func be(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// SetReporterKey pins the reporter's public key to one incident. The first key
// stays: a later mail cannot replace it (docs/threat-model.md D5).
func SetReporterKey(tx *bolt.Tx, id workflow.ID, armored []byte) (bool, error) {
	b := tx.Bucket(bucketRepKeys)
	if b.Get([]byte(id)) != nil {
		return false, nil
	}
	return true, b.Put([]byte(id), bytes.Clone(armored))
}

// ReporterKey returns the armored key pinned to an incident, if any.
func ReporterKey(tx *bolt.Tx, id workflow.ID) ([]byte, bool) {
	v := tx.Bucket(bucketRepKeys).Get([]byte(id))
	if v == nil {
		return nil, false
	}
	return bytes.Clone(v), true
}

// Seen signatures (docs/threat-model.md E3) and small settings live in their own buckets.
var (
	bucketReplay = []byte("replay")      // replay key → expiry (unix seconds, big-endian)
	bucketMeta   = []byte("meta")        // name → value
	bucketCipher = []byte("ciphertexts") // sha256 of encrypted data → first arrival (docs/threat-model.md D3)
)

// initCommands creates the buckets the command path needs. Init calls it.
func initCommands(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketReplay, bucketMeta, bucketCipher} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("incidentdb: create bucket %s: %w", b, err)
		}
	}
	return nil
}

// SeenSignature records a signature's replay key until expiry and reports
// whether it was already recorded (a replay). Expired entries are dropped as
// they are met.
func SeenSignature(tx *bolt.Tx, key string, expiry, now time.Time) (bool, error) {
	b := tx.Bucket(bucketReplay)
	if v := b.Get([]byte(key)); len(v) == 8 {
		if int64(binary.BigEndian.Uint64(v)) > now.Unix() {
			return true, nil
		}
	}
	return false, b.Put([]byte(key), be(uint64(expiry.Unix())))
}

// Meta reads a small named value.
func Meta(tx *bolt.Tx, name string) string {
	return string(tx.Bucket(bucketMeta).Get([]byte(name)))
}

// SetMeta writes a small named value.
func SetMeta(tx *bolt.Tx, name, value string) error {
	return tx.Bucket(bucketMeta).Put([]byte(name), []byte(value))
}

// FirstArrival is where and from whom an encrypted message first came.
type FirstArrival struct {
	Incident workflow.ID `json:"incident"`
	Sender   string      `json:"sender"`
	At       time.Time   `json:"at"`
}

// Ciphertext returns the first arrival of an encrypted payload, if any.
func Ciphertext(tx *bolt.Tx, sum [32]byte) (FirstArrival, bool, error) {
	v := tx.Bucket(bucketCipher).Get(sum[:])
	if v == nil {
		return FirstArrival{}, false, nil
	}
	var f FirstArrival
	if err := json.Unmarshal(v, &f); err != nil {
		return f, false, fmt.Errorf("incidentdb: decode ciphertext record: %w", err)
	}
	return f, true, nil
}

// SetCiphertext records the first arrival of an encrypted payload.
func SetCiphertext(tx *bolt.Tx, sum [32]byte, id workflow.ID, sender string, at time.Time) error {
	v, err := json.Marshal(FirstArrival{Incident: id, Sender: strings.ToLower(sender), At: at.UTC()})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketCipher).Put(sum[:], v)
}

// Quarantined lists the archived messages kept in quarantine, in arrival
// order: those whose processing failed (note "poison": a recovered panic,
// or a message the process died with, docs/threat-model.md A6) and the
// refused distributor posts (note "quarantine", G2). They belong to no
// incident, so the index by incident has none: the archive is read whole,
// which suits a command an operator runs after an alert.
func Quarantined(tx *bolt.Tx) ([]Record, error) {
	var out []Record
	err := tx.Bucket(bucketMessages).ForEach(func(_, v []byte) error {
		if !bytes.Contains(v, []byte(`"note":"poison"`)) && !bytes.Contains(v, []byte(`"note":"quarantine"`)) {
			return nil // most records: no need to decode them
		}
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("incidentdb: decode message: %w", err)
		}
		if r.Incident == "" && (r.Note == "poison" || r.Note == "quarantine") {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
