package smtpd

import (
	"time"
)

// The minimum data rate (docs/threat-model.md B7, slowloris). go-smtp sets the read
// deadline once, at the DATA line, so without it a client trickling a byte a second
// holds one of the connection slots for the whole ReadTimeout (5 minutes).
//
// The rule: a DATA or BDAT transfer that began at start and has brought n bytes so
// far must go on arriving until
//
//	start + max(grace, n / rate)
//
// that is, once the grace has passed, the transfer must have averaged at least rate
// bytes per second since it began. Each byte moves the deadline later, so a fast but
// bursty client (a pause of a few seconds between chunks of a large message) keeps
// the time it earned earlier and is never cut while its average holds; a client that
// sends nothing is cut at the end of the grace. When the deadline strikes, the client
// gets 421 4.4.2 saying the data arrived too slowly and the connection closes; the
// message is not handed to the Handler. ReadTimeout still bounds the whole DATA.
//
// Postfix's smtpd_min_data_rate (with smtpd_per_request_deadline) credits each read
// with N/rate seconds on top of a deadline that starts at smtpd_timeout (300 s), so a
// client that sends nothing still holds its slot for 300 s. The average with a short
// grace frees that slot after the grace, and a transfer of S bytes takes at most
// max(grace, S/rate): a kilobyte trickled holds a slot for 10 s; holding all 100 slots
// for the 5-minute ReadTimeout costs the client 150 KB each.
//
// The grace, 10 s by default, covers what delays a client's first bytes after the 354
// or the first BDAT: building the message, TCP slow start, a few round trips on a bad
// link. A real MTA sends at many times 500 bytes per second once it starts.
//
// The bytes counted are those conn hands go-smtp while the transfer is on: raw SMTP
// bytes (dot-stuffing and, for BDAT, the command lines between chunks included), and
// over TLS the ciphertext, a little more than the plaintext Postfix counts (a client
// padding its records pays for the padding on the wire all the same). The transfer
// runs from the start of Session.Data to the end of the message (session.go deliver):
// for BDAT it spans the chunks and the waits between them. go-smtp starts Data for
// BDAT in a goroutine of its own as it starts copying the first chunk, so what conn
// hands over before that goroutine runs (a line or a buffer of the first chunk) is
// not counted: the rule is that much stricter, by far less than the grace.

// dataRate is the minimum data rate of a Server; the zero value is off.
type dataRate struct {
	min     int64 // bytes per second; 0: off
	grace   time.Duration
	tooSlow *replyError // the reply that names min
}

func newDataRate(min int64, grace time.Duration) dataRate {
	if min <= 0 {
		return dataRate{}
	}
	return dataRate{min: min, grace: max(grace, 0), tooSlow: errTooSlow(min)}
}

// maxRateCredit caps the time a transfer earns, so that n/min stays a valid duration
// (ReadTimeout and the session lifetime end the transfer long before).
const maxRateCredit = 1 << 32 // seconds

// deadline is when a transfer that began at start and has brought n bytes falls
// below the rate.
func (r dataRate) deadline(start time.Time, n int64) time.Time {
	secs := min(float64(n)/float64(r.min), maxRateCredit)
	return start.Add(max(r.grace, time.Duration(secs*float64(time.Second))))
}

// transfer is one DATA or BDAT transfer, for the minimum data rate.
type transfer struct{ start time.Time }

// beginTransfer marks the start of a transfer. Session.Data calls it, for BDAT from
// go-smtp's goroutine, and calls end once the message is read. end leaves a later
// transfer alone: a BDAT goroutine that starts late may overlap the next one.
func (st *connState) beginTransfer() (end func()) {
	t := &transfer{start: time.Now()}
	st.transfer.Store(t)
	return func() { st.transfer.CompareAndSwap(t, nil) }
}

// currentTransfer returns the transfer in progress, or nil, and starts a new count
// when it is not the one counted so far. Read side only.
func (c *conn) currentTransfer() *transfer {
	if c.rate.min == 0 {
		return nil
	}
	t := c.state.transfer.Load()
	if t != nil && t != c.xfer {
		c.xfer, c.xferBytes = t, 0
	}
	return t
}

// countTransfer counts n bytes handed to go-smtp towards the transfer in progress.
func (c *conn) countTransfer(n int) {
	if n > 0 && c.currentTransfer() != nil {
		c.xferBytes += int64(n)
	}
}

// armRateDeadline runs before each socket read. During a transfer the socket's read
// deadline becomes the rate's when that comes before go-smtp's (rateCut: a timeout is
// then the rate's, readFailed); otherwise, or once the transfer is over, it is
// go-smtp's again. The socket read blocks in this goroutine, so no byte counted after
// this point could have moved the deadline.
func (c *conn) armRateDeadline() {
	if t := c.currentTransfer(); t != nil {
		d := c.rate.deadline(t.start, c.xferBytes)
		if c.readDeadline.IsZero() || d.Before(c.readDeadline) {
			c.rateCut = c.Conn.SetReadDeadline(d) == nil
			return
		}
	}
	if c.rateCut {
		c.rateCut = false
		_ = c.Conn.SetReadDeadline(c.readDeadline)
	}
}
