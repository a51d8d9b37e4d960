package announce

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names; this package owns them.
var (
	bucketSubs     = []byte("announce_subs")     // address key → subscriber JSON
	bucketActive   = []byte("announce_active")   // seq (8 bytes BE) → delivery address ‖ 0 ‖ one-click token, active subscribers only
	bucketTokens   = []byte("announce_tokens")   // SHA-256(action, token) → token JSON
	bucketOneClick = []byte("announce_oneclick") // SHA-256(oneclick, token) → address key
	bucketRate     = []byte("announce_rate")     // address key → send times (8 bytes each) of recent confirmations
	bucketExpiry   = []byte("announce_expiry")   // expiry (8) ‖ kind (1) ‖ ref → nil: what Prune deletes
	bucketJobs     = []byte("announce_jobs")     // job key → job JSON
	bucketJobData  = []byte("announce_jobdata")  // job key → the message, stored once
	bucketOpenJobs = []byte("announce_openjobs") // job key → nil for jobs not yet released
	bucketRetry    = []byte("announce_retry")    // job key ‖ 0 ‖ address key → retry JSON
	bucketMeta     = []byte("announce_meta")     // "heartbeat", "active"
	// bucketLeft remembers who left, so that an operator's import does not
	// bring them back: SHA-256(label, address key) → left JSON. It holds no
	// address. OpenStore creates it; a store opened read-only before it
	// existed reads as if nobody had left.
	bucketLeft = []byte("announce_left")
)

var allBuckets = [][]byte{bucketSubs, bucketActive, bucketTokens, bucketOneClick, bucketRate,
	bucketExpiry, bucketJobs, bucketJobData, bucketOpenJobs, bucketRetry, bucketMeta, bucketLeft}

var (
	metaHeartbeat = []byte("heartbeat") // unix nanos of the last persisted heartbeat
	metaActive    = []byte("active")    // number of active subscribers
)

// schemaVersion is the "v" field of every JSON record.
const schemaVersion = 1

// Errors.
var (
	ErrNoInit       = errors.New("announce: buckets missing (Init not called)")
	ErrUnknownToken = errors.New("announce: unknown or used token")
	ErrBadAddress   = errors.New("announce: not a deliverable address")
	ErrJobExists    = errors.New("announce: a release with this ID exists")
	ErrNoJob        = errors.New("announce: no such release")
	ErrNotHeld      = errors.New("announce: not held")
	ErrBadJob       = errors.New("announce: bad release")
)

// Init creates the package's buckets. Call it once, inside the opener's Update.
func Init(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("announce: create bucket %s: %w", name, err)
		}
	}
	return nil
}

// State is where a subscriber stands.
type State string

const (
	// StatePending: asked to subscribe, not confirmed yet. Removed when the
	// last confirmation token expires.
	StatePending State = "pending"
	// StateActive: confirmed; receives releases.
	StateActive State = "active"
	// StateDisabled: too many releases bounced; receives nothing until the
	// address subscribes and confirms again.
	StateDisabled State = "disabled"
)

// How an address joined the list (Subscriber.Via).
const (
	ViaMail     = "mail"     // asked by mail and confirmed (double opt-in)
	ViaImport   = "import"   // an operator's import of another list's members
	ViaOperator = "operator" // an operator's `embargo subscribers add`
)

// Subscriber is one address on the list.
type Subscriber struct {
	Address    string    // as given, used for delivery
	Name       string    // display name, from an import or add; "" if unknown
	Via        string    // ViaMail, ViaImport, ViaOperator; "" for records older than the field
	State      State     //
	Created    time.Time // first request
	Subscribed time.Time // last confirmation; zero while pending
	Bounces    int       // releases that bounced permanently since the last confirmation
	// Seq is the subscriber's place in the delivery order: the key of the
	// active index, assigned at each activation. Releases walk it in order.
	Seq uint64
}

// subRecord is the stored JSON of a subscriber.
type subRecord struct {
	V            int       `json:"v"`
	Address      string    `json:"addr"`
	Name         string    `json:"name,omitempty"`
	Via          string    `json:"via,omitempty"`
	State        State     `json:"state"`
	Created      time.Time `json:"created"`
	Subscribed   time.Time `json:"subscribed,omitzero"`
	PendingUntil time.Time `json:"pending_until,omitzero"`
	Bounces      int       `json:"bounces,omitempty"`
	BounceJobs   []string  `json:"bounce_jobs,omitempty"` // the last releases counted, so that one release counts once
	Seq          uint64    `json:"seq,omitempty"`
	// OneClick is the subscriber's RFC 8058 token. It is stored in clear
	// because every release in one-click mode writes it into a URI; the
	// lookup index holds only its hash. It can do one thing: unsubscribe
	// this address.
	OneClick string `json:"oneclick,omitempty"`
}

func (r *subRecord) public() Subscriber {
	return Subscriber{Address: r.Address, Name: r.Name, Via: r.Via, State: r.State, Created: r.Created, Subscribed: r.Subscribed, Bounces: r.Bounces, Seq: r.Seq}
}

// buckets bundles the buckets of one transaction.
type buckets struct {
	subs, active, tokens, oneclick, rate, expiry *bolt.Bucket
	jobs, jobdata, openjobs, retry, meta         *bolt.Bucket
	left                                         *bolt.Bucket // nil in a read-only store made before it existed
}

func open(tx *bolt.Tx) (*buckets, error) {
	b := &buckets{
		subs: tx.Bucket(bucketSubs), active: tx.Bucket(bucketActive), tokens: tx.Bucket(bucketTokens),
		oneclick: tx.Bucket(bucketOneClick), rate: tx.Bucket(bucketRate), expiry: tx.Bucket(bucketExpiry),
		jobs: tx.Bucket(bucketJobs), jobdata: tx.Bucket(bucketJobData), openjobs: tx.Bucket(bucketOpenJobs),
		retry: tx.Bucket(bucketRetry), meta: tx.Bucket(bucketMeta), left: tx.Bucket(bucketLeft),
	}
	if b.left == nil && tx.Writable() {
		return nil, ErrNoInit
	}
	if b.subs == nil || b.active == nil || b.tokens == nil || b.oneclick == nil || b.rate == nil ||
		b.expiry == nil || b.jobs == nil || b.jobdata == nil || b.openjobs == nil || b.retry == nil || b.meta == nil {
		return nil, ErrNoInit
	}
	return b, nil
}

func (b *buckets) getSub(key string) (*subRecord, error) {
	v := b.subs.Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var r subRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("announce: decode subscriber: %w", err)
	}
	if r.V != schemaVersion {
		return nil, fmt.Errorf("announce: subscriber record has schema version %d, want %d", r.V, schemaVersion)
	}
	return &r, nil
}

func (b *buckets) putSub(key string, r *subRecord) error {
	r.V = schemaVersion
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("announce: encode subscriber: %w", err)
	}
	if err := b.subs.Put([]byte(key), v); err != nil {
		return fmt.Errorf("announce: put subscriber: %w", err)
	}
	return nil
}

// activate makes the subscriber at key active with a fresh place at the end
// of the delivery order and a fresh one-click token; bounces start again.
func (b *buckets) activate(key, addr string, r *subRecord, now time.Time, rnd io.Reader) error {
	if r == nil {
		r = &subRecord{Created: now}
	}
	if r.State == StateActive {
		// Already active: keep its place. A confirmation proves the address
		// works, so the bounce count starts again.
		r.Address, r.Subscribed = addr, now
		r.PendingUntil, r.Bounces, r.BounceJobs = time.Time{}, 0, nil
		return b.putSub(key, r)
	}
	tok, err := newToken(rnd)
	if err != nil {
		return err
	}
	if r.OneClick != "" {
		if err := b.oneclick.Delete(tokenHash(actionOneClick, r.OneClick)); err != nil {
			return err
		}
	}
	seq, err := b.active.NextSequence()
	if err != nil {
		return fmt.Errorf("announce: next sequence: %w", err)
	}
	r.Address, r.State, r.Subscribed, r.Seq = addr, StateActive, now, seq
	r.PendingUntil, r.Bounces, r.BounceJobs, r.OneClick = time.Time{}, 0, nil, tok
	// Places are only ever added at the end: full pages, so that a
	// release reads as few as it can (bbolt splits at half by default).
	b.active.FillPercent = 1
	if err := b.active.Put(seqKey(seq), activeValue(addr, tok)); err != nil {
		return fmt.Errorf("announce: index subscriber: %w", err)
	}
	if err := b.oneclick.Put(tokenHash(actionOneClick, tok), []byte(key)); err != nil {
		return fmt.Errorf("announce: index one-click token: %w", err)
	}
	if err := b.addActive(1); err != nil {
		return err
	}
	return b.putSub(key, r)
}

// activeValue is an entry of the delivery index: the address and the
// one-click token, all a release needs, so that it never reads the
// subscriber records (10^6 of them would be most of the store).
func activeValue(addr, token string) []byte {
	return []byte(addr + "\x00" + token)
}

// activeEntry reads an entry of the delivery index; one written before
// it carried the token has the address alone. Both are copies.
func activeEntry(v []byte) (addr, token string) {
	a, t, _ := bytes.Cut(v, []byte{0})
	return string(a), string(t)
}

// leaveActive takes an active subscriber out of the delivery order.
func (b *buckets) leaveActive(r *subRecord) error {
	if r.State != StateActive {
		return nil
	}
	if err := b.active.Delete(seqKey(r.Seq)); err != nil {
		return fmt.Errorf("announce: unindex subscriber: %w", err)
	}
	r.Seq = 0
	return b.addActive(-1)
}

// remove deletes the subscriber at key and everything that points to it.
func (b *buckets) remove(key string, r *subRecord) error {
	if err := b.leaveActive(r); err != nil {
		return err
	}
	if r.OneClick != "" {
		if err := b.oneclick.Delete(tokenHash(actionOneClick, r.OneClick)); err != nil {
			return err
		}
	}
	return b.subs.Delete([]byte(key))
}

func (b *buckets) addActive(d int64) error {
	n := int64(0)
	if v := b.meta.Get(metaActive); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n = max(0, n+d)
	return b.meta.Put(metaActive, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func (b *buckets) activeCount() int {
	if v := b.meta.Get(metaActive); len(v) == 8 {
		return int(binary.BigEndian.Uint64(v))
	}
	return 0
}

// lastSeq is the highest place in the delivery order now in use (0: none).
func (b *buckets) lastSeq() uint64 {
	k, _ := b.active.Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// Lookup returns the subscriber with address addr (compared without case).
func Lookup(tx *bolt.Tx, addr string) (Subscriber, bool, error) {
	b, err := open(tx)
	if err != nil {
		return Subscriber{}, false, err
	}
	_, key, ok := normAddress(addr)
	if !ok {
		return Subscriber{}, false, nil
	}
	r, err := b.getSub(key)
	if err != nil || r == nil {
		return Subscriber{}, false, err
	}
	return r.public(), true, nil
}

// ForEach calls fn for every subscriber, in address order, whatever its
// state (for `embargo announce list` and exports). fn must not keep the
// transaction.
func ForEach(tx *bolt.Tx, fn func(Subscriber) error) error {
	b, err := open(tx)
	if err != nil {
		return err
	}
	return b.subs.ForEach(func(k, v []byte) error {
		var r subRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("announce: decode subscriber: %w", err)
		}
		return fn(r.public())
	})
}

// Count returns the number of active subscribers.
func Count(tx *bolt.Tx) (int, error) {
	b, err := open(tx)
	if err != nil {
		return 0, err
	}
	return b.activeCount(), nil
}

// Activate subscribes addr at once, without a confirmation: for an operator
// importing a list whose members already opted in elsewhere, never for
// requests by mail. An active address keeps its place.
func Activate(tx *bolt.Tx, addr string, now time.Time, o Options) error {
	o = o.withDefaults()
	b, err := open(tx)
	if err != nil {
		return err
	}
	a, key, ok := normAddress(addr)
	if !ok {
		return ErrBadAddress
	}
	r, err := b.getSub(key)
	if err != nil {
		return err
	}
	return b.activate(key, a, r, now, o.Rand)
}

// Remove deletes addr from the list, whatever its state (an operator's
// removal), and remembers that it left (an import does not bring it back).
// It reports whether there was anything to remove.
func Remove(tx *bolt.Tx, addr string, now time.Time) (bool, error) {
	b, err := open(tx)
	if err != nil {
		return false, err
	}
	_, key, ok := normAddress(addr)
	if !ok {
		return false, nil
	}
	r, err := b.getSub(key)
	if err != nil || r == nil {
		return false, err
	}
	if err := b.remove(key, r); err != nil {
		return false, err
	}
	return true, b.markLeft(key, LeftOperator, now)
}

// Expiry index kinds.
const (
	expToken   byte = 't' // ref: token hash
	expRate    byte = 'r' // ref: address key
	expPending byte = 'p' // ref: address key
)

func expiryKey(at time.Time, kind byte, ref []byte) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(ref)), uint64(unixNano(at)))
	k = append(k, kind)
	return append(k, ref...)
}

// Prune deletes up to limit expired tokens, rate-limit records and pending
// subscribers whose last token expired, and returns how many index entries
// it handled. HandleRequest and the Fanout's heartbeat call it with a small
// limit, so the cost of cleaning up is spread and bounded.
func Prune(tx *bolt.Tx, now time.Time, limit int) (int, error) {
	b, err := open(tx)
	if err != nil {
		return 0, err
	}
	return b.prune(now, limit)
}

func (b *buckets) prune(now time.Time, limit int) (int, error) {
	var done [][]byte
	c := b.expiry.Cursor()
	for k, _ := c.First(); k != nil && len(done) < limit; k, _ = c.Next() {
		if len(k) < 9 {
			done = append(done, bytes.Clone(k))
			continue
		}
		if int64(binary.BigEndian.Uint64(k[:8])) > unixNano(now) {
			break
		}
		done = append(done, bytes.Clone(k))
	}
	for _, k := range done {
		if err := b.expiry.Delete(k); err != nil {
			return 0, err
		}
		if len(k) < 9 {
			continue
		}
		ref := k[9:]
		switch k[8] {
		case expToken:
			if err := b.tokens.Delete(ref); err != nil {
				return 0, err
			}
		case expRate:
			times := recentTimes(b.rate.Get(ref), now)
			if len(times) == 0 {
				if err := b.rate.Delete(ref); err != nil {
					return 0, err
				}
			}
		case expPending:
			r, err := b.getSub(string(ref))
			if err != nil {
				return 0, err
			}
			if r != nil && r.State == StatePending && !r.PendingUntil.After(now) {
				if err := b.subs.Delete(ref); err != nil {
					return 0, err
				}
			}
		}
	}
	return len(done), nil
}

// normAddress checks that addr is a plain ASCII local@domain that can be
// written into RCPT TO as it is (dot-atom local part, LDH domain with a
// dot; docs/threat-model.md B3, B4), and returns it trimmed and its key: the address
// in lower case, so that one mailbox has one subscription. A local part
// holding "=?" is refused: RFC 2047 §5 (3) forbids encoded words in an
// addr-spec, yet a reader that decodes a whole To field turns
// "=?utf-8?q?a=0D=0ABcc=3A_x=40y.z?=@example.net" into CR LF and a field
// (docs/threat-model.md B10, found by FuzzSubscriptionMail).
func normAddress(addr string) (clean, key string, ok bool) {
	addr = strings.TrimSpace(addr)
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	if len(addr) < 5 || len(addr) > 254 {
		return "", "", false
	}
	at := strings.IndexByte(addr, '@')
	if at <= 0 || at != strings.LastIndexByte(addr, '@') {
		return "", "", false
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 || !dotAtom(local) || !ldhDomain(domain) || strings.Contains(local, "=?") {
		return "", "", false
	}
	return addr, strings.ToLower(addr), true
}

func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func ldhDomain(s string) bool {
	if len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Token actions: what a token may do. The hash under which a token is
// stored includes its action, so a token can never be looked up as another
// kind (docs/threat-model.md F1).
const (
	actionSubscribe   = "subscribe"
	actionUnsubscribe = "unsubscribe"
	actionOneClick    = "oneclick"
)

// tokenEncoding: lower-case base32 without padding, because the local part
// carrying it is compared without case (lists.Route lower-cases it).
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// tokenLen is the length of an encoded 128-bit token.
const tokenLen = 26

// newToken draws 128 bits from rnd (crypto/rand by default; docs/threat-model.md F1:
// never derived from a secret).
func newToken(rnd io.Reader) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", fmt.Errorf("announce: random: %w", err)
	}
	return tokenEncoding.EncodeToString(b[:]), nil
}

func validToken(t string) bool {
	if len(t) != tokenLen {
		return false
	}
	_, err := tokenEncoding.DecodeString(t)
	return err == nil
}

// tokenHash is the stored form of a token: SHA-256 over a label, the
// action and the token. The store never holds a confirmation token itself.
func tokenHash(action, token string) []byte {
	h := sha256.New()
	h.Write([]byte("embargo announce token\x00"))
	h.Write([]byte(action))
	h.Write([]byte{0})
	h.Write([]byte(token))
	return h.Sum(nil)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }

// unixNano clamps to the range where the big-endian key sorts like the time.
func unixNano(t time.Time) int64 {
	if t.Before(time.Unix(0, 0)) {
		return 0
	}
	return t.UnixNano()
}
