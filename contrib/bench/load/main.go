// Command load is the Go half of contrib/bench/run: the flood client that
// smtp-source cannot be (many envelope senders, refusals counted instead of
// aborting, one timed report in the middle), a free-port picker, and the
// reference of the Maildir drain (maildir.go).
//
//	load ports N
//	load flood -addr HOST:PORT -to security@DOMAIN -sink HOST:PORT [flags]
//	load maildir -dir DIR [-n N] [-size BYTES]
//
// flood listens on -sink as the daemon's relay (a discarding SMTP server that
// notes when a copy for the probe address arrives), then sends -n reports from
// -senders envelope senders over -sessions connections that are reused, as
// fast as they are answered. When half are sent it sends one more report, the
// probe, from its own connection and address (and from -probe-source, a
// client address of its own, as a real reporter's mail server is), and times
// its 250 (the SMTP acknowledgement) and the arrival at the sink of the mail
// the daemon sends back to the probe's address (the reporter's
// acknowledgement). It prints key=value lines for the script.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load ports N | load flood [flags] | load maildir [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ports":
		err = ports(os.Args[2:])
	case "flood":
		err = flood(os.Args[2:])
	case "maildir":
		err = maildir(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want ports, flood or maildir", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// ports prints N distinct free TCP ports on 127.0.0.1, held open together
// while they are chosen so that they differ.
func ports(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: load ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return fmt.Errorf("ports: %q is not a positive number", args[0])
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

type floodConfig struct {
	addr, to, sink, probe string
	source, probeSource   string // local addresses the flood and the probe connect from ("": any)
	n, senders, sessions  int
	size                  int
	ackTimeout, connect   time.Duration
	counts                counters
	// The probe's outcome, written by its goroutine before wg.Done.
	probeSMTP     time.Duration // first attempt to 250, retries included
	probeTries    int
	probeErr      error
	probeAcked    chan time.Time // when its acknowledgement reached the sink
	probeAt       time.Time      // when its 250 came
	sinkMsgs      atomic.Int64
	latMu         sync.Mutex
	latencies     []time.Duration // MAIL to 250 of each accepted report
	connectFailed atomic.Int64    // dials refused or not greeted with 220
}

type counters struct {
	accepted, temp, perm, broken atomic.Int64
	mu                           sync.Mutex
	replies                      map[string]int // refusals by reply code
}

func (c *counters) refusal(code int, enh smtp.EnhancedCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replies[fmt.Sprintf("%d_%d.%d.%d", code, enh[0], enh[1], enh[2])]++
}

func flood(args []string) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	c := &floodConfig{probeAcked: make(chan time.Time, 1)}
	c.counts.replies = map[string]int{}
	fs.StringVar(&c.addr, "addr", "", "the daemon's SMTP address, host:port")
	fs.StringVar(&c.to, "to", "", "the security list address")
	fs.StringVar(&c.sink, "sink", "", "listen here as the daemon's relay, host:port")
	fs.StringVar(&c.probe, "probe", "probe@reporter.test", "the probe report's sender")
	fs.StringVar(&c.source, "source", "", "the local address the flood connects from, e.g. 127.0.0.1 (default: any)")
	fs.StringVar(&c.probeSource, "probe-source", "", "the local address the probe connects from, e.g. 127.0.0.2: another client than the flood's")
	fs.IntVar(&c.n, "n", 100000, "reports to send")
	fs.IntVar(&c.senders, "senders", 1000, "distinct envelope senders")
	fs.IntVar(&c.sessions, "sessions", 8, "parallel connections, each reused")
	fs.IntVar(&c.size, "size", 1024, "body bytes per report")
	fs.DurationVar(&c.ackTimeout, "ack-timeout", 10*time.Minute, "how long to wait for the probe's acknowledgement mail")
	fs.DurationVar(&c.connect, "connect-timeout", 10*time.Second, "dial timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.addr == "" || c.to == "" || c.sink == "" {
		return errors.New("flood: -addr, -to and -sink are required")
	}
	if c.n < 2 || c.senders < 1 || c.sessions < 1 {
		return errors.New("flood: want -n 2 or more, -senders and -sessions 1 or more")
	}
	stopSink, err := c.startSink()
	if err != nil {
		return err
	}
	defer stopSink()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var probeOnce sync.Once
	for range c.sessions {
		wg.Go(func() {
			c.session(&next, func() {
				probeOnce.Do(func() { wg.Go(c.sendProbe) })
			})
		})
	}
	wg.Wait()
	c.report(time.Since(start))
	return nil
}

// report prints the counts, then waits for the probe's acknowledgement.
func (c *floodConfig) report(el time.Duration) {
	acc := c.counts.accepted.Load()
	fmt.Printf("sent=%d\naccepted=%d\nrefused_4xx=%d\nrefused_5xx=%d\nbroken=%d\nconnect_refused=%d\n",
		c.n, acc, c.counts.temp.Load(), c.counts.perm.Load(), c.counts.broken.Load(), c.connectFailed.Load())
	for k, v := range c.counts.replies {
		fmt.Printf("reply_%s=%d\n", k, v)
	}
	answered := acc + c.counts.temp.Load() + c.counts.perm.Load()
	fmt.Printf("elapsed_s=%.3f\naccepted_per_s=%.1f\nanswered_per_s=%.1f\n", el.Seconds(), float64(acc)/el.Seconds(), float64(answered)/el.Seconds())
	slices.Sort(c.latencies)
	if n := len(c.latencies); n > 0 {
		ms := func(q float64) float64 {
			return float64(c.latencies[min(int(q*float64(n)), n-1)].Microseconds()) / 1000
		}
		fmt.Printf("latency_p50_ms=%.1f\nlatency_p99_ms=%.1f\nlatency_max_ms=%.1f\n", ms(0.5), ms(0.99), ms(1))
	}
	fmt.Printf("probe_tries=%d\n", c.probeTries)
	if c.probeErr != nil {
		fmt.Printf("probe_error=%q\n", c.probeErr.Error())
	} else {
		fmt.Printf("probe_smtp_ms=%.1f\n", float64(c.probeSMTP.Microseconds())/1000)
		select {
		case at := <-c.probeAcked:
			fmt.Printf("probe_ack_s=%.3f\n", at.Sub(c.probeAt).Seconds())
		case <-time.After(c.ackTimeout - time.Since(c.probeAt)):
			fmt.Printf("probe_ack_timeout_s=%.0f\n", c.ackTimeout.Seconds())
		}
	}
	fmt.Printf("sink_msgs=%d\n", c.sinkMsgs.Load())
}

// session sends reports over one connection until n are sent, dialling again
// after the server closed it (a 421, a broken connection); half-way it calls
// probe. A report is taken only once a connection is up, so refused
// connections cost no report.
func (c *floodConfig) session(next *atomic.Int64, probe func()) {
	var cl *smtp.Client
	defer func() {
		if cl != nil {
			cl.Quit()
		}
	}()
	body := strings.Repeat(strings.Repeat("x", 70)+"\r\n", max(c.size/72, 1))
	var lat []time.Duration
	defer func() {
		c.latMu.Lock()
		c.latencies = append(c.latencies, lat...)
		c.latMu.Unlock()
	}()
	for next.Load() < int64(c.n) {
		if cl == nil {
			var err error
			if cl, err = c.dial(c.source); err != nil {
				c.connectFailed.Add(1)
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		i := next.Add(1)
		if i > int64(c.n) {
			return
		}
		if i == int64(c.n/2) {
			probe()
		}
		from := fmt.Sprintf("reporter%04d@flood%d.test", i%int64(c.senders), i%int64(c.senders)%50)
		msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: flood report %d\r\nMessage-ID: <flood.%d.%d@load.test>\r\nDate: %s\r\n\r\n%s",
			from, c.to, i, i, time.Now().UnixNano(), time.Now().Format(time.RFC1123Z), body)
		t0 := time.Now()
		err := cl.SendMail(from, []string{c.to}, strings.NewReader(msg))
		if err == nil {
			lat = append(lat, time.Since(t0))
		}
		if !c.count(err) {
			cl.Close()
			cl = nil
		}
	}
}

// count records the outcome of one report and reports whether the
// connection can carry the next one.
func (c *floodConfig) count(err error) bool {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		c.counts.accepted.Add(1)
		return true
	case errors.As(err, &se):
		c.counts.refusal(se.Code, se.EnhancedCode)
		if se.Code >= 500 {
			c.counts.perm.Add(1)
		} else {
			c.counts.temp.Add(1)
		}
		return se.Code != 421
	default:
		c.counts.broken.Add(1)
		return false
	}
}

// dial connects from source ("" for any local address) and says EHLO, with
// a real MTA's patience: RFC 5321 §4.5.3.2 gives 5 minutes per command and
// 10 for the reply to the final dot, so a slow server shows up as latency,
// not as a reconnection.
func (c *floodConfig) dial(source string) (*smtp.Client, error) {
	d := net.Dialer{Timeout: c.connect}
	if source != "" {
		ip := net.ParseIP(source)
		if ip == nil {
			return nil, fmt.Errorf("dial: %q is not an IP address", source)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return nil, err
	}
	cl := smtp.NewClient(conn)
	cl.CommandTimeout, cl.SubmissionTimeout = 5*time.Minute, 10*time.Minute
	if err := cl.Hello("load.test"); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// sendProbe sends the one timed report on a connection of its own, trying
// again every second while the connection or the message is refused for
// now, as an MTA would (only sooner), until the acknowledgement timeout.
func (c *floodConfig) sendProbe() {
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: probe: overflow in the parser\r\nMessage-ID: <probe.%d@reporter.test>\r\nDate: %s\r\n\r\nThe real report, sent in the middle of a flood.\r\n",
		c.probe, c.to, time.Now().UnixNano(), time.Now().Format(time.RFC1123Z))
	start := time.Now()
	for {
		c.probeTries++
		cl, err := c.dial(c.probeSource)
		if err == nil {
			err = cl.SendMail(c.probe, []string{c.to}, strings.NewReader(msg))
			c.probeAt = time.Now()
			cl.Quit()
		}
		var se *smtp.SMTPError
		if err == nil || (errors.As(err, &se) && se.Code >= 500) || time.Since(start) > c.ackTimeout {
			c.probeSMTP, c.probeErr = c.probeAt.Sub(start), err
			return
		}
		time.Sleep(time.Second)
	}
}

// startSink serves SMTP on c.sink, discarding every message and noting the
// first one addressed to the probe.
func (c *floodConfig) startSink() (func(), error) {
	l, err := net.Listen("tcp", c.sink)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	probe := strings.ToLower(c.probe)
	var once sync.Once
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{c: c, probe: probe, once: &once}, nil
	}))
	srv.Domain = "sink.load.test"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

type sinkSession struct {
	c        *floodConfig
	probe    string
	once     *sync.Once
	forProbe bool
}

func (s *sinkSession) Mail(string, *smtp.MailOptions) error { s.forProbe = false; return nil }
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.EqualFold(to, s.probe) {
		s.forProbe = true
	}
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.c.sinkMsgs.Add(1)
	if s.forProbe {
		s.once.Do(func() { s.c.probeAcked <- time.Now() })
	}
	return nil
}
func (s *sinkSession) Reset()        { s.forProbe = false }
func (s *sinkSession) Logout() error { return nil }
