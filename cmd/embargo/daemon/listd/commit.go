package listd

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Group commit (docs/design.md §1, docs/threat-model.md A1, A2): every write
// transaction of the list service goes through one writer that commits
// whatever is waiting together, one bbolt commit (two fsyncs) for all of
// them, and answers each caller only after that commit. There is no timer:
// a lone message waits for nothing but its own commit, and under load each
// commit takes everything that arrived during the one before (bbolt's Batch
// would add a delay to every group, and a failing function makes it run the
// others again one at a time).
//
// The writer is whichever caller finds no commit running: it commits the
// group it finds, then hands the writer's role to the first caller that
// arrived meanwhile, and returns with its own result. No goroutine outlives
// the callers.
//
// A transaction function may run more than once: when one function of a
// group fails, the group's transaction is rolled back and the others run
// again without it, in a new one. So a function reads its inputs and the
// transaction only, and changes nothing but the transaction (TestStoreTwice).
// When the commit itself fails, every caller of the group gets the error
// (451 to the SMTP client) and nothing of the group is stored.
type committer struct {
	db *bolt.DB
	// maxGroup bounds the functions in one transaction: a group holds what
	// its messages write until the commit.
	maxGroup int
	// groupHook, when set (tests), runs after every function of a group
	// succeeded, before the commit; an error rolls the whole group back
	// as a failing commit does.
	groupHook func(tx *bolt.Tx, n int) error

	mu      sync.Mutex
	waiting []*commitReq
	running bool
}

type commitReq struct {
	fn  func(*bolt.Tx) error
	err error
	// lead is told, when the request's turn has come, whether its caller
	// is now the writer (true) or its request is done (false).
	lead chan bool
}

// defaultMaxGroup bounds a group: at 8 to 50 concurrent clients groups stay
// far smaller.
const defaultMaxGroup = 256

// errGroupFailed wraps a commit failure that every request of a group gets.
var errGroupFailed = errors.New("listd: group commit failed")

// panicError is a transaction function's panic, carried to its caller,
// which quarantines the message (Handle).
type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("listd: panic in a transaction: %v", p.value) }

// do runs fn in a write transaction, with whatever else is waiting, and
// returns after the commit: nil only once fn's writes are durable.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	r := &commitReq{fn: fn, lead: make(chan bool, 1)}
	c.mu.Lock()
	c.waiting = append(c.waiting, r)
	lead := !c.running
	c.running = true
	c.mu.Unlock()
	if !lead && !<-r.lead {
		return r.err // committed (or refused) by another caller's commit
	}
	// The writer: commit what waits (r among it), then pass the role on.
	for {
		// Let the goroutines that are ready to run (a message parsed, its
		// function about to be queued) run first and join this group: no
		// timer, a lone message loses only a trip through the scheduler.
		// On two busy CPUs this cut commits per report by a tenth and
		// raised BenchmarkIntake by 8-12%.
		runtime.Gosched()
		c.mu.Lock()
		n := min(len(c.waiting), max(c.maxGroup, 1))
		group := c.waiting[:n:n]
		c.waiting = c.waiting[n:]
		c.mu.Unlock()
		c.commit(group)
		mine := false
		for _, g := range group {
			if g == r {
				mine = true
				continue
			}
			g.lead <- false
		}
		c.mu.Lock()
		if len(c.waiting) == 0 {
			c.running = false
			c.mu.Unlock()
			return r.err
		}
		if mine {
			next := c.waiting[0]
			c.mu.Unlock()
			next.lead <- true // the next writer takes the rest
			return r.err
		}
		c.mu.Unlock() // r was beyond maxGroup: keep writing
	}
}

// commit runs the group in one transaction. A function that fails (or
// panics) is taken out with its error and the others run again, in a new
// transaction; a failure of the commit itself is every request's error.
func (c *committer) commit(group []*commitReq) {
	live := group
	for len(live) > 0 {
		var failed *commitReq
		err := c.db.Update(func(tx *bolt.Tx) error {
			for _, r := range live {
				if err := call(r.fn, tx); err != nil {
					failed, r.err = r, err
					return err
				}
			}
			if c.groupHook != nil {
				return c.groupHook(tx, len(live))
			}
			return nil
		})
		switch {
		case failed != nil:
			rest := make([]*commitReq, 0, len(live)-1)
			for _, r := range live {
				if r != failed {
					rest = append(rest, r)
				}
			}
			live = rest
		case err != nil:
			for _, r := range live {
				r.err = fmt.Errorf("%w: %w", errGroupFailed, err)
			}
			return
		default:
			for _, r := range live {
				r.err = nil
			}
			return
		}
	}
}

// call runs one transaction function, turning a panic into its error: the
// group's transaction rolls back, the others run again, and the caller
// decides (Handle quarantines the message).
func call(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: stackOnly()}
		}
	}()
	return fn(tx)
}

// Write runs fn in a write transaction of the group commit, with whatever
// else is waiting, and returns after the commit: the same rules as the
// service's own transactions (fn may run more than once, reads its inputs
// and the transaction only). Other writers of the store that run while
// mail arrives (the delivery worker's claims and outcomes) can share the
// commits this way instead of taking the writer in turns, each with its
// own two fsyncs.
func (s *Service) Write(fn func(*bolt.Tx) error) error { return s.sh.writer.do(fn) }
