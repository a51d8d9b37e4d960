package smtpd

import (
	"log/slog"
	"sync"
	"time"
)

// The budget of message bytes in flight (docs/threat-model.md C1). Every session
// reads its whole message into memory before anything looks at it (data.go), and
// what the Handler makes of it (parsed copies, the stored copy, the committee's
// copies) multiplies it: embargo measured about 4.4 bytes of live heap per byte in
// flight. MaxConnections × MaxMessageBytes alone (100 × 10 MiB) would let many
// clients sending large messages at once hold gigabytes and get the daemon killed,
// which stops intake for everyone. So all sessions of a process, SMTP and LMTP
// alike, draw the bytes they buffer from one InflightBudget:
//
//   - A session takes budget as its buffer grows (the buffer's capacity, which is
//     what it holds), never more than it has been sent bytes for, and gives it all
//     back when the message has been handled: after the Handler returns, or at once
//     when the message is refused or discarded.
//   - At MAIL, a SIZE= (RFC 1870) larger than what is left is answered 452 4.3.1
//     after a short wait for budget (RFC 1870 §6.1: a temporary lack of storage).
//     SIZE= is only checked, not held: holding it from MAIL would let a client that
//     announces the largest size and then says nothing hold budget for free until
//     the command timeout.
//   - A message that outgrows what is left waits a short time for budget (another
//     session's Handler returning); when none comes, the session gives back what it
//     holds, reads the rest of the message and throws it away, and answers 452 4.3.1
//     after the final dot (RFC 5321 §4.3.2 lists 452 as a reply to DATA): the client
//     keeps the message and retries later. Nothing is stored, nothing is refused
//     for good, and the process never buffers more than the budget.
//   - A session waits only while some other session holding budget can still give
//     it back: when every holder is waiting for more, the last to ask gives up at
//     once, so a burst of sessions that each hold a part cannot stall each other
//     until all fail together.
//
// The budget is at least MaxMessageBytes, so one message of the largest size always
// gets through when nothing else is in flight.

// DefaultMaxInflightBytes is the budget's floor when MaxInflightBytes is zero; the
// default is the larger of it and DefaultInflightMessages × MaxMessageBytes. At
// 4.4 bytes of live heap per byte in flight, 48 MiB in flight is about 211 MiB of
// heap, under the 256 MiB soft memory limit `embargo serve` sets, with room for the
// idle daemon and its delivery worker. The floor admits four messages of the
// default 10 MiB at once, and hundreds of ordinary reports.
const (
	DefaultMaxInflightBytes = 48 << 20
	DefaultInflightMessages = 4
	// DefaultInflightWait is how long a session waits for budget before it answers
	// 452: long enough for a Handler or two to return (a commit takes milliseconds
	// to a second), short against the client's timeouts (RFC 5321 §4.5.3.2).
	DefaultInflightWait = 2 * time.Second
)

// DefaultInflightBytes is the budget for MaxInflightBytes zero: the larger of
// DefaultMaxInflightBytes and DefaultInflightMessages messages of maxMessage bytes.
func DefaultInflightBytes(maxMessage int64) int64 {
	return max(DefaultMaxInflightBytes, DefaultInflightMessages*maxMessage)
}

// InflightBudget is the budget of message bytes that sessions hold in memory at
// once, shared by every Server given it (Options.Inflight). Its methods are safe for
// concurrent use.
type InflightBudget struct {
	limit   int64
	refused func()

	mu      sync.Mutex
	used    int64
	peak    int64
	holders int           // leases holding budget
	waiting int           // of them, those waiting for more
	freed   chan struct{} // closed, and replaced, whenever budget is given back
	refuses int64
}

// NewInflightBudget returns a budget of limit bytes (limit ≤ 0: no limit). refused,
// if not nil, is called once for every MAIL or message refused for want of budget
// (a metric).
func NewInflightBudget(limit int64, refused func()) *InflightBudget {
	return &InflightBudget{limit: limit, refused: refused, freed: make(chan struct{})}
}

// Limit returns the budget in bytes, ≤ 0 for none.
func (b *InflightBudget) Limit() int64 { return b.limit }

// InUse returns the bytes sessions hold now.
func (b *InflightBudget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Peak returns the most bytes held at once since the budget was made.
func (b *InflightBudget) Peak() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// Refused returns how many MAILs and messages were refused for want of budget.
func (b *InflightBudget) Refused() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refuses
}

func (b *InflightBudget) countRefusal() {
	b.mu.Lock()
	b.refuses++
	b.mu.Unlock()
	if b.refused != nil {
		b.refused()
	}
}

// room waits up to wait for n bytes to be free, without taking them (SIZE= at
// MAIL), and reports whether they are.
func (b *InflightBudget) room(n int64, wait time.Duration) bool {
	if b == nil || b.limit <= 0 {
		return true
	}
	l := lease{b: b}
	return l.wait(n, wait, false)
}

// lease is one message's share of the budget.
type lease struct {
	b    *InflightBudget // nil: no budget
	held int64
}

// grow takes n more bytes for the message, waiting up to wait for them. On false
// the lease holds what it held before.
func (l *lease) grow(n int64, wait time.Duration) bool {
	if l.b == nil || l.b.limit <= 0 {
		return true
	}
	return l.wait(n, wait, true)
}

// wait is grow (take true) and room (take false).
func (l *lease) wait(n int64, wait time.Duration, take bool) bool {
	b := l.b
	var deadline time.Time
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.used+n <= b.limit {
			if take {
				if l.held == 0 && n > 0 {
					b.holders++
				}
				l.held += n
				b.used += n
				b.peak = max(b.peak, b.used)
			}
			return true
		}
		// Every other holder waits too: nobody would give budget back before the
		// waits end, so this one gives up now and, released, lets them go on.
		if l.held > 0 && b.waiting+1 >= b.holders {
			return false
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(wait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		freed := b.freed
		if l.held > 0 {
			b.waiting++
		}
		b.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-freed:
		case <-t.C:
		}
		t.Stop()
		b.mu.Lock()
		if l.held > 0 {
			b.waiting--
		}
	}
}

// release gives back everything the lease holds.
func (l *lease) release() {
	if l.b == nil || l.held == 0 {
		return
	}
	b := l.b
	b.mu.Lock()
	b.used -= l.held
	b.holders--
	l.held = 0
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// inflightRefused logs and counts a MAIL or a message refused for want of budget:
// the session's ID (in log) and sizes only: SIZE= at MAIL, what all sessions hold,
// the budget.
func (s *Server) inflightRefused(log *slog.Logger, at string, size int64) {
	s.inflight.countRefusal()
	log.Warn("smtpd: refused, too many message bytes in flight", "at", at, "size", size,
		"inflight", s.inflight.InUse(), "inflight_bytes", s.inflight.Limit())
}
