package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
)

// Connection reuse. A connection that ended a transaction cleanly goes back
// to an idle pool and carries the next message: a drain of thousands of
// copies costs a handful of TCP and TLS handshakes, not one per copy
// (Postfix's smtp client caches connections the same way,
// smtp_connection_cache_on_demand). A trickle of mail still gets a fresh
// connection each time: an idle connection is closed after connIdle.
const (
	connIdle    = 5 * time.Second // idle time before QUIT; RFC 5321 §4.5.3.2.7 lets a server wait 5 minutes, we need not
	connMaxAge  = 5 * time.Minute // Postfix's smtp_connection_reuse_time_limit: a relay may cap session lifetimes
	connMaxUses = 100             // messages per connection, under common relay limits
	connMaxIdle = 32              // idle connections kept at most
)

// smtpBatch is the most copies the worker hands one SendBatch, which sends
// them over one connection, each copy's content in the same write as the
// next one's MAIL, RCPT and DATA (RFC 2920 §3.1). With the worker's
// defaults (4 senders, 64 rows claimed) 8 a batch keeps as many rows
// waiting as in flight, so a sender that finishes a batch finds the next.
const smtpBatch = 8

// smtpRelay submits to a smarthost or a local MTA over connections it
// reuses (see connIdle), with the client the release fan-out uses too
// (internal/pipeline): command pipelining (RFC 2920) when the relay offers
// it, so that a copy costs two writes and two reads (MAIL, RCPT and DATA
// in one write, then the content and the dot) instead of one write and one
// read per command; without PIPELINING each command waits for its reply.
// It is safe for concurrent use: each call takes a connection of its own.
type smtpRelay struct {
	cfg pipeline.Config

	// The reuse limits: connIdle, connMaxAge and connMaxUses, which tests
	// shorten.
	idleTime, maxAge time.Duration
	maxUses          int

	loop     func(error) // RelayOptions.Loop
	loopOnce sync.Once

	mu   sync.Mutex
	idle []*smtpConn // most recently used last
}

// smtpConn is one open, greeted (and secured and authenticated) session.
type smtpConn struct {
	c     *pipeline.Client
	born  time.Time
	uses  int
	timer *time.Timer // closes it after connIdle in the pool
}

// Send delivers one message: a batch of one.
func (r *smtpRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	return r.SendBatch(ctx, []Outgoing{{From: from, To: to, Data: data}})[0]
}

// MaxBatch makes the worker hand a backlog over in batches (BatchRelay).
func (r *smtpRelay) MaxBatch() int { return smtpBatch }

// SendBatch delivers msgs in order over one connection, or more when one
// breaks or is used up. Each error means what Send's means.
//
// A message that never reached the relay on a connection that failed (the
// relay dropped a cached connection, or answered 421 to MAIL, RFC 5321
// §3.8) goes again on a fresh one, once that connection was reused or
// carried other messages first: a relay that refuses a fresh connection
// outright means it, and the messages wait for the worker's retry. A
// message whose content may have reached the relay is never sent twice
// here: its error is temporary, and the worker's retry sends it again with
// the same Message-ID (at-least-once).
func (r *smtpRelay) SendBatch(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	txns := make([]pipeline.Txn, 0, len(msgs))
	idx := make([]int, 0, len(msgs)) // msgs index of each txn
	for i, m := range msgs {
		t, err := newTxn(m)
		if err != nil {
			errs[i] = err
			continue
		}
		txns, idx = append(txns, t), append(idx, i)
	}
	for len(txns) > 0 {
		sc, reused, err := r.get(ctx)
		if err != nil {
			for _, i := range idx {
				errs[i] = err
			}
			break
		}
		n := min(len(txns), r.maxUses-sc.uses)
		outs, done, cause := r.transact(ctx, sc, txns[:n])
		var again []int // indexes into txns[:n] to send again
		for j, o := range outs {
			if o.again {
				again = append(again, j)
			} else {
				errs[idx[j]] = o.err
			}
		}
		if cause == nil {
			r.put(sc, done)
		} else {
			go sc.c.Close()
		}
		retry := cause == nil || ((reused || len(again) < n) && ctx.Err() == nil)
		// The rest: what must go again, then what this connection did not take.
		rest, restIdx := txns[n:], idx[n:]
		if len(again) > 0 {
			t2 := make([]pipeline.Txn, 0, len(again)+len(rest))
			i2 := make([]int, 0, len(again)+len(rest))
			for _, j := range again {
				t2, i2 = append(t2, txns[j]), append(i2, idx[j])
			}
			rest, restIdx = append(t2, rest...), append(i2, restIdx...)
		}
		txns, idx = rest, restIdx
		if !retry {
			for _, i := range idx {
				errs[i] = cause
			}
			break
		}
	}
	return errs
}

// newTxn checks a message as Send always has and prepares it.
func newTxn(m Outgoing) (pipeline.Txn, error) {
	if err := checkEnvelope(m.From, m.To); err != nil {
		return pipeline.Txn{}, err
	}
	if err := checkData(m.Data); err != nil {
		return pipeline.Txn{}, err
	}
	body, err := pipeline.NewBodyAsIs(m.Data)
	if err != nil {
		return pipeline.Txn{}, Permanent(fmt.Errorf("queue: %w", err))
	}
	return pipeline.Txn{From: m.From, To: m.To, Body: body}, nil
}

// attempt is what became of one transaction on one connection.
type attempt struct {
	err   error // the outcome, unless again
	again bool  // nothing can have reached the relay: send it on another connection
}

// transact runs txns over sc. done counts the transactions the relay
// answered to their end. A non-nil cause means the connection is unusable
// (it broke, timed out, the relay broke the protocol or answered 421, the
// context ended): it is why the transactions marked again did not go.
func (r *smtpRelay) transact(ctx context.Context, sc *smtpConn, txns []pipeline.Txn) (outs []attempt, done int, cause error) {
	res := make([]pipeline.Result, len(txns))
	for done < len(txns) && cause == nil {
		// Client.Send stops after a transaction refused as a whole (at MAIL,
		// DATA or the dot): the others go on in the next call.
		part, err := sc.c.Send(ctx, txns[done:])
		copy(res[done:], part)
		start := done
		for done < len(txns) && res[done].Done {
			done++
		}
		switch {
		case err != nil:
			cause = fmt.Errorf("queue: relay %s: %w", r.cfg.Addr, err)
		case done == start:
			cause = fmt.Errorf("queue: relay %s: no transaction answered", r.cfg.Addr) // cannot happen
		}
		for _, res := range res[start:] {
			if rep := closing(res); rep != nil {
				// The relay is closing the connection (RFC 5321 §3.8); its
				// 421 says why better than the end of the connection after.
				cause = fmt.Errorf("queue: relay %s: %w", r.cfg.Addr, rep)
				break
			}
		}
	}
	outs = make([]attempt, len(txns))
	for j := range txns {
		outs[j] = verdict(&txns[j], res[j], cause)
	}
	return outs, done, cause
}

// verdict turns the relay's answer to one transaction into the error Send
// returns: nil, a refusal of the whole message, or a *RcptError.
func verdict(t *pipeline.Txn, res pipeline.Result, cause error) attempt {
	if mailRefused(res.Err) && (!res.Done || replyCode(res.Err) == 421) {
		// MAIL was not taken: nothing can have reached the relay.
		return attempt{again: true}
	}
	if !res.Done {
		if res.Rcpt == nil || cause == nil {
			// Not begun: the connection failed before MAIL's reply.
			return attempt{again: true}
		}
		// The content may have reached the relay: not sent again here.
		return attempt{err: cause}
	}
	if res.Err != nil && mailRefused(res.Err) {
		// The replies to RCPT after a refused MAIL are not about recipients.
		return attempt{err: res.Err}
	}
	var failed map[string]error
	for k, err := range res.Rcpt {
		if err != nil {
			if failed == nil {
				failed = make(map[string]error)
			}
			failed[t.To[k]] = err
		}
	}
	switch {
	case len(failed) == 0 && res.Err == nil:
		return attempt{}
	case len(failed) == 0:
		return attempt{err: res.Err}
	case res.Err != nil:
		// Refused after some recipients were: report per recipient so that
		// the RCPT refusals are not lost.
		for _, rcpt := range t.To {
			if _, ok := failed[rcpt]; !ok {
				failed[rcpt] = res.Err
			}
		}
	}
	return attempt{err: &RcptError{Failed: failed}}
}

func replyCode(err error) int {
	var rep *pipeline.Reply
	if errors.As(err, &rep) {
		return rep.Code
	}
	return 0
}

func mailRefused(err error) bool {
	var rep *pipeline.Reply
	return errors.As(err, &rep) && rep.Stage == "MAIL FROM"
}

// closing returns the 421 in a transaction's replies, if there is one: the
// relay is closing the connection (RFC 5321 §3.8).
func closing(res pipeline.Result) error {
	if replyCode(res.Err) == 421 {
		return res.Err
	}
	for _, err := range res.Rcpt {
		if replyCode(err) == 421 {
			return err
		}
	}
	return nil
}

// get takes an idle connection, or opens a new one.
func (r *smtpRelay) get(ctx context.Context) (sc *smtpConn, reused bool, err error) {
	for {
		r.mu.Lock()
		if len(r.idle) == 0 {
			r.mu.Unlock()
			break
		}
		sc = r.idle[len(r.idle)-1]
		r.idle = r.idle[:len(r.idle)-1]
		r.mu.Unlock()
		// Whoever takes a connection out of the pool owns it: its timer
		// found it gone, or fired and left it to us.
		if sc.timer.Stop() && time.Since(sc.born) < r.maxAge {
			return sc, true, nil
		}
		go sc.c.Close()
	}
	c, err := pipeline.Dial(ctx, r.cfg)
	if err != nil {
		// Every failure here is about the relay, not the message, so it is
		// temporary whatever its code: a wrong password or a missing
		// STARTTLS keeps the mail queued (and raises the expiry alert if
		// nobody fixes it) rather than failing every row at once. That holds
		// for a relay that is our own listener too (pipeline.ErrLoop): it is
		// reported once (RelayOptions.Loop), not per row.
		err = temporary{fmt.Errorf("queue: relay %s: %w", r.cfg.Addr, err)}
		if r.loop != nil && errors.Is(err, pipeline.ErrLoop) {
			r.loopOnce.Do(func() { r.loop(err) })
		}
		return nil, false, err
	}
	return &smtpConn{c: c, born: time.Now()}, false, nil
}

// temporary marks an error temporary whatever it wraps.
type temporary struct{ err error }

func (e temporary) Error() string   { return e.err.Error() }
func (e temporary) Unwrap() error   { return e.err }
func (e temporary) Permanent() bool { return false }

// put returns a connection to the pool after n more transactions, or
// closes it once it has served its share.
func (r *smtpRelay) put(sc *smtpConn, n int) {
	sc.uses += n
	if sc.uses >= r.maxUses || time.Since(sc.born) >= r.maxAge {
		go sc.c.Close()
		return
	}
	r.mu.Lock()
	if len(r.idle) >= connMaxIdle {
		r.mu.Unlock()
		go sc.c.Close()
		return
	}
	sc.timer = time.AfterFunc(r.idleTime, func() { r.expire(sc) })
	r.idle = append(r.idle, sc)
	r.mu.Unlock()
}

// expire closes a connection idle for connIdle, if it is still in the pool.
func (r *smtpRelay) expire(sc *smtpConn) {
	r.mu.Lock()
	found := false
	for i, c := range r.idle {
		if c == sc {
			r.idle = append(r.idle[:i], r.idle[i+1:]...)
			found = true
			break
		}
	}
	r.mu.Unlock()
	if found {
		sc.c.Close()
	}
}

// CloseIdle says QUIT on every idle connection (RFC 5321 §4.1.1.10).
func (r *smtpRelay) CloseIdle() {
	r.mu.Lock()
	idle := r.idle
	r.idle = nil
	r.mu.Unlock()
	for _, sc := range idle {
		sc.timer.Stop()
		sc.c.Close()
	}
}
