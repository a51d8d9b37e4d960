package listd

import (
	"bytes"
	"context"
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
	"golang.org/x/sync/semaphore"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
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
// The same loop comes from work the daemon starts itself, which it starts
// again at each start: a queue row whose sealing or sending kills the
// process (the worker claims it again at once), or an incident whose tick
// does (the tick runs at start). Those are counted in the same file and the
// same table, under a key of their own (work.go): a row at RowPoisonDeaths
// fails with an alert instead of being tried, an incident's tick is skipped
// with an alert until the incident changes. So are the announce fan-out's
// batches (batchguard.go: set aside, the release held) and the tick's own
// jobs, the governance tick and the weekly digest (tickjobs.go: skipped
// with an alert until what they read changes).
//
// How a death is seen. Before a message is processed its key (the SHA-256
// of its bytes; for a row or a tick, labelKey) is written into a slot of
// the in-flight file beside the store (InflightFile), and the slot is
// zeroed when its processing ends, whatever the outcome. A slot still set
// at the next start names work that was in progress when the process died:
// its count goes up, in the store, in one transaction of the start.
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
// Bystanders. Work in progress together with the killer is in progress at
// its death as well: other messages, rows being sent, incidents being
// ticked. Work with a death on its count (a suspect) is therefore done
// alone, whatever its kind: it waits until the work in progress ends, and
// new work waits for it (gate). Its next death, if any, is its own, so
// PoisonDeaths = 2 quarantines the killer at its third arrival, and a
// bystander reaches it only if the process dies again while it is
// processed alone (a kill -9 at that very moment). A suspect that is
// processed without a death is forgotten. A suspect waits at most
// SuspectWait to be alone (a row being sent to a slow relay holds the gate
// meanwhile, and so does everything queued behind the suspect); past it,
// it gives up for now: a message gets 451 and comes back, a row is
// retried later, a tick at the next sweep.
type Attempts struct {
	db     *bolt.DB
	f      *os.File
	path   string
	log    *slog.Logger
	secret [32]byte // labelKey's: a row's or a tick's key cannot be a message's SHA-256
	run    [16]byte // this run's ID (reset), whose start tags every slot written

	// gate: a suspect holds all of it while it is processed, every other
	// piece of work one unit. On the normal path that is an uncontended
	// mutex. It is a weighted semaphore rather than a sync.RWMutex so that
	// a suspect can stop waiting (SuspectWait), which lets the work queued
	// behind it go on.
	gate *semaphore.Weighted

	mu     sync.Mutex
	free   []int64 // slots free for the next piece of work
	nslots int64   // slots the file has had (the next new one)
	known  map[[32]byte]deathRecord
	closed bool

	warned atomic.Bool // a failed write was logged once
}

const (
	// InflightFile is the in-flight file's name in the data directory.
	InflightFile = "embargo.inflight"

	// PoisonDeaths is how many deaths of the process a message may be in
	// progress at before it is quarantined on arrival (a row: failed; a
	// tick: skipped). One death is no evidence: a kill -9, an OOM kill
	// caused by something else, or work done beside the killer. The second
	// is suffered alone (suspects are processed one at a time), so it is
	// the work's own; waiting for a third would cost one more stop of all
	// intake.
	PoisonDeaths = 2

	// RowPoisonDeaths is PoisonDeaths for a queue row: one more. A row is
	// in progress far longer than a message (sealed, then sent over the
	// network: milliseconds to minutes), and a death in the middle of a
	// batch (up to 64 rows to a pipelining relay) leaves dozens of
	// suspects, each then sent alone, one after another, while all other
	// work waits. An unrelated kill in that window (kill -9, an OOM kill
	// caused by something else: a death carries no cause) would fail a
	// healthy row at its second death; the kill -9 loop under load
	// (cmd/embargo.TestCrashLoop) did, once in a race run. A row now needs
	// two deaths while alone, which one unrelated kill cannot give it; a
	// real killer costs one more restart.
	RowPoisonDeaths = 3

	// AttemptTTL is how long a count is kept after its last death: the
	// time a sending MTA keeps retrying (RFC 5321 §4.5.4.1 gives up after
	// 4-5 days; Postfix's maximal_queue_lifetime is 5 days, as is our own
	// queue's). A message that comes back later is processed afresh.
	AttemptTTL = 5 * 24 * time.Hour

	// SuspectWait is how long a suspect waits to be alone before it gives
	// up for now. The work in progress it waits for is short (a message,
	// an incident's tick) except a row being sent to a slow relay; new
	// work waits behind the suspect meanwhile, so this bounds that stall.
	SuspectWait = 30 * time.Second

	// maxAttempts bounds the table: each entry needs a death, and at most
	// the SMTP and LMTP sessions (a few hundred), the rows in delivery and
	// the incidents being ticked are in progress at one, so only a daemon
	// killed over and over under load comes near it; then the oldest go
	// first.
	maxAttempts = 4096

	inflightMagic = "EMBINFL3"
	inflightHead  = 32 // magic, run ID (16 bytes), padding
	// slotSize: the key (32 bytes), the kind of work (1), the label's
	// length (1), the label (maxLabel): what `embargo status` names a
	// row, a tick or a fan-out batch by, since its key is a one-way hash;
	// and, in its last runTagSize bytes, the start of the run ID the slot
	// was written under. 128 bytes since a batch's label holds its
	// release's ID (up to 40 characters) and its stretch of the delivery
	// order; still one pwrite within a page.
	//
	// Why the run tag. The file is never synced, so after a power loss (not
	// a process death) it holds whichever of its pages the kernel happened
	// to write back: this run's header over an earlier run's slots, which
	// that run's start already counted. A slot counts only under the run
	// that wrote it; one from another run counts nothing (a death missed
	// after a power loss, never one counted twice).
	slotSize   = 128
	runTagSize = 8
	tagOffset  = slotSize - runTagSize
	maxLabel   = tagOffset - sha256.Size - 2
	// inflightMagicV2 is the file before the fan-out's batches, the
	// governance tick and the digest were counted: 64-byte slots, the same
	// layout. inflightMagicV1 is the file before rows and ticks were
	// counted: 32-byte slots, each a message's SHA-256. A start reads
	// either, left by the previous version at its death.
	inflightMagicV2 = "EMBINFL2"
	slotSizeV2      = 64
	inflightMagicV1 = "EMBINFL1"
	slotSizeV1      = sha256.Size
	// preallocSlots are written at open, so that a slot write seldom
	// extends the file; maxReadSlots bounds what a start reads.
	preallocSlots = 128
	maxReadSlots  = 1 << 16
	// gateSize is the gate's weight: more than the work that can ever be
	// in progress at once.
	gateSize = 1 << 40
)

// The kinds of work the in-flight file and the table name.
const (
	workMessage byte = iota // key: the message's SHA-256; no label
	workRow                 // key: labelKey(workRow, row ID); label: the row ID
	workTick                // key: labelKey(workTick, incident ID); label: the incident ID
	workBatch               // key: labelKey(workBatch, label); label: batchLabel (batch.go)
	workGov                 // key: labelKey(workGov, ""); label: the governance state's digest (tickjobs.go)
	workDigest              // key: labelKey(workDigest, ""); label: the digest's week and state (tickjobs.go)
)

// bucketAttempts holds the counts: key → deaths (4 bytes) ‖ the last death
// (Unix ns, 8 bytes), both big-endian, ‖ flags (1) ‖ kind (1) ‖ label (a
// count stored before rows and ticks were counted is the first 12 bytes
// only: a message's); keyCountedRun, the run ID of the in-flight file last
// counted, so that a start that dies between its commit and its rewrite of
// the file counts nothing twice; and keySecret, labelKey's secret, made at
// the first start.
var (
	bucketAttempts = []byte("poison_attempts")
	keyCountedRun  = []byte("counted-run")
	keySecret      = []byte("label-secret")
)

// flagAlerted: the SRC was told of this count's last death (a tick, whose
// skip is alerted once, work.go).
const flagAlerted = 1

type deathRecord struct {
	deaths  int
	last    time.Time
	kind    byte
	label   string
	alerted bool
}

// inflight is one slot found set at a start.
type inflight struct {
	key   [32]byte
	kind  byte
	label string
}

// attempt is one message being processed: its slot in the in-flight file.
type attempt struct {
	slot    int64
	sum     [32]byte
	suspect bool
}

// OpenAttempts opens the in-flight file in dir (created 0600 if missing),
// counts a death for each piece of work it finds in progress, drops the
// counts older than AttemptTTL, and starts a new, empty file. Call it after
// the store is opened (bbolt's lock keeps a second daemon out of dir), once
// per start, and Close it at a clean stop.
func OpenAttempts(db *bolt.DB, dir string, now time.Time, log *slog.Logger) (*Attempts, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, InflightFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("in-flight file: %w", err)
	}
	run, found, err := readInflight(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a := &Attempts{db: db, f: f, path: path, log: log, known: map[[32]byte]deathRecord{}, gate: semaphore.NewWeighted(gateSize)}
	if err := db.Update(func(tx *bolt.Tx) error { return a.count(tx, run, found, now) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("count the attempts of the previous run: %w", err)
	}
	for _, w := range found {
		// IDs only: the hash names the message, its archive entry and its
		// later quarantine; nothing of its content is known here.
		log.Warn("the previous run ended while this "+workNames[w.kind]+" (the process was killed or crashed); it is a suspect",
			append(workAttrs(w.key, w.kind, w.label), "deaths", a.known[w.key].deaths, "stopped_at", deathLimit(w.kind))...)
	}
	if err := a.reset(); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

// workNames end the log line of a suspect, by kind.
var workNames = map[byte]string{
	workMessage: "message was being processed",
	workRow:     "queue row was being sealed or sent",
	workTick:    "incident was being ticked",
	workBatch:   "announce batch was being sent",
	workGov:     "governance tick was running",
	workDigest:  "weekly digest was being made",
}

// deathLimit is the deaths at which work of kind is no longer done: a
// row's and a batch's limit is one more than the others'.
func deathLimit(kind byte) int {
	switch kind {
	case workRow:
		return RowPoisonDeaths
	case workBatch:
		return announce.BatchPoisonDeaths
	}
	return PoisonDeaths
}

// workAttrs are the log attributes naming a piece of work: a message's
// SHA-256, a row's ID, a tick's incident.
func workAttrs(key [32]byte, kind byte, label string) []any {
	switch kind {
	case workRow:
		return []any{"work", "queue row", "row", label}
	case workTick:
		return []any{"work", "tick", "incident", label}
	case workBatch:
		return []any{"work", "announce batch", "batch", label}
	case workGov, workDigest:
		return []any{"work", jobKinds[kind], "state", label}
	}
	return []any{"work", "message", "sha256", hex.EncodeToString(key[:])}
}

// readInflight returns the run ID and the work in progress in the
// in-flight file; an empty or foreign file holds none.
func readInflight(f *os.File) (run []byte, found []inflight, err error) {
	b, err := io.ReadAll(io.LimitReader(f, inflightHead+maxReadSlots*slotSize))
	if err != nil {
		return nil, nil, fmt.Errorf("read the in-flight file: %w", err)
	}
	if len(b) < inflightHead {
		return nil, nil, nil
	}
	size := slotSize
	switch string(b[:len(inflightMagic)]) {
	case inflightMagic:
	case inflightMagicV2: // left by a previous version at its death
		size = slotSizeV2
	case inflightMagicV1:
		size = slotSizeV1
	default:
		return nil, nil, nil
	}
	run = bytes.Clone(b[len(inflightMagic) : len(inflightMagic)+16])
	var zero [32]byte
	for off := inflightHead; off+size <= len(b); off += size {
		w := inflight{key: [32]byte(b[off : off+sha256.Size])}
		if w.key == zero || slices.ContainsFunc(found, func(x inflight) bool { return x.key == w.key }) {
			continue
		}
		switch size {
		case slotSize:
			if !bytes.Equal(b[off+tagOffset:off+slotSize], run[:runTagSize]) {
				continue // an earlier run's slot under this run's header
			}
			w.kind = b[off+32]
			w.label = string(b[off+34 : off+34+min(int(b[off+33]), maxLabel)])
		case slotSizeV2:
			w.kind = b[off+32]
			w.label = string(b[off+34 : off+34+min(int(b[off+33]), size-sha256.Size-2)])
		}
		found = append(found, w)
	}
	return run, found, nil
}

// count is OpenAttempts's transaction: a death for each piece of work in
// progress (unless this run of the file was counted), expiry, the bound,
// and the table read into memory.
func (a *Attempts) count(tx *bolt.Tx, run []byte, found []inflight, now time.Time) error {
	b, err := tx.CreateBucketIfNotExists(bucketAttempts)
	if err != nil {
		return err
	}
	if err := a.loadSecret(b); err != nil {
		return err
	}
	if len(found) > 0 && !bytes.Equal(b.Get(keyCountedRun), run) {
		for _, w := range found {
			r := decodeDeaths(b.Get(w.key[:]))
			r.deaths++
			r.last = now
			r.kind, r.label = w.kind, w.label
			r.alerted = false // a new death is told of again
			if err := b.Put(w.key[:], encodeDeaths(r)); err != nil {
				return err
			}
		}
		if err := b.Put(keyCountedRun, run); err != nil {
			return err
		}
	}
	type entry struct {
		key [32]byte
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
		keep = append(keep, entry{[32]byte(k), r})
	}
	if len(keep) > maxAttempts {
		slices.SortFunc(keep, func(x, y entry) int { return y.r.last.Compare(x.r.last) })
		for _, e := range keep[maxAttempts:] {
			drop = append(drop, bytes.Clone(e.key[:]))
		}
		keep = keep[:maxAttempts]
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for _, e := range keep {
		a.known[e.key] = e.r
	}
	return nil
}

// loadSecret reads labelKey's secret, made at the first start. Secret, so
// that nobody can send a message whose SHA-256 is a row's or a tick's key
// (and clear its count by surviving as a suspect).
func (a *Attempts) loadSecret(b *bolt.Bucket) error {
	if v := b.Get(keySecret); len(v) == len(a.secret) {
		copy(a.secret[:], v)
		return nil
	}
	if _, err := rand.Read(a.secret[:]); err != nil {
		return err
	}
	return b.Put(keySecret, bytes.Clone(a.secret[:]))
}

// labelKey is the table's key of a row or a tick: SHA-256 over the secret,
// the kind and the label.
func (a *Attempts) labelKey(kind byte, label string) [32]byte {
	var buf [len(a.secret) + 1 + 64]byte
	b := append(append(append(buf[:0], a.secret[:]...), kind), label...)
	return sha256.Sum256(b)
}

// reset starts the in-flight file of this run: a new run ID and free slots.
// No fsync, as for the slots.
func (a *Attempts) reset() error {
	buf := make([]byte, inflightHead+preallocSlots*slotSize)
	copy(buf, inflightMagic)
	if _, err := rand.Read(buf[len(inflightMagic) : len(inflightMagic)+16]); err != nil {
		return err
	}
	copy(a.run[:], buf[len(inflightMagic):len(inflightMagic)+16])
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
// start counts nothing. Work still in progress (a session the stop gave up
// waiting for) is not counted: it did not kill the process.
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

// Deaths is the count of the work whose key is key (a message's SHA-256),
// as of now.
func (a *Attempts) Deaths(key [32]byte, now time.Time) int {
	r, _ := a.lookup(key, now)
	return r.deaths
}

// lookup is the count of key as of now: its record, and whether it has one
// (an expired count has none).
func (a *Attempts) lookup(key [32]byte, now time.Time) (deathRecord, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.known[key]
	if !ok || now.Sub(r.last) > AttemptTTL {
		return deathRecord{}, false
	}
	return r, true
}

// anyKnown says whether any count is known: on the normal path none is,
// and a row or a tick need not compute its key to learn it has none.
func (a *Attempts) anyKnown() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.known) > 0
}

// begin records that the message sum is being processed and returns its
// attempt, for end; or poisoned when the message was in progress at
// PoisonDeaths deaths and must not be processed again. A suspect waits
// here until it is alone, or SuspectWait (an error: the message is then
// answered 451 and comes back).
func (a *Attempts) begin(ctx context.Context, sum [32]byte, now time.Time) (t *attempt, poisoned bool, err error) {
	deaths := a.Deaths(sum, now)
	if deaths >= PoisonDeaths {
		return nil, true, nil
	}
	t = &attempt{sum: sum, suspect: deaths > 0}
	if err := a.enter(ctx, t.suspect); err != nil {
		return nil, false, err
	}
	t.slot = a.take(sum, workMessage, "")
	return t, false, nil
}

// end records that the attempt's processing ended without a death.
func (a *Attempts) end(t *attempt) {
	a.release(t.slot)
	a.leave(t.suspect)
}

// suspectWait is SuspectWait; tests shorten it.
var suspectWait = SuspectWait

// errNotAlone is a suspect's: it could not be alone within SuspectWait.
var errNotAlone = errors.New("listd: work that was in progress at a death of the process waits to be processed alone, and other work did not end in time")

// enter takes the gate: all of it for a suspect (alone), which waits at
// most SuspectWait for the work in progress to end, or a share.
func (a *Attempts) enter(ctx context.Context, alone bool) error {
	if !alone {
		// Never fails: without a deadline, Acquire only waits for a
		// suspect in progress or waiting.
		return a.gate.Acquire(context.Background(), 1)
	}
	ctx, cancel := context.WithTimeout(ctx, suspectWait)
	defer cancel()
	if err := a.gate.Acquire(ctx, gateSize); err != nil {
		return fmt.Errorf("%w (%w)", errNotAlone, err)
	}
	return nil
}

// leave gives back what enter took.
func (a *Attempts) leave(alone bool) {
	if alone {
		a.gate.Release(gateSize)
	} else {
		a.gate.Release(1)
	}
}

// take writes key, with its kind and label, into a free slot and returns
// the slot, for release.
func (a *Attempts) take(key [32]byte, kind byte, label string) int64 {
	a.mu.Lock()
	var slot int64
	if n := len(a.free); n > 0 {
		slot, a.free = a.free[n-1], a.free[:n-1]
	} else {
		slot = a.nslots
		a.nslots++
	}
	a.mu.Unlock()
	var b [slotSize]byte
	copy(b[:], key[:])
	b[32] = kind
	n := copy(b[34:tagOffset], label)
	b[33] = byte(n)
	copy(b[tagOffset:], a.run[:runTagSize])
	a.write(slot, b[:])
	return slot
}

// release zeroes a slot: its work ended without a death.
func (a *Attempts) release(slot int64) {
	var zero [slotSize]byte
	a.write(slot, zero[:])
	a.mu.Lock()
	a.free = append(a.free, slot)
	a.mu.Unlock()
}

// write puts b in a slot. A failure is logged once and the work is done
// all the same: the guard is lost for it, not the mail.
func (a *Attempts) write(slot int64, b []byte) {
	_, err := a.f.WriteAt(b, inflightHead+slot*slotSize)
	if errors.Is(err, os.ErrClosed) {
		return // a session the stop gave up waiting for: nothing to record
	}
	if err != nil && a.warned.CompareAndSwap(false, true) {
		a.log.Error("cannot write the in-flight file; work that kills the process will not be counted", "path", a.path, "err", err)
	}
}

// forget drops a suspect that was processed without a death, in tx.
func (a *Attempts) forget(tx *bolt.Tx, key [32]byte) error {
	b, err := tx.CreateBucketIfNotExists(bucketAttempts)
	if err != nil {
		return err
	}
	return b.Delete(key[:])
}

// forgotten drops a suspect from memory once forget is committed.
func (a *Attempts) forgotten(key [32]byte) {
	a.mu.Lock()
	delete(a.known, key)
	a.mu.Unlock()
}

func encodeDeaths(r deathRecord) []byte {
	v := make([]byte, 14, 14+len(r.label))
	binary.BigEndian.PutUint32(v, uint32(min(r.deaths, 1<<31)))
	binary.BigEndian.PutUint64(v[4:], uint64(r.last.UnixNano()))
	if r.alerted {
		v[12] |= flagAlerted
	}
	v[13] = r.kind
	return append(v, r.label...)
}

func decodeDeaths(v []byte) deathRecord {
	if len(v) < 12 {
		return deathRecord{}
	}
	r := deathRecord{deaths: int(binary.BigEndian.Uint32(v)), last: time.Unix(0, int64(binary.BigEndian.Uint64(v[4:])))}
	if len(v) >= 14 {
		r.alerted = v[12]&flagAlerted != 0
		r.kind = v[13]
		r.label = string(v[14:])
	}
	return r
}
