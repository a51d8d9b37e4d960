// Package pipeline is the SMTP client of the announce fan-out and of the
// outbound queue's relay: one connection to the relay that carries many
// mail transactions, with command pipelining (RFC 2920) when the relay
// offers it.
//
// go-smtp's client sends one command and waits for its reply, and its
// SendMail gives up at the first refused RCPT. A release sends one
// transaction per subscriber, and the queue drains backlogs of copies, so
// each round trip counts: here MAIL, every RCPT and DATA go in one write,
// and the message content goes in the same write as the next transaction's
// MAIL, RCPT and DATA (RFC 2920 §3.1: the content may be the first
// "command" of a group). That is one round trip per transaction. Replies
// are read in order and each refusal is kept, per recipient or for the
// whole transaction. Without PIPELINING each command waits for its reply,
// as RFC 5321 requires.
//
// Implemented: RFC 5321 (SMTP), RFC 2920 (PIPELINING), RFC 1870 (SIZE),
// RFC 6152 (8BITMIME), RFC 3461 (RET=HDRS with DSN), RFC 3207 (STARTTLS),
// RFC 8314 (implicit TLS), RFC 4954 and RFC 4616 (AUTH PLAIN), RFC 6531
// (SMTPUTF8, for non-ASCII addresses).
package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Client is one SMTP connection. It is not safe for concurrent use.
type Client struct {
	cfg     Config
	conn    net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	ext     map[string]string // EHLO keywords, upper case → parameters
	scratch []byte
	// rset: the previous transaction may still be open on the relay (it
	// never reached DATA), so RSET goes before the next MAIL.
	rset bool
	// rsetSent: an RSET was written ahead of the MAIL whose replies come next.
	rsetSent bool
	answered func(int, Result)
	done     <-chan struct{} // the context of the call in progress
	broken   error           // set once the connection is unusable
}

// Result is the relay's answer to one transaction.
type Result struct {
	// Done: the relay answered the transaction to its end. Without it the
	// connection failed first, or Send stopped before it; whether a relay
	// that had the content took the message is then unknown.
	Done bool
	// Rcpt holds, per recipient of To, nil if RCPT was accepted, else the
	// refusal (a *Reply).
	Rcpt []error
	// Err is nil when the relay took the message for every accepted
	// recipient (250 after the final dot), or when it accepted no recipient
	// (then nothing was sent and Rcpt says why). Otherwise it is the refusal
	// of the whole transaction, at MAIL, DATA or the final dot (a *Reply),
	// or a message that cannot be sent as it is (permanent).
	Err error
}

// Dial connects, reads the greeting, says EHLO, secures the connection
// (STARTTLS, or TLS from the start) and authenticates as cfg says. ctx
// bounds the whole opening.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("pipeline: no relay address")
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout}
	var conn net.Conn
	var err error
	if cfg.TLS == ImplicitTLS {
		conn, err = (&tls.Dialer{NetDialer: d, Config: cfg.tlsConfig()}).DialContext(ctx, "tcp", cfg.Addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: dial %s: %w", cfg.Addr, err)
	}
	c := &Client{cfg: cfg, conn: conn, br: bufio.NewReaderSize(conn, maxReplyLine), bw: bufio.NewWriterSize(conn, 64<<10)}
	stop := c.watch(ctx)
	err = c.open()
	if !stop() && err == nil {
		err = ctx.Err()
	}
	c.done = nil
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", cfg.Addr, ctx.Err())
		}
		return nil, err
	}
	return c, nil
}

// open greets, secures and authenticates.
func (c *Client) open() error {
	r, err := c.read(c.cfg.CommandTimeout)
	if err != nil {
		return fmt.Errorf("pipeline: greeting from %s: %w", c.cfg.Addr, err)
	}
	if r.code != 220 {
		return r.refusal("greeting")
	}
	if err := c.hello(); err != nil {
		return err
	}
	if c.cfg.TLS == StartTLS {
		if err := c.startTLS(); err != nil {
			return err
		}
	}
	if c.cfg.User != "" {
		return c.auth()
	}
	return nil
}

// hello says EHLO and notes the extensions. A relay that refuses EHLO
// gets HELO (RFC 5321 §3.2), unless TLS or AUTH is needed.
func (c *Client) hello() error {
	r, err := c.cmd("EHLO "+c.cfg.HeloName, c.cfg.CommandTimeout)
	if err != nil {
		return fmt.Errorf("pipeline: EHLO to %s: %w", c.cfg.Addr, err)
	}
	c.ext = map[string]string{}
	if r.code == 250 && c.cfg.Instance != "" && ownListener(r.lines[0], c.cfg.Instance) {
		return fmt.Errorf("pipeline: %s: %w", c.cfg.Addr, ErrLoop)
	}
	if r.code == 250 {
		for _, l := range r.lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	if r.code/100 != 5 || c.cfg.TLS != NoTLS || c.cfg.User != "" {
		return r.refusal("EHLO")
	}
	if r, err = c.cmd("HELO "+c.cfg.HeloName, c.cfg.CommandTimeout); err != nil {
		return fmt.Errorf("pipeline: HELO to %s: %w", c.cfg.Addr, err)
	}
	if r.code != 250 {
		return r.refusal("HELO")
	}
	return nil
}

// ownListener reports whether the first line of an EHLO reply, our
// listener's "<domain> embargo <token> Hello <name>" (RFC 5321 §4.1.1.1
// lets the text after the domain be anything), carries our instance token
// as a word of its own.
func ownListener(line, token string) bool {
	for _, w := range strings.Fields(line) {
		if w == token {
			return true
		}
	}
	return false
}

func (c *Client) startTLS() error {
	if _, ok := c.ext["STARTTLS"]; !ok {
		return fmt.Errorf("pipeline: %s offers no STARTTLS", c.cfg.Addr) // never plaintext instead
	}
	r, err := c.cmd("STARTTLS", c.cfg.CommandTimeout)
	if err != nil {
		return fmt.Errorf("pipeline: STARTTLS with %s: %w", c.cfg.Addr, err)
	}
	if r.code != 220 {
		return r.refusal("STARTTLS")
	}
	// Anything the relay sent after its 220 came before TLS: a man in the
	// middle injecting replies (CVE-2011-0411, RFC 3207 §4.2: nothing from
	// before TLS is kept).
	if c.br.Buffered() > 0 {
		return fmt.Errorf("%w: data after the STARTTLS reply", errProtocol)
	}
	tc := tls.Client(c.conn, c.cfg.tlsConfig())
	if err := c.deadline(c.conn.SetDeadline, c.cfg.DialTimeout); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("pipeline: TLS with %s: %w", c.cfg.Addr, err)
	}
	c.conn = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	return c.hello() // RFC 3207 §4.2: the session starts again
}

func (c *Client) auth() error {
	if c.cfg.TLS == NoTLS {
		return errors.New("pipeline: AUTH only over TLS")
	}
	if !hasWord(c.ext["AUTH"], "PLAIN") {
		return fmt.Errorf("pipeline: %s offers no AUTH PLAIN", c.cfg.Addr)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + c.cfg.User + "\x00" + c.cfg.Password))
	r, err := c.cmd("AUTH PLAIN "+cred, c.cfg.CommandTimeout)
	if err != nil {
		return fmt.Errorf("pipeline: AUTH at %s: %w", c.cfg.Addr, err)
	}
	if r.code != 235 {
		return r.refusal("AUTH")
	}
	return nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if strings.EqualFold(f, w) {
			return true
		}
	}
	return false
}

// Pipelining reports whether the relay offers PIPELINING.
func (c *Client) Pipelining() bool { _, ok := c.ext["PIPELINING"]; return ok }

// Extension reports whether the relay offered the EHLO keyword ext, and
// its parameters.
func (c *Client) Extension(ext string) (string, bool) {
	v, ok := c.ext[strings.ToUpper(ext)]
	return v, ok
}

// Send runs txns in order over the connection and returns one Result each.
//
// It stops after the first transaction refused as a whole (at MAIL, DATA
// or the final dot) or that cannot be sent: the following ones are not
// Done. A refusal at the final dot comes after the next transaction was
// pipelined behind it; that one is completed first, so it may be Done too.
// The connection stays usable after refusals.
//
// A non-nil error means the connection is unusable (it broke, timed out,
// ctx ended, or the relay broke the protocol): close the Client. Results
// before the failure are valid.
func (c *Client) Send(ctx context.Context, txns []Txn) ([]Result, error) {
	return c.SendNotify(ctx, txns, nil)
}

// SendNotify is Send that also calls answered, if not nil, as soon as a
// transaction got the relay's final answer, in order, before Send
// returns: to note when a copy left, say.
func (c *Client) SendNotify(ctx context.Context, txns []Txn, answered func(i int, r Result)) ([]Result, error) {
	res := make([]Result, len(txns))
	c.answered = answered
	defer func() { c.answered = nil }()
	if c.broken != nil {
		return res, c.broken
	}
	stop := c.watch(ctx)
	var err error
	if c.Pipelining() {
		err = c.sendPipelined(txns, res)
	} else {
		err = c.sendEach(txns, res)
	}
	if !stop() {
		// The deadline is in the past now: the connection is done for.
		err = fmt.Errorf("pipeline: %w", ctx.Err())
	}
	c.done = nil
	if err != nil {
		c.broken = err
	}
	return res, err
}

// sendPipelined writes each transaction's MAIL, RCPTs and DATA in one
// group, and its content with the next transaction's group (RFC 2920 §3.1).
func (c *Client) sendPipelined(txns []Txn, res []Result) error {
	if len(txns) == 0 {
		return nil
	}
	if err := c.check(&txns[0]); err != nil {
		res[0] = Result{Done: true, Err: err}
		return nil
	}
	c.writeEnvelope(&txns[0])
	if err := c.flush(); err != nil {
		return err
	}
	end := len(txns) // no transaction from end on is started
	for i := 0; i < end; i++ {
		accepted, data, err := c.readEnvelope(&txns[i], &res[i])
		if err != nil {
			return err
		}
		next := i+1 < end && res[i].Err == nil
		if next {
			if err := c.check(&txns[i+1]); err != nil {
				res[i+1] = Result{Done: true, Err: err}
				next = false
			}
		}
		if data {
			c.writeContent(&txns[i], accepted > 0)
		} else {
			c.rset = true
			res[i].Done = true
		}
		if next {
			c.writeEnvelope(&txns[i+1])
		}
		if err := c.flush(); err != nil {
			return err
		}
		if data {
			if err := c.readEnd(accepted > 0, &res[i]); err != nil {
				return err
			}
			if res[i].Err != nil && next {
				end = i + 2 // finish the transaction already begun, then stop
			}
		}
		c.notify(i, &res[i])
		if !next {
			return nil
		}
	}
	return nil
}

// sendEach runs each command on its own, waiting for its reply: the relay
// did not offer PIPELINING.
func (c *Client) sendEach(txns []Txn, res []Result) error {
	for i := range txns {
		t, r := &txns[i], &res[i]
		if err := c.check(t); err != nil {
			*r = Result{Done: true, Err: err}
			return nil
		}
		if c.rset {
			rep, err := c.cmd("RSET", c.cfg.CommandTimeout)
			if err != nil {
				return err
			}
			if rep.code != 250 {
				return fmt.Errorf("%w: RSET answered %d %s", errProtocol, rep.code, rep.text())
			}
			c.rset = false
		}
		rep, err := c.cmd(c.mailCommand(t), c.cfg.CommandTimeout)
		if err != nil {
			return err
		}
		r.Rcpt = make([]error, len(t.To))
		if rep.code != 250 {
			*r = Result{Done: true, Rcpt: r.Rcpt, Err: rep.refusal("MAIL FROM")}
			c.notify(i, r)
			return nil
		}
		accepted := 0
		for j, to := range t.To {
			if rep, err = c.cmd("RCPT TO:<"+to+">", c.cfg.CommandTimeout); err != nil {
				return err
			}
			if r.Rcpt[j] = rcptRefusal(rep); r.Rcpt[j] == nil {
				accepted++
			}
		}
		c.rset = true // until the transaction ends with the dot
		if accepted == 0 {
			r.Done = true
			c.notify(i, r)
			continue
		}
		if rep, err = c.cmd("DATA", c.cfg.CommandTimeout); err != nil {
			return err
		}
		if rep.code != 354 {
			r.Done, r.Err = true, rep.refusal("DATA")
			c.notify(i, r)
			return nil
		}
		c.writeContent(t, true)
		if err := c.flush(); err != nil {
			return err
		}
		if err := c.readEnd(true, r); err != nil {
			return err
		}
		c.rset = false // the dot ended the transaction, whatever its reply
		c.notify(i, r)
		if r.Err != nil {
			return nil
		}
	}
	return nil
}

func (c *Client) notify(i int, r *Result) {
	if c.answered != nil {
		c.answered(i, *r)
	}
}

// check makes the header of t if it is made late, and refuses a
// transaction that cannot be sent as it is: permanent.
func (c *Client) check(t *Txn) error {
	if t.MakeHeader != nil {
		h, err := t.MakeHeader()
		if err != nil {
			return permanent{err}
		}
		t.Header, t.MakeHeader = h, nil
	}
	_, offered := c.ext["SMTPUTF8"]
	utf8, err := checkAddr(t.From, true, offered)
	if err == nil && len(t.To) == 0 {
		err = errors.New("pipeline: no recipients")
	}
	for _, to := range t.To {
		if err == nil {
			var nonASCII bool
			nonASCII, err = checkAddr(to, false, offered)
			utf8 = utf8 || nonASCII
		}
	}
	t.smtputf8 = utf8
	if err == nil && t.Body == nil {
		err = errors.New("pipeline: no message")
	}
	if err == nil && len(t.Header) > 0 {
		if err = checkText(t.Header, maxLine); err == nil && !bytes.HasSuffix(t.Header, []byte("\r\n")) {
			err = fmt.Errorf("%w: the copy's header does not end with CRLF", ErrBareLineEnd)
		}
	}
	if err == nil && !t.Body.asIs && (t.Body.eightBit || has8Bit(t.Header)) {
		if _, ok := c.ext["8BITMIME"]; !ok {
			err = errors.New("pipeline: 8-bit message and the relay lacks 8BITMIME (RFC 6152)")
		}
	}
	if err != nil {
		return permanent{err}
	}
	return nil
}

type permanent struct{ error }

func (p permanent) Unwrap() error   { return p.error }
func (p permanent) Permanent() bool { return true }

func (c *Client) mailCommand(t *Txn) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(t.From)
	b.WriteByte('>')
	if _, ok := c.ext["SIZE"]; ok {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.Itoa(len(t.Header) + t.Body.size))
	}
	if _, ok := c.ext["8BITMIME"]; ok && (t.Body.eightBit || has8Bit(t.Header)) {
		b.WriteString(" BODY=8BITMIME")
	}
	if t.smtputf8 {
		b.WriteString(" SMTPUTF8") // RFC 6531 §3.4
	}
	if _, ok := c.ext["DSN"]; ok {
		b.WriteString(" RET=HDRS") // a bounce need not carry the message back (RFC 3461 §4.3)
	}
	return b.String()
}

// writeEnvelope buffers [RSET,] MAIL, each RCPT and DATA.
func (c *Client) writeEnvelope(t *Txn) {
	c.rsetSent = c.rset
	if c.rset {
		c.bw.WriteString("RSET\r\n")
		c.rset = false
	}
	c.bw.WriteString(c.mailCommand(t))
	c.bw.WriteString("\r\n")
	for _, to := range t.To {
		c.bw.WriteString("RCPT TO:<")
		c.bw.WriteString(to)
		c.bw.WriteString(">\r\n")
	}
	c.bw.WriteString("DATA\r\n")
}

// readEnvelope reads the replies to a group written by writeEnvelope. data
// reports a 354 to DATA: the content (or, with no recipient accepted, a
// lone dot) must follow.
func (c *Client) readEnvelope(t *Txn, res *Result) (accepted int, data bool, err error) {
	if c.rsetSent {
		c.rsetSent = false
		r, err := c.read(c.cfg.CommandTimeout)
		if err != nil {
			return 0, false, err
		}
		if r.code != 250 {
			return 0, false, fmt.Errorf("%w: RSET answered %d %s", errProtocol, r.code, r.text())
		}
	}
	r, err := c.read(c.cfg.CommandTimeout)
	if err != nil {
		return 0, false, err
	}
	res.Rcpt = make([]error, len(t.To))
	if r.code != 250 {
		res.Err = r.refusal("MAIL FROM")
	}
	for j := range t.To {
		if r, err = c.read(c.cfg.CommandTimeout); err != nil {
			return 0, false, err
		}
		if res.Rcpt[j] = rcptRefusal(r); res.Rcpt[j] == nil {
			accepted++
		}
	}
	if r, err = c.read(c.cfg.CommandTimeout); err != nil {
		return 0, false, err
	}
	if r.code == 354 {
		return accepted, true, nil
	}
	if res.Err == nil && accepted > 0 {
		res.Err = r.refusal("DATA")
	}
	return accepted, false, nil
}

func rcptRefusal(r reply) error {
	if r.code == 250 || r.code == 251 {
		return nil
	}
	return r.refusal("RCPT TO")
}

// writeContent buffers the message and the final dot. With no recipient
// accepted, after a 354 that should not have come (RFC 2920 §3.1 wants
// 503 or 554), only the dot: nobody receives an empty message, since there
// is no recipient, and the transaction ends.
func (c *Client) writeContent(t *Txn, content bool) {
	// An error here shows again at the flush, and bufio keeps it.
	_ = c.deadline(c.conn.SetWriteDeadline, c.cfg.DataTimeout)
	if content {
		c.scratch = stuff(c.scratch[:0], t.Header)
		c.bw.Write(c.scratch)
		c.bw.Write(t.Body.stuffed)
	}
	c.bw.WriteString(".\r\n")
}

// readEnd reads the reply to the final dot.
func (c *Client) readEnd(content bool, res *Result) error {
	r, err := c.read(c.cfg.DataTimeout)
	if err != nil {
		return err
	}
	res.Done = true
	if content && r.code != 250 {
		res.Err = r.refusal("end of data")
	}
	return nil
}

func (c *Client) flush() error {
	if err := c.deadline(c.conn.SetWriteDeadline, c.cfg.DataTimeout); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("pipeline: write to %s: %w", c.cfg.Addr, err)
	}
	return nil
}

func (c *Client) read(timeout time.Duration) (reply, error) {
	if err := c.deadline(c.conn.SetReadDeadline, timeout); err != nil {
		return reply{}, err
	}
	r, err := readReply(c.br)
	if err != nil {
		return r, fmt.Errorf("pipeline: read from %s: %w", c.cfg.Addr, err)
	}
	return r, nil
}

// watch makes ctx interrupt the connection: its end sets a deadline in
// the past, which ends a blocked read or write at once. Call the returned
// function when done; it reports false if ctx ended meanwhile.
func (c *Client) watch(ctx context.Context) func() bool {
	c.done = ctx.Done()
	conn := c.conn
	return context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
}

// deadline sets a deadline d from now with set, unless the call's context
// has ended. The check comes after the set: either the context's deadline
// in the past comes later and wins, or the check sees the end.
func (c *Client) deadline(set func(time.Time) error, d time.Duration) error {
	set(time.Now().Add(d))
	if c.done != nil {
		select {
		case <-c.done:
			return errors.New("pipeline: canceled")
		default:
		}
	}
	return nil
}

// cmd writes one command and reads its reply.
func (c *Client) cmd(line string, timeout time.Duration) (reply, error) {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	if err := c.flush(); err != nil {
		return reply{}, err
	}
	return c.read(timeout)
}

// Close ends the session with QUIT, if the connection still works, and
// closes it.
func (c *Client) Close() error {
	if c.broken == nil {
		c.broken = errors.New("pipeline: client closed")
		c.conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.cmd("QUIT", 2*time.Second); err != nil {
			c.conn.Close()
			return nil // the messages were answered; a failed QUIT changes nothing
		}
	}
	return c.conn.Close()
}
