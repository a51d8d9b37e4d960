package queue

import (
	"context"
	"errors"
	"fmt"
)

// outcome is what became of one claimed row, sent from a sender to Run.
type outcome struct {
	row Row
	err error // nil: delivered to every recipient
	// interrupted: stopped mid-delivery by the cancel. Nothing is recorded;
	// the row stays "sending" and the next start sends it again, since the
	// relay may or may not have it.
	interrupted bool
	// untried: neither sealed nor sent (a killer, or a suspect that could
	// not be alone in time), so a suspect's count stands (guard.go).
	untried bool
}

// Outgoing is one message of a batch given to a BatchRelay.
type Outgoing struct {
	From string
	To   []string
	Data []byte
}

// BatchRelay is a Relay that takes several messages in one call, so that
// it can make them durable together: the Maildir relay writes a batch of
// files, syncs them concurrently, renames them and syncs the directory once.
// The worker gives a BatchRelay up to MaxBatch rows at once, and records
// their outcomes in one commit.
type BatchRelay interface {
	Relay
	// MaxBatch is the most messages SendBatch takes at once; 1 or less
	// makes the worker call Send for each message instead.
	MaxBatch() int
	// SendBatch delivers msgs and returns one error per message, in order,
	// each meaning what Send's error means; a nil error means the message
	// is as safe as Send's nil promises (RFC 5321 §6.1).
	SendBatch(ctx context.Context, msgs []Outgoing) []error
}

// batchSize is how many rows a sender hands the relay at once.
func batchSize(r Relay) int {
	if br, ok := r.(BatchRelay); ok {
		return max(1, br.MaxBatch())
	}
	return 1
}

// batchBytes bounds the stored size of the rows one batch holds: a batch's
// copies are prepared (sealed) together before the relay takes them, so a
// backlog of large copies (a 10 MB report to every member) goes one or two
// at a time rather than a batch's worth at once. The first row of a batch
// is always taken, whatever its size.
const batchBytes = 4 << 20

// sender delivers claimed rows until ctx is done and reports each outcome
// to done. With a BatchRelay it takes the rows waiting, up to a batch and
// batchBytes.
func (w *Worker) sender(ctx context.Context, work <-chan Row, done chan<- outcome) {
	size := batchSize(w.relay)
	rows := make([]Row, 0, size)
	var next *Row // taken from work but over the last batch's bytes
	for {
		if next == nil {
			select {
			case <-ctx.Done():
				return
			case r := <-work:
				next = &r
			}
		}
		rows = append(rows[:0], *next)
		next = nil
		bytes := rows[0].Size
	fill:
		for len(rows) < size {
			select {
			case r := <-work:
				if bytes+r.Size > batchBytes {
					next = &r
					break fill
				}
				rows = append(rows, r)
				bytes += r.Size
			default:
				break fill
			}
		}
		w.deliver(ctx, rows, done)
	}
}

// deliver makes each row's message (sealing it if it must be) and hands it
// to the relay: one at a time, or, with a batch relay, all at once. The
// rows are in the Guard's in-flight record meanwhile (guard.go); their
// outcomes go to Run once they are out of it.
func (w *Worker) deliver(ctx context.Context, rows []Row, done chan<- outcome) {
	end, err := w.guard(ctx, rows)
	if err != nil {
		for _, r := range rows {
			o := w.outcome(ctx, r, err)
			o.untried = true
			done <- o
		}
		return
	}
	sendCtx := ctx
	if len(rows) == 1 && rows[0].suspect {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(ctx, aloneTimeout)
		defer cancel()
	}
	outs := make([]outcome, 0, len(rows))
	batched := len(rows) > 1
	var ready []Row
	var msgs []Outgoing
	for _, r := range rows {
		data, err := w.prepare(&r)
		switch {
		case err != nil:
			outs = append(outs, w.outcome(ctx, r, err))
		case batched:
			ready = append(ready, r)
			msgs = append(msgs, Outgoing{From: r.From, To: r.To, Data: data})
		default:
			outs = append(outs, w.outcome(ctx, r, w.send(sendCtx, r, data)))
		}
	}
	if len(msgs) > 0 {
		errs := w.sendBatch(sendCtx, msgs)
		for i, r := range ready {
			outs = append(outs, w.outcome(ctx, r, errs[i]))
		}
	}
	end()
	for _, o := range outs {
		done <- o
	}
}

// prepare checks a row and makes its message.
func (w *Worker) prepare(r *Row) ([]byte, error) {
	if err := checkEnvelope(r.From, r.To); err != nil {
		return nil, err
	}
	data, err := w.message(r)
	if err == nil {
		err = checkData(data)
	}
	return data, err
}

// outcome is a row's outcome, for Run, which records it in its next commit
// (docs/threat-model.md A3). ctx is the sender's: once it is done, a
// temporary failure is the stop's doing.
func (w *Worker) outcome(ctx context.Context, r Row, err error) outcome {
	var rcptErr *RcptError
	if err != nil && ctx.Err() != nil && !errors.As(err, &rcptErr) && !IsPermanent(err) {
		w.log.Info("outbound delivery interrupted", append(rowAttrs(r), "result", "interrupted")...)
		return outcome{row: r, interrupted: true}
	}
	return outcome{row: r, err: err}
}

// send calls the relay, turning a panic into a temporary error so that one
// bad row cannot take the daemon down (docs/threat-model.md A6); it is then
// retried with backoff and expires with an alert like any failing row.
func (w *Worker) send(ctx context.Context, r Row, data []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("queue: relay panicked: %v", p)
		}
	}()
	return w.relay.Send(ctx, r.From, r.To, data)
}

// sendBatch calls the batch relay, with send's panic rule; a relay that
// answers for the wrong number of messages fails them all, temporarily.
func (w *Worker) sendBatch(ctx context.Context, msgs []Outgoing) (errs []error) {
	fail := func(err error) []error {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer func() {
		if p := recover(); p != nil {
			errs = fail(fmt.Errorf("queue: relay panicked: %v", p))
		}
	}()
	errs = w.relay.(BatchRelay).SendBatch(ctx, msgs)
	if len(errs) != len(msgs) {
		return fail(fmt.Errorf("queue: relay answered for %d of %d messages", len(errs), len(msgs)))
	}
	return errs
}
