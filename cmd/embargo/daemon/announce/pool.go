package announce

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// pool is the fan-out's connections: each slot carries one batch at a
// time, in its own goroutine, over its own persistent SMTP session (with
// Options.SMTP) or through the queue's relay. Only Run's goroutine calls
// its methods; a slot's session belongs to the goroutine of its batch
// while it is busy.
type pool struct {
	slots   []*slot
	busy    int
	results chan result // buffered: a batch never waits to report
}

type slot struct {
	sess *pipeline.Client // nil until dialed, and after a failure
	busy bool
}

// result is a batch's outcome, from its goroutine to Run's.
type result struct {
	slot *slot // nil for a batch with nobody to send to
	wk   *work
	out  outcome
}

func newPool(n int) *pool {
	p := &pool{results: make(chan result, n)}
	for range n {
		p.slots = append(p.slots, &slot{})
	}
	return p
}

func (p *pool) free() int { return len(p.slots) - p.busy }

// start sends w on a free slot.
func (p *pool) start(f *Fanout, w *work) {
	for _, s := range p.slots {
		if !s.busy {
			s.busy = true
			p.busy++
			go func() {
				out := f.guardedSend(s, w)
				out.interrupted = w.ctx.Err() != nil
				p.results <- result{slot: s, wk: w, out: out}
			}()
			return
		}
	}
	panic("announce: no free connection") // dispatch checks free()
}

// collect takes the outcomes of the batches that ended, without waiting.
func (f *Fanout) collect() {
	for {
		select {
		case r := <-f.pool.results:
			f.receive(r)
		default:
			return
		}
	}
}

func (f *Fanout) receive(r result) {
	if r.slot != nil {
		r.slot.busy = false
		f.pool.busy--
	}
	f.pending = append(f.pending, r)
}

// closeIdle ends the sessions of the slots not in use, with QUIT, in the
// background: a relay slow to answer must not hold up the next release.
func (p *pool) closeIdle() {
	for _, s := range p.slots {
		if !s.busy && s.sess != nil {
			go s.sess.Close()
			s.sess = nil
		}
	}
}

// outcome is what a relay said about a batch.
type outcome struct {
	handled int              // rcpts[:handled] have a final answer for this attempt
	refused map[string]error // RCPT refusals, by address
	stop    error            // why rcpts[handled:] were not sent (nil: all were)
	// fresh: the connection was opened for this batch. A batch that fails
	// on a connection that had been used before goes again at once on a
	// new one (the relay may have closed it while it was idle); on a
	// fresh one the job backs off.
	fresh bool
	// interrupted: the fan-out was stopping (ctx done); only what the
	// relay answered counts.
	interrupted bool
	// unsent: the guard gave up before anything was sent (a suspect not
	// alone in time, guard.go).
	unsent bool
}

func (f *Fanout) send(ctx context.Context, s *slot, w *work) outcome {
	if f.o.SMTP != nil {
		return f.sendSMTP(ctx, s, w)
	}
	return f.sendRelay(ctx, w)
}

// sendSMTP sends w over the slot's session, pipelined.
func (f *Fanout) sendSMTP(ctx context.Context, s *slot, w *work) outcome {
	txns, err := f.transactions(w)
	if err != nil {
		return outcome{stop: queue.Permanent(err)}
	}
	out := outcome{refused: map[string]error{}}
	if s.sess == nil {
		c, err := pipeline.Dial(ctx, *f.o.SMTP)
		if err != nil {
			// About the relay, not the message: temporary whatever its
			// code, as the queue's relays decide.
			return outcome{stop: err, fresh: true}
		}
		s.sess, out.fresh = c, true
	}
	// Observe hears of each transaction as the relay answers it.
	res, err := s.sess.SendNotify(ctx, txns, func(_ int, r pipeline.Result) { f.observe(r) })
	if err != nil {
		s.sess.Close()
		s.sess = nil
	}
	for i, r := range res {
		if !r.Done || r.Err != nil {
			out.stop = r.Err
			if !r.Done {
				out.stop = cmpErr(err, errors.New("announce: not sent"))
			}
			break
		}
		for j, e := range r.Rcpt {
			if e != nil {
				out.refused[txns[i].To[j]] = e
			}
		}
		out.handled = i + 1
	}
	if !f.o.OneClick {
		// One transaction for the whole batch.
		out.handled *= len(w.rcpts)
	}
	return out
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// transactions builds the batch's transactions: with OneClick one per
// target, each with its own List-Unsubscribe (and DKIM signature), else
// one with every target as a recipient.
func (f *Fanout) transactions(w *work) ([]pipeline.Txn, error) {
	p := w.msg
	if !f.o.OneClick {
		to := make([]string, len(w.rcpts))
		for i, rc := range w.rcpts {
			to[i] = rc.addr
		}
		return []pipeline.Txn{{From: w.job.From, To: to, Header: p.genericHead, Body: p.shared}}, nil
	}
	txns := make([]pipeline.Txn, len(w.rcpts))
	for i, rc := range w.rcpts {
		txns[i] = pipeline.Txn{From: w.job.From, To: []string{rc.addr}, Header: p.genericHead, Body: p.shared}
		if rc.token != "" {
			// Made as the copy's turn comes: with DKIM each costs a
			// signature, and the first copy should not wait for the 100th.
			txns[i].MakeHeader = func() ([]byte, error) { return f.oneClickHead(p, rc.token) }
		}
	}
	return txns, nil
}

// oneClickHead is a copy's own fields: its List-Unsubscribe and
// List-Unsubscribe-Post, under its DKIM signature.
func (f *Fanout) oneClickHead(p *prepared, token string) ([]byte, error) {
	own, err := oneClickUnsubscribe(f.o.List, f.o.OneClickBase, token)
	if err != nil || p.dkim == nil {
		return own, err
	}
	sig, err := p.dkim.sign(own)
	if err != nil {
		return nil, err
	}
	return append(sig, own...), nil
}

// observe tells Options.Observe how the relay answered a transaction.
func (f *Fanout) observe(r pipeline.Result) {
	if f.o.Observe == nil {
		return
	}
	refused, rcpts, err := 0, len(r.Rcpt), r.Err
	for _, e := range r.Rcpt {
		if e != nil {
			refused++
		}
	}
	switch {
	case err != nil && queue.IsPermanent(err):
		f.o.Observe("refused")
	case err != nil:
		f.o.Observe("deferred")
	case refused == 0:
		f.o.Observe("delivered")
	case refused < rcpts:
		f.o.Observe("partial")
	default:
		f.o.Observe("refused")
	}
}

// sendRelay sends w through the queue's relay, which opens a connection
// per call: one transaction for the batch, or with OneClick one per target.
func (f *Fanout) sendRelay(ctx context.Context, w *work) outcome {
	if !f.o.OneClick {
		to := make([]string, len(w.rcpts))
		for i, rc := range w.rcpts {
			to[i] = rc.addr
		}
		out := classify(len(to), f.relaySend(ctx, w.job.From, to, w.msg.generic))
		out.fresh = true
		return out
	}
	out := outcome{refused: map[string]error{}, fresh: true}
	for i, rc := range w.rcpts {
		data := w.msg.generic
		if rc.token != "" {
			prefix, err := oneClickUnsubscribe(f.o.List, f.o.OneClickBase, rc.token)
			if err != nil {
				out.handled, out.stop = i, queue.Permanent(err)
				return out
			}
			data = make([]byte, 0, len(prefix)+len(w.msg.body))
			data = append(append(data, prefix...), w.msg.body...)
		}
		one := classify(1, f.relaySend(ctx, w.job.From, []string{rc.addr}, data))
		if one.stop != nil {
			out.handled, out.stop = i, one.stop
			return out
		}
		if err, ok := one.refused[rc.addr]; ok {
			out.refused[rc.addr] = err
		}
	}
	out.handled = len(w.rcpts)
	return out
}

// classify turns a relay's answer to one transaction of n recipients into
// an outcome. Refusals at RCPT concern their recipient; a failure at MAIL or
// DATA concerns the message and every recipient the relay accepted.
func classify(n int, err error) outcome {
	if err == nil {
		return outcome{handled: n}
	}
	var re *queue.RcptError
	if !errors.As(err, &re) {
		return outcome{stop: err}
	}
	out := outcome{handled: n, refused: map[string]error{}}
	for rcpt, e := range re.Failed {
		if atRcpt(e) {
			out.refused[rcpt] = e
		} else if out.stop == nil || (queue.IsPermanent(e) && !queue.IsPermanent(out.stop)) {
			out.stop = e
		}
	}
	if out.stop != nil {
		out.handled = 0
	}
	return out
}

// atRcpt reports whether a per-recipient error is the relay's reply to RCPT
// TO (the queue's SMTP relay names the stage in its errors).
func atRcpt(err error) bool { return strings.Contains(err.Error(), "RCPT TO") }

// relaySend calls the relay, turning a panic into a temporary error.
func (f *Fanout) relaySend(ctx context.Context, from string, to []string, data []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("announce: relay panicked: %v", p)
		}
	}()
	return f.relay.Send(ctx, from, to, data)
}
