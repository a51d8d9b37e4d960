package listd

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A message whose processing kills the whole process (docs/threat-model.md
// A6): a fatal error recover() cannot catch (Go's "fatal error: stack
// overflow", "concurrent map writes", out of memory, a runtime throw in a
// dependency) or the kernel's OOM killer. Its sender is never answered, its
// MTA sends it again, and each try brought the daemon down again: a crash
// loop that stops all intake. Attempts counts, for each message, the deaths
// of the process while it was being processed; a message that was in
// progress at PoisonDeaths deaths is not processed again but kept in
// quarantine and answered 250 (Service.Handle).
//
// How a death is seen. Before a message is processed its key (the SHA-256
// of its bytes) is written into a slot of the in-flight file beside the
// store (InflightFile), and the slot is zeroed when its processing ends,
// whatever the outcome. A slot still set at the next start names a message
// that was being processed when the process died: its count goes up, in the
// store, in one transaction of the start.
//
// Why this costs nothing measurable on every message. The slot is written
// with one pwrite and zeroed with another, without fsync: what a process
// wrote is in the kernel's page cache, which a process death, however it
// comes, does not lose; only a power loss or a kernel crash would, and
// neither is caused by a message (after one, the file may be as it was a
// few seconds before: a death counted for a message in progress then,
// which one death does not quarantine). So there is no "careful mode" to enter
// after an unclean end, and the first death is counted as well: about 2 µs
// a message (BenchmarkAttempt) beside the 1 ms or so BenchmarkIntake takes
// per report, whose commit alone syncs twice. A clean stop empties the file
// (Close); the store's tables are written only at a start that finds a
// slot set and when a suspect survives, never on the normal path.
//
// Bystanders. Messages processed together with the killer are in progress
// at its death as well. A message with a death on its count (a suspect) is
// therefore processed alone: it waits until the messages in progress end,
// and the others wait for it (gate). Its next death, if any, is its own, so
// PoisonDeaths = 2 quarantines the killer at its third arrival, and a
// bystander reaches it only if the process dies again while it is
// processed alone (a kill -9 at that very moment). A suspect that is
// processed without a death is forgotten.
type Attempts struct {
	db   *bolt.DB
	f    *os.File
	path string
	log  *slog.Logger

	// gate: a suspect holds it exclusively while it is processed, every
	// other message shares it. In the normal path that is an uncontended
	// read lock.
	gate sync.RWMutex

	mu     sync.Mutex
	free   []int64 // slots free for the next message
	nslots int64   // slots the file has had (the next new one)
	known  map[[32]byte]deathRecord
	closed bool

	warned atomic.Bool // a failed write was logged once
}

const (
	// InflightFile is the in-flight file's name in the data directory.
	InflightFile = "embargo.inflight"

	// PoisonDeaths is how many deaths of the process a message may be in
	// progress at before it is quarantined on arrival. One death is no
	// evidence: a kill -9, an OOM kill caused by something else, or a
	// message processed beside the killer. The second is suffered alone
	// (suspects are processed one at a time), so it is the message's own;
	// waiting for a third would cost one more stop of all intake.
	PoisonDeaths = 2

	// AttemptTTL is how long a count is kept after its last death: the
	// time a sending MTA keeps retrying (RFC 5321 §4.5.4.1 gives up after
	// 4-5 days; Postfix's maximal_queue_lifetime is 5 days, as is our own
	// queue's). A message that comes back later is processed afresh.
	AttemptTTL = 5 * 24 * time.Hour

	// maxAttempts bounds the table: each entry needs a death, and at most
	// the SMTP and LMTP sessions (a few hundred) are in progress at one, so
	// only a daemon killed over and over under load comes near it; then
	// the oldest go first.
	maxAttempts = 4096

	inflightMagic = "EMBINFL1"
	inflightHead  = 32 // magic, run ID (16 bytes), padding
	slotSize      = sha256.Size
	// preallocSlots are written at open, so that a slot write seldom
	// extends the file; maxReadSlots bounds what a start reads.
	preallocSlots = 128
	maxReadSlots  = 1 << 16
)

// bucketAttempts holds the counts: SHA-256 of a message → deaths (4 bytes)
// ‖ the last death (Unix ns, 8 bytes), both big-endian; and keyCountedRun,
// the run ID of the in-flight file last counted, so that a start that dies
// between its commit and its rewrite of the file counts nothing twice.
var (
	bucketAttempts = []byte("poison_attempts")
	keyCountedRun  = []byte("counted-run")
)

type deathRecord struct {
	deaths int
	last   time.Time
}

// attempt is one message being processed: its slot in the in-flight file.
type attempt struct {
	slot    int64
	sum     [32]byte
	suspect bool
}

// OpenAttempts opens the in-flight file in dir (created 0600 if missing),
// counts a death for each message it finds in progress, drops the counts
// older than AttemptTTL, and starts a new, empty file. Call it after the
// store is opened (bbolt's lock keeps a second daemon out of dir), once per
// start, and Close it at a clean stop.
func OpenAttempts(db *bolt.DB, dir string, now time.Time, log *slog.Logger) (*Attempts, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, InflightFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("in-flight file: %w", err)
	}
	run, inflight, err := readInflight(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a := &Attempts{db: db, f: f, path: path, log: log, known: map[[32]byte]deathRecord{}}
	if err := db.Update(func(tx *bolt.Tx) error { return a.count(tx, run, inflight, now) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("count the attempts of the previous run: %w", err)
	}
	for _, sum := range inflight {
		// IDs only: the hash names the message, its archive entry and its
		// later quarantine; nothing of its content is known here.
		log.Warn("the previous run ended while this message was being processed (the process was killed or crashed); it is a suspect",
			"sha256", hex.EncodeToString(sum[:]), "deaths", a.known[sum].deaths, "quarantine_at", PoisonDeaths)
	}
	if err := a.reset(); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

// readInflight returns the run ID and the messages in progress in the
// in-flight file; an empty or foreign file holds none.
func readInflight(f *os.File) (run []byte, sums [][32]byte, err error) {
	b, err := io.ReadAll(io.LimitReader(f, inflightHead+maxReadSlots*slotSize))
	if err != nil {
		return nil, nil, fmt.Errorf("read the in-flight file: %w", err)
	}
	if len(b) < inflightHead || string(b[:len(inflightMagic)]) != inflightMagic {
		return nil, nil, nil
	}
	run = bytes.Clone(b[len(inflightMagic) : len(inflightMagic)+16])
	var zero [32]byte
	for off := inflightHead; off+slotSize <= len(b); off += slotSize {
		var sum [32]byte
		copy(sum[:], b[off:])
		if sum != zero && !slices.Contains(sums, sum) {
			sums = append(sums, sum)
		}
	}
	return run, sums, nil
}

// count is OpenAttempts's transaction: a death for each message in
// progress (unless this run of the file was counted), expiry, the bound,
// and the table read into memory.
func (a *Attempts) count(tx *bolt.Tx, run []byte, inflight [][32]byte, now time.Time) error {
	b, err := tx.CreateBucketIfNotExists(bucketAttempts)
	if err != nil {
		return err
	}
	if len(inflight) > 0 && !bytes.Equal(b.Get(keyCountedRun), run) {
		for _, sum := range inflight {
			r := decodeDeaths(b.Get(sum[:]))
			r.deaths++
			r.last = now
			if err := b.Put(sum[:], encodeDeaths(r)); err != nil {
				return err
			}
		}
		if err := b.Put(keyCountedRun, run); err != nil {
			return err
		}
	}
	type entry struct {
		sum [32]byte
		r   deathRecord
	}
	var keep []entry
	var drop [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != sha256.Size {
			continue
		}
		r := decodeDeaths(v)
		if r.deaths == 0 || now.Sub(r.last) > AttemptTTL {
			drop = append(drop, bytes.Clone(k))
			continue
		}
		var sum [32]byte
		copy(sum[:], k)
		keep = append(keep, entry{sum, r})
	}
	if len(keep) > maxAttempts {
		slices.SortFunc(keep, func(x, y entry) int { return y.r.last.Compare(x.r.last) })
		for _, e := range keep[maxAttempts:] {
			drop = append(drop, bytes.Clone(e.sum[:]))
		}
		keep = keep[:maxAttempts]
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for _, e := range keep {
		a.known[e.sum] = e.r
	}
	return nil
}

// reset starts the in-flight file of this run: a new run ID and free slots.
// No fsync, as for the slots.
func (a *Attempts) reset() error {
	buf := make([]byte, inflightHead+preallocSlots*slotSize)
	copy(buf, inflightMagic)
	if _, err := rand.Read(buf[len(inflightMagic) : len(inflightMagic)+16]); err != nil {
		return err
	}
	if err := a.f.Truncate(0); err != nil {
		return fmt.Errorf("in-flight file: %w", err)
	}
	if _, err := a.f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("in-flight file: %w", err)
	}
	a.nslots = preallocSlots
	a.free = a.free[:0]
	for i := int64(preallocSlots - 1); i >= 0; i-- {
		a.free = append(a.free, i)
	}
	return nil
}

// Close ends the run cleanly: the in-flight file is emptied, so the next
// start counts nothing. A message still in progress (a stop that gave up
// waiting for its session) is not counted: it did not kill the process.
func (a *Attempts) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	return errors.Join(a.f.Truncate(0), a.f.Close())
}

// Deaths is the count of the message whose SHA-256 is sum, as of now.
func (a *Attempts) Deaths(sum [32]byte, now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deathsLocked(sum, now)
}

func (a *Attempts) deathsLocked(sum [32]byte, now time.Time) int {
	r, ok := a.known[sum]
	if !ok || now.Sub(r.last) > AttemptTTL {
		return 0
	}
	return r.deaths
}

// begin records that the message sum is being processed and returns its
// attempt, for end; or poisoned when the message was in progress at
// PoisonDeaths deaths and must not be processed again. A suspect waits
// here until it is alone.
func (a *Attempts) begin(sum [32]byte, now time.Time) (t *attempt, poisoned bool) {
	deaths := a.Deaths(sum, now)
	if deaths >= PoisonDeaths {
		return nil, true
	}
	t = &attempt{sum: sum, suspect: deaths > 0}
	if t.suspect {
		a.gate.Lock()
	} else {
		a.gate.RLock()
	}
	a.mu.Lock()
	if n := len(a.free); n > 0 {
		t.slot, a.free = a.free[n-1], a.free[:n-1]
	} else {
		t.slot = a.nslots
		a.nslots++
	}
	a.mu.Unlock()
	a.write(t.slot, sum[:])
	return t, false
}

// end records that the attempt's processing ended without a death.
func (a *Attempts) end(t *attempt) {
	var zero [slotSize]byte
	a.write(t.slot, zero[:])
	a.mu.Lock()
	a.free = append(a.free, t.slot)
	a.mu.Unlock()
	if t.suspect {
		a.gate.Unlock()
	} else {
		a.gate.RUnlock()
	}
}

// write puts b in a slot. A failure is logged once and the message is
// processed all the same: the guard is lost for it, not the mail.
func (a *Attempts) write(slot int64, b []byte) {
	_, err := a.f.WriteAt(b, inflightHead+slot*slotSize)
	if errors.Is(err, os.ErrClosed) {
		return // a session the stop gave up waiting for: nothing to record
	}
	if err != nil && a.warned.CompareAndSwap(false, true) {
		a.log.Error("cannot write the in-flight file; a message that kills the process will not be counted", "path", a.path, "err", err)
	}
}

// forget drops a suspect that was processed without a death, in tx.
func (a *Attempts) forget(tx *bolt.Tx, sum [32]byte) error {
	b, err := tx.CreateBucketIfNotExists(bucketAttempts)
	if err != nil {
		return err
	}
	return b.Delete(sum[:])
}

// forgotten drops a suspect from memory once forget is committed.
func (a *Attempts) forgotten(sum [32]byte) {
	a.mu.Lock()
	delete(a.known, sum)
	a.mu.Unlock()
}

func encodeDeaths(r deathRecord) []byte {
	v := make([]byte, 12)
	binary.BigEndian.PutUint32(v, uint32(min(r.deaths, 1<<31)))
	binary.BigEndian.PutUint64(v[4:], uint64(r.last.UnixNano()))
	return v
}

func decodeDeaths(v []byte) deathRecord {
	if len(v) != 12 {
		return deathRecord{}
	}
	return deathRecord{deaths: int(binary.BigEndian.Uint32(v)), last: time.Unix(0, int64(binary.BigEndian.Uint64(v[4:])))}
}

// Suspect is a message that was in progress at a death of the process, as
// the store holds it.
type Suspect struct {
	SHA256 string    `json:"sha256"` // of the message's bytes, hex
	Deaths int       `json:"deaths"`
	Last   time.Time `json:"last_death"`
}

// Suspects lists the attempt table, expired entries included until the
// next start drops them (`embargo status` shows them).
func Suspects(tx *bolt.Tx) []Suspect {
	b := tx.Bucket(bucketAttempts)
	if b == nil {
		return nil
	}
	var out []Suspect
	b.ForEach(func(k, v []byte) error {
		if len(k) == sha256.Size {
			r := decodeDeaths(v)
			out = append(out, Suspect{SHA256: hex.EncodeToString(k), Deaths: r.deaths, Last: r.last.UTC()})
		}
		return nil
	})
	return out
}
