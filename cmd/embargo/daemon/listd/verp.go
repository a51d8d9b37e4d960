package listd

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Per-copy bounce addresses on the private lists (VERP, docs/design.md §4).
//
// A relay that accepts a copy and hears later from the recipient's server
// that it cannot be delivered sends a delivery status notification (RFC
// 3464) to the envelope sender (RFC 5321 §4.5.5, §6.1). With one
// envelope sender for every copy, security+bounces@, the DSN says whom the
// copy was for only in its own text, and nothing of which mail it was; a
// distributor could miss an embargoed notice and nobody would know. So
// each copy the security and distributors lists send to one recipient
// leaves with its own envelope sender, <list>+bounces-<token>@: the token
// is the number of a record of the copy (the list, the recipient, the kind
// of mail, the incident, when it was sent) with a MAC of the list and
// the number, encrypted as one block under a key kept in the store, so
// that nobody outside can name a copy nor count the lists' mail
// (docs/threat-model.md G7). The copy is queued from the plain +bounces@
// address; the delivery worker gives it its own, and writes its record,
// when it claims the copy for sending (Claimed), so that the transaction
// of the mail that caused the copy does none of it. The plain +bounces@
// address keeps working for mail sent before: archived, as always.
//
// A bounce that names a valid copy and says Action: failed (RFC 3464
// §2.3.3) raises one sealed alert to the SRC per recipient, incident and
// UTC day, and, for mail to distributors, an entry in the incident's
// history that /status shows; Action: delayed is counted only. Nothing
// else alerts: an unknown or forged token, an auto-reply (RFC 3834 replies
// go to the envelope sender too), a bounce of a bounce alert. Answers to a
// member (receipts, /status) and to outsiders (acknowledgements, warnings)
// keep the null sender (RFC 3834 §3.3): no DSN comes back for them (RFC
// 5321 §4.5.5), so they need no address. No bounce
// opens an incident or is answered (RFC 3464 §2: no DSN about a DSN).

// bucketVERP holds the copies' records and the alert limit:
//
//	"key"                            → the MAC key (32 bytes), made at first use
//	'r' ‖ seq (8 bytes BE)           → verpRecord JSON; seq is verpRowBit
//	                                   | the copy's queue row ID, or, for a
//	                                   copy queued before that, a number
//	                                   of the bucket's sequence
//	'l' ‖ UTC day (4 bytes BE) ‖ h   → nil: an alert was sent that day for
//	                                   h = SHA-256(incident ‖ 0 ‖ recipient)[:16]
var (
	bucketVERP = []byte("listd_verp")
	keyVERPKey = []byte("key")
)

const (
	verpRecPrefix   = 'r'
	verpLimitPrefix = 'l'
	// verpKeep is how long a copy's record is kept: longer than any
	// relay's queue lifetime (RFC 5321 §4.5.4.1 "at least 4-5 days") with
	// room for a DSN that itself waits in a queue.
	verpKeep = 30 * 24 * time.Hour
	// bounceTemplate is the alert's template; its copies have kind
	// "alert-bounced".
	bounceTemplate = "bounced"
	// maxQuotedDiagnostic bounds the Diagnostic-Code quoted in an alert.
	maxQuotedDiagnostic = 300
)

// verpRecord is what a per-copy bounce address stands for.
type verpRecord struct {
	List     lists.Name `json:"list"`
	To       string     `json:"to"`
	Kind     string     `json:"kind"`
	Incident string     `json:"inc,omitempty"`
	NoAlert  bool       `json:"noalert,omitempty"`
	At       time.Time  `json:"at"` // when the copy was first claimed for sending (queued, for copies queued before)
}

// Bounce results, the label "result" of embargo_bounces_total.
const (
	BounceAlerted  = "alerted"  // failed: the SRC was alerted
	BounceLimited  = "limited"  // failed: already alerted today for this recipient and incident
	BounceNoAlert  = "no-alert" // failed: a copy of a bounce or delivery-failure alert (an alert about it could loop)
	BounceDelayed  = "delayed"  // Action: delayed, counted only
	BounceOther    = "other"    // no DSN, or no failed or delayed recipient in it (an auto-reply)
	BounceUnknown  = "unknown"  // no such copy: a wrong, old or forged token
	bounceKindNone = "unknown"  // the kind label when the copy is unknown
)

var verpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// verpToken is the token of copy seq of list: seq (8 bytes) and the
// first 8 bytes of HMAC-SHA-256 over the list and seq, as one AES block
// under a key derived from the same key, in base32. The block hides seq,
// which would tell a recipient how much mail the lists sent between two
// of its copies; the MAC inside it binds the token to the list, so that
// one made up or changed opens to a wrong MAC (2^-64 of a chance).
func verpToken(key []byte, list lists.Name, seq uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seq)
	copy(b[8:], verpMAC(key, list, seq))
	verpCipher(key).Encrypt(b[:], b[:])
	return strings.ToLower(verpEncoding.EncodeToString(b[:]))
}

// verpOpen is verpToken's inverse: the copy's number, ok only when the
// MAC inside matches (compared in constant time).
func verpOpen(key []byte, list lists.Name, token string) (uint64, bool) {
	b, err := verpEncoding.DecodeString(strings.ToUpper(token))
	if err != nil || len(b) != aes.BlockSize {
		return 0, false
	}
	verpCipher(key).Decrypt(b, b)
	seq := binary.BigEndian.Uint64(b[:8])
	return seq, hmac.Equal(b[8:], verpMAC(key, list, seq))
}

func verpMAC(key []byte, list lists.Name, seq uint64) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "embargo verp mac\x00%s\x00%d", list, seq)
	return m.Sum(nil)[:8]
}

// verpCipher is the block cipher of key's tokens. The last one made is
// kept: a store has one key, and each claimed copy needs its cipher.
func verpCipher(key []byte) cipher.Block {
	if c := lastVERPCipher.Load(); c != nil && bytes.Equal(c.key, key) {
		return c.block
	}
	c := &verpCipherFor{key: bytes.Clone(key), block: newVERPCipher(key)}
	lastVERPCipher.Store(c)
	return c.block
}

type verpCipherFor struct {
	key   []byte
	block cipher.Block // AES: safe for concurrent use
}

var lastVERPCipher atomic.Pointer[verpCipherFor]

func newVERPCipher(key []byte) cipher.Block {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("embargo verp block"))
	c, err := aes.NewCipher(m.Sum(nil)[:16])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return c
}

// verpKey returns the MAC key, made from rnd in the first write
// transaction that needs one; with rnd nil, nil when there is none yet.
func verpKey(b *bolt.Bucket, rnd io.Reader) ([]byte, error) {
	if k := b.Get(keyVERPKey); len(k) == 32 {
		return k, nil
	}
	if rnd == nil {
		return nil, nil
	}
	k := make([]byte, 32)
	if _, err := io.ReadFull(rnd, k); err != nil {
		return nil, fmt.Errorf("listd: verp key: %w", err)
	}
	return k, b.Put(keyVERPKey, k)
}

// verpList is the private list whose plain bounce address m is sent from,
// when m is a copy to one recipient.
func (s *Service) verpList(m *queue.Msg) (lists.List, bool) {
	if len(m.To) != 1 || m.From == "" {
		return lists.List{}, false
	}
	for _, name := range []lists.Name{lists.Security, lists.Distributors} {
		l := s.o.Roster.List(name)
		if l.Address != "" && strings.EqualFold(m.From, l.SubAddress(lists.DetailBounces)) {
			return l, true
		}
	}
	return lists.List{}, false
}

// enqueue queues msgs in tx: queue.Enqueue, the one way listd queues
// mail. A copy a private list sends to one recipient is queued from the
// list's plain bounce address; Claimed gives it its own when the worker
// claims it. Nothing of the per-copy address is written here: the
// report's transaction, which intake waits for, stays off bucketVERP.
func (s *Service) enqueue(tx *bolt.Tx, now time.Time, msgs ...queue.Msg) error {
	return queue.Enqueue(tx, now, msgs...)
}

// verpRowBit marks the number of a copy's record as the copy's queue row
// ID (Claimed). Records made at enqueue before it have small numbers of
// their own, so the two never meet, and both sort in the order they were made
// (pruneVERP). Row IDs stay below it: a bbolt sequence counting rows.
const verpRowBit = 1 << 63

// Claimed is the worker's claim hook (queue.Options.Claimed): a row a
// private list sends to one recipient from its plain bounce address
// leaves from its own, <list>+bounces-<token>@, the token sealing the
// row's ID (verpToken). The copy's record, which a bounce at that address
// opens (lookupVERP), is written here, in the claim's commit: it is
// durable before the relay sees the copy, so a bounce that comes back at
// once finds it, and the report's transaction, which the reporter's 250
// waits for, does none of this work. A row claimed again (a retry, a
// restart between claim and send) gets the same address from the same
// record. A row never claimed has no record, nor was its address ever
// given out. A row queued before (its From already a per-copy address
// whose record was made at enqueue) is left as it is.
func (s *Service) Claimed(tx *bolt.Tx, r *queue.Row) error {
	if len(r.To) != 1 || r.From == "" {
		return nil // an answer from <>, or mail to several: no address of its own
	}
	s = s.current() // the lists in force now
	l, ok := s.verpList(&r.Msg)
	if !ok || r.ID >= verpRowBit {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketVERP)
	if err != nil {
		return err
	}
	key, err := verpKey(b, s.o.Rand)
	if err != nil {
		return err
	}
	seq := verpRowBit | r.ID
	// When the copy first went to the relay: the alert's "Sent", and
	// verpKeep counts from it, however long the copy waited in the queue.
	rec := verpRecord{List: l.Name, To: r.To[0], Kind: r.Kind, Incident: r.Incident, NoAlert: r.NoAlert, At: r.LastAttempt}
	if rec.At.IsZero() {
		rec.At = r.Created
	}
	if !sameVERP(b.Get(verpRecKey(seq)), rec) {
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put(verpRecKey(seq), v); err != nil {
			return err
		}
	}
	r.From = l.SubAddress(lists.DetailVERPPrefix + verpToken(key, l.Name, seq))
	return nil
}

// sameVERP reports whether the stored record v is rec's copy: a row
// claimed before keeps the record of its first claim (and its time); one
// whose record was pruned (an operator's retry of a copy failed long
// ago), or that is not the copy the record names, gets a new one.
func sameVERP(v []byte, rec verpRecord) bool {
	var old verpRecord
	return v != nil && json.Unmarshal(v, &old) == nil && old.List == rec.List && old.To == rec.To &&
		old.Kind == rec.Kind && old.Incident == rec.Incident && old.NoAlert == rec.NoAlert
}

func verpRecKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = verpRecPrefix
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// lookupVERP is the copy a per-copy bounce address of list names; ok is
// false for a detail of another shape, a token that does not open
// (verpOpen), or a copy whose record is gone.
func lookupVERP(tx *bolt.Tx, list lists.Name, detail string) (verpRecord, bool) {
	var rec verpRecord
	b := tx.Bucket(bucketVERP)
	if b == nil || !lists.IsVERP(detail) {
		return rec, false
	}
	key, _ := verpKey(b, nil)
	if key == nil {
		return rec, false
	}
	seq, ok := verpOpen(key, list, strings.TrimPrefix(strings.ToLower(detail), lists.DetailVERPPrefix))
	if !ok {
		return rec, false
	}
	v := b.Get(verpRecKey(seq))
	if v == nil || json.Unmarshal(v, &rec) != nil || rec.List != list {
		return verpRecord{}, false
	}
	return rec, true
}

// bounceCount is one bounce's labels for embargo_bounces_total, counted
// after the commit.
type bounceCount struct{ kind, result string }

// privateBounces handles every per-copy bounce address of a private list
// among d's recipients, in the message's transaction; the message itself
// is archived by the caller as every bounce is.
func (s *Service) privateBounces(tx *bolt.Tx, d *delivery, tally *[]bounceCount) error {
	for _, t := range d.targets {
		if t.List == lists.Announce || !lists.IsVERP(t.Detail) {
			continue
		}
		c, err := s.privateBounce(tx, t, d)
		if err != nil {
			return err
		}
		*tally = append(*tally, c)
		s.log.Info("bounce", "session", d.env.SessionID, "list", t.List, "kind", c.kind, "result", c.result)
	}
	return nil
}

func (s *Service) privateBounce(tx *bolt.Tx, t lists.Target, d *delivery) (bounceCount, error) {
	rec, ok := lookupVERP(tx, t.List, t.Detail)
	if !ok {
		return bounceCount{bounceKindNone, BounceUnknown}, nil
	}
	c := bounceCount{kind: rec.Kind}
	r, result := dsnVerdict(announce.ParseDSN(d.raw), rec.To)
	switch {
	case result != BounceAlerted:
		c.result = result
		return c, nil
	case rec.NoAlert || rec.Kind == "alert-"+bounceTemplate:
		// A copy of an alert about a bounce, or of the queue's alert about
		// a refused row: an alert about it could start a loop (RFC 3464
		// §2; the queue's rule for a refused alert).
		c.result = BounceNoAlert
		return c, nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketVERP)
	if err != nil {
		return c, err
	}
	lk := verpLimitKey(d.now, rec.Incident, rec.To)
	if b.Get(lk) != nil {
		c.result = BounceLimited
		return c, nil
	}
	if err := b.Put(lk, nil); err != nil {
		return c, err
	}
	c.result = BounceAlerted
	return c, s.bounceAlert(tx, rec, r, d.now)
}

// dsnVerdict reads the DSN's recipient blocks: the failed one (the block
// of the copy's recipient when there are several), and the result for
// it: BounceAlerted for a failed one, before any limit or exception;
// BounceDelayed, or BounceOther when the message reports neither.
func dsnVerdict(rs []announce.DSNRecipient, to string) (announce.DSNRecipient, string) {
	var failed, delayed []announce.DSNRecipient
	for _, r := range rs {
		switch r.Action {
		case "failed":
			failed = append(failed, r)
		case "delayed":
			delayed = append(delayed, r)
		}
	}
	if len(failed) == 0 {
		if len(delayed) > 0 {
			return delayed[0], BounceDelayed
		}
		return announce.DSNRecipient{}, BounceOther
	}
	for _, r := range failed {
		if strings.EqualFold(r.FinalRecipient, to) || strings.EqualFold(r.OriginalRecipient, to) {
			return r, BounceAlerted
		}
	}
	return failed[0], BounceAlerted
}

func verpLimitKey(now time.Time, incident, to string) []byte {
	h := sha256.Sum256([]byte(incident + "\x00" + strings.ToLower(to)))
	k := make([]byte, 0, 1+4+16)
	k = append(k, verpLimitPrefix)
	k = binary.BigEndian.AppendUint32(k, uint32(now.Unix()/86400))
	return append(k, h[:16]...)
}

// bounceAlert queues the SRC's sealed alert about a copy that bounced
// and, for mail to distributors, writes the bounce into the incident's
// history. The DSN's Status and Diagnostic-Code are the reporting MTA's
// words: escaped and cut (quoteBounce).
func (s *Service) bounceAlert(tx *bolt.Tx, rec verpRecord, r announce.DSNRecipient, now time.Time) error {
	status, diag := quoteBounce(r.Status, 16), quoteBounce(r.Diagnostic, maxQuotedDiagnostic)
	inc, found := &workflow.Incident{ID: "bounce"}, false
	if rec.Incident != "" {
		got, err := incidentdb.Get(tx, workflow.ID(rec.Incident))
		switch {
		case err == nil:
			inc, found = got, true
		case !errors.Is(err, incidentdb.ErrNotFound):
			return err
		default:
			inc = &workflow.Incident{ID: workflow.ID(rec.Incident)}
		}
	}
	l := s.o.Roster.List(rec.List)
	f := map[string]string{
		"id": string(inc.ID), "list": l.Address, "to": EscapeLine(rec.To), "kind": rec.Kind,
		"sent": workflow.FormatInstant(rec.At), "at": workflow.FormatInstant(now),
		"status": orNone(status), "diagnostic": orNone(diag),
	}
	if rec.Incident == "" {
		f["id"] = "(none)"
	}
	out, err := s.alertSRC(inc, workflow.AlertSRC{Template: bounceTemplate, Fields: f}, now)
	if err != nil {
		return err
	}
	if rec.List == lists.Distributors && found {
		after := *inc
		after.History = append(slices.Clip(after.History), workflow.Change{At: now, Command: workflow.BounceCommand,
			What: fmt.Sprintf("%s to %s bounced: %s", rec.Kind, EscapeLine(rec.To), strings.TrimSpace(status+" "+diag))})
		after.Updated = now
		if err := s.putIncident(tx, &after); err != nil {
			return err
		}
	}
	return s.enqueue(tx, now, out...)
}

// quoteBounce is one field of a DSN made safe to quote: every control and
// invalid byte escaped, cut to n bytes.
func quoteBounce(v string, n int) string {
	return cutLine(EscapeLine(strings.TrimSpace(v)), n)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// pruneVERP deletes the copies' records older than verpKeep and the
// alert limit's days before yesterday, at most staleBatch of each per
// call. Records are numbered in the order they were made, so the old
// ones come first.
func (s *Service) pruneVERP(now time.Time) (int, error) {
	var dead [][]byte
	if err := s.o.DB.View(func(tx *bolt.Tx) error {
		dead = oldVERP(tx, now)
		return nil
	}); err != nil || len(dead) == 0 {
		return 0, err
	}
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVERP)
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return len(dead), err
}

// oldVERP is the keys pruneVERP deletes. Only this deletes from the
// bucket, one tick at a time: what it finds is still there to delete.
func oldVERP(tx *bolt.Tx, now time.Time) [][]byte {
	b := tx.Bucket(bucketVERP)
	if b == nil {
		return nil
	}
	var dead [][]byte
	c := b.Cursor()
	for k, v := c.Seek([]byte{verpRecPrefix}); k != nil && k[0] == verpRecPrefix && len(dead) < staleBatch; k, v = c.Next() {
		var rec verpRecord
		if json.Unmarshal(v, &rec) == nil && now.Sub(rec.At) < verpKeep {
			break
		}
		dead = append(dead, bytes.Clone(k))
	}
	yesterday := binary.BigEndian.AppendUint32([]byte{verpLimitPrefix}, uint32(now.Unix()/86400)-1)
	for k, _ := c.Seek([]byte{verpLimitPrefix}); k != nil && bytes.Compare(k, yesterday) < 0 && len(dead) < 2*staleBatch; k, _ = c.Next() {
		dead = append(dead, bytes.Clone(k))
	}
	return dead
}
