package smtpd

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// begin opens a transaction from a@b.test to security@ex.org.
func begin(t testing.TB, c *rawConn) {
	t.Helper()
	if r := c.cmd("MAIL FROM:<a@b.test>"); r.code != 250 {
		t.Fatalf("MAIL = %v, want 250", r)
	}
	if r := c.cmd("RCPT TO:<security@ex.org>"); r.code != 250 {
		t.Fatalf("RCPT = %v, want 250", r)
	}
}

// data sends DATA, then body (which must end in CRLF for a clean end) and the final
// dot in one write, and returns the reply to the final dot.
func data(t testing.TB, c *rawConn, body string) response {
	t.Helper()
	if r := c.cmd("DATA"); r.code != 354 {
		t.Fatalf("DATA = %v, want 354", r)
	}
	c.send(body + ".\r\n")
	return c.read()
}

// bdat sends chunk as one BDAT LAST command.
func bdat(c *rawConn, chunk string) response {
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
	return c.read()
}

func received(n int) string {
	return strings.Repeat("Received: from relay.test by mx.test; Tue, 1 Jul 2025 10:00:00 +0000\r\n", n)
}

// inputCase is one row of the bad-input tables: a dialogue after EHLO, the reply to
// its last command, and what reached the Handler.
type inputCase struct {
	name     string
	opts     Options
	run      func(testing.TB, *rawConn) response
	code     int
	enhanced string
	// offered is what must reach Handler.Recipient ("" in a row: nothing).
	offered string
	handled int
}

// rcpt, inData and inBDAT build the dialogues of the tables.
func rcpt(addr string) func(testing.TB, *rawConn) response {
	return func(t testing.TB, c *rawConn) response {
		if r := c.cmd("MAIL FROM:<a@b.test>"); r.code != 250 {
			t.Fatalf("MAIL = %v, want 250", r)
		}
		return c.cmd("RCPT TO:<" + addr + ">")
	}
}

func inData(body string) func(testing.TB, *rawConn) response {
	return func(t testing.TB, c *rawConn) response { begin(t, c); return data(t, c, body) }
}

func inBDAT(chunk string) func(testing.TB, *rawConn) response {
	return func(t testing.TB, c *rawConn) response { begin(t, c); return bdat(c, chunk) }
}

func command(line string) func(testing.TB, *rawConn) response {
	return func(t testing.TB, c *rawConn) response { return c.cmd(line) }
}

// runInput runs each case through a real session and checks its exact reply code
// and whether the Handler saw anything.
func runInput(t *testing.T, tests []inputCase) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{accept: onlySecurity}
			accept := rec.accept
			rec.accept = func(r string) error {
				if strings.HasPrefix(r, "r") && strings.HasSuffix(r, "@ex.org") {
					return nil // the recipient-limit row
				}
				return accept(r)
			}
			_, addr := startServer(t, tc.opts, rec)
			c := dialRaw(t, addr)
			c.greet()
			r := tc.run(t, c)
			if r.code != tc.code || r.enhanced != tc.enhanced {
				t.Errorf("reply = %v, want %d %s", r, tc.code, tc.enhanced)
			}
			if got := strings.Join(rec.offered(), " "); got != tc.offered {
				t.Errorf("Handler.Recipient saw %q, want %q", got, tc.offered)
			}
			if got := len(rec.delivered()); got != tc.handled {
				t.Errorf("Handle called %d times, want %d", got, tc.handled)
			}
		})
	}
}

// TestBadEnvelope: recipients, senders, MAIL parameters and the order of commands.
func TestBadEnvelope(t *testing.T) {
	const cyrillic = "\u0455ecurity@ex.org" // U+0455 CYRILLIC SMALL LETTER DZE looks like 's'
	runInput(t, []inputCase{
		// Recipients (docs/threat-model.md B3). The Handler accepts only security@ex.org.
		{name: "unknown recipient", run: rcpt("victim@gmail.com"), code: 550, enhanced: "5.1.1", offered: "victim@gmail.com"},
		{name: "quoted local part hiding an address", run: rcpt(`"security@ex.org"@evil.com`), code: 550, enhanced: "5.1.1"},
		{name: "two at signs", run: rcpt("security@ex.org@evil.com"), code: 550, enhanced: "5.1.1"},
		// go-smtp strips the source route: the Handler sees victim@evil.com and refuses it.
		{name: "source route", run: rcpt("@ex.org:victim@evil.com"), code: 550, enhanced: "5.1.1", offered: "victim@evil.com"},
		{name: "percent hack", run: rcpt("security%evil.com@ex.org"), code: 550, enhanced: "5.1.1"},
		{name: "bang path", run: rcpt("evil.com!security@ex.org"), code: 550, enhanced: "5.1.1"},
		{name: "trailing dot", run: rcpt("security@ex.org."), code: 550, enhanced: "5.1.1"},
		{name: "address literal", run: rcpt("security@[192.0.2.1]"), code: 550, enhanced: "5.1.1"},
		{name: "cyrillic homograph", run: rcpt(cyrillic), code: 550, enhanced: "5.1.1"},
		{name: "single-label domain", run: rcpt("security@localhost"), code: 550, enhanced: "5.1.1"},
		{name: "upper case reaches handler with domain lower-cased", run: rcpt("SECURITY@EX.ORG"), code: 250, enhanced: "2.0.0", offered: "SECURITY@ex.org"},

		// Senders.
		{name: "sender with quoted local part", run: command(`MAIL FROM:<"a b"@b.test>`), code: 553, enhanced: "5.1.7"},
		{name: "sender with two at signs", run: command(`MAIL FROM:<"a@c"@b.test>`), code: 553, enhanced: "5.1.7"},
		{name: "sender without dot in domain", run: command(`MAIL FROM:<a@b>`), code: 553, enhanced: "5.1.7"},
		{name: "non-ASCII sender without SMTPUTF8", run: command("MAIL FROM:<j\u00fcrgen@b.test>"), code: 553, enhanced: "5.1.7"},
		// RFC 4954 §5, RFC 5321 §4.1.1.11: no AUTH is offered, so its parameter is unknown.
		{name: "AUTH=<> without AUTH", run: command("MAIL FROM:<a@b.test> AUTH=<>"), code: 555, enhanced: "5.5.4"},
		{name: "AUTH=mailbox without AUTH", run: command("MAIL FROM:<a@b.test> AUTH=a@b.test"), code: 555, enhanced: "5.5.4"},
		{name: "null sender", run: command("MAIL FROM:<>"), code: 250, enhanced: "2.0.0"},
		{name: "sender address literal", run: command("MAIL FROM:<a@[192.0.2.1]>"), code: 250, enhanced: "2.0.0"},
		// go-smtp v0.26.0 passes <Postmaster> without a domain (RFC 5321 §4.1.1.3); the
		// strict parser refuses it like any address without "@".
		{name: "Postmaster without a domain", run: rcpt("Postmaster"), code: 550, enhanced: "5.1.1"},

		// Sequence errors: go-smtp answers 502 5.5.1 (RFC 5321 §4.2.2 would say 503).
		{name: "DATA before RCPT", run: func(t testing.TB, c *rawConn) response { c.cmd("MAIL FROM:<a@b.test>"); return c.cmd("DATA") }, code: 502, enhanced: "5.5.1"},
		{name: "DATA before MAIL", run: command("DATA"), code: 502, enhanced: "5.5.1"},
		{name: "BDAT before RCPT", run: func(t testing.TB, c *rawConn) response { c.cmd("MAIL FROM:<a@b.test>"); return bdat(c, simpleMsg) }, code: 502, enhanced: "5.5.1"},
		{name: "nested MAIL", run: func(t testing.TB, c *rawConn) response { begin(t, c); return c.cmd("MAIL FROM:<b@b.test>") }, code: 503, enhanced: "5.5.1", offered: "security@ex.org"},
		{name: "RCPT before MAIL", run: command("RCPT TO:<security@ex.org>"), code: 502, enhanced: "5.5.1"},

		// Recipient limit (RFC 5321 §4.5.3.1.8), enforced by smtpd.
		{name: "too many recipients", run: func(t testing.TB, c *rawConn) response {
			c.cmd("MAIL FROM:<a@b.test>")
			for i := range DefaultMaxRecipients {
				if r := c.cmd(fmt.Sprintf("RCPT TO:<r%d@ex.org>", i)); r.code != 250 {
					t.Fatalf("RCPT %d = %v, want 250", i, r)
				}
			}
			return c.cmd("RCPT TO:<one-too-many@ex.org>")
		}, code: 452, enhanced: "4.5.3", offered: "r0@ex.org r1@ex.org r2@ex.org r3@ex.org r4@ex.org r5@ex.org r6@ex.org r7@ex.org r8@ex.org r9@ex.org"},
	})
}

// TestBadMessage: size, bare line ends, headerless messages, line length and loops,
// in DATA and in BDAT.
func TestBadMessage(t *testing.T) {
	long := "Subject: x\r\n\r\n" + strings.Repeat("a", 2500) + "\r\n"
	runInput(t, []inputCase{
		{name: "accepted message", run: inData(simpleMsg), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},
		{name: "accepted message via BDAT", run: inBDAT(simpleMsg), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},

		// Size (RFC 1870, go-smtp's reader, BDAT sizes).
		{name: "oversize in DATA", opts: Options{MaxMessageBytes: 1024}, run: inData("Subject: x\r\n\r\n" + strings.Repeat("0123456789abcde\r\n", 120)), code: 552, enhanced: "5.3.4", offered: "security@ex.org"},
		{name: "oversize announced by SIZE", opts: Options{MaxMessageBytes: 1024}, run: command("MAIL FROM:<a@b.test> SIZE=2048"), code: 552, enhanced: "5.3.4"},
		{name: "oversize in BDAT", opts: Options{MaxMessageBytes: 1024}, run: inBDAT(strings.Repeat("0123456789abcde\r\n", 120)), code: 552, enhanced: "5.3.4", offered: "security@ex.org"},

		// Bare line ends (docs/threat-model.md B1).
		{name: "bare LF in DATA", run: inData("Subject: x\n\r\nbody\r\n"), code: 550, enhanced: "5.5.2", offered: "security@ex.org"},
		{name: "bare CR in DATA", run: inData("Subject: x\r\r\nbody\r\n"), code: 550, enhanced: "5.5.2", offered: "security@ex.org"},
		{name: "bare LF in BDAT", run: inBDAT("Subject: x\r\n\r\nbo\ndy\r\n"), code: 550, enhanced: "5.5.2", offered: "security@ex.org"},
		{name: "bare CR in BDAT", run: inBDAT("Subject: x\r\n\r\nbo\rdy\r\n"), code: 550, enhanced: "5.5.2", offered: "security@ex.org"},
		{name: "CR at end of BDAT", run: inBDAT("Subject: x\r\n\r\nbody\r"), code: 550, enhanced: "5.5.2", offered: "security@ex.org"},

		// A message without any header field (RFC 5322 §3.6).
		{name: "empty message in DATA", run: inData(""), code: 554, enhanced: "5.6.0", offered: "security@ex.org"},
		{name: "empty message in BDAT", run: inBDAT(""), code: 554, enhanced: "5.6.0", offered: "security@ex.org"},
		{name: "body without header in DATA", run: inData("\r\nbody\r\n"), code: 554, enhanced: "5.6.0", offered: "security@ex.org"},
		{name: "body without header in BDAT", run: inBDAT("\r\nbody\r\n"), code: 554, enhanced: "5.6.0", offered: "security@ex.org"},
		{name: "header without body", run: inData("Subject: x\r\n"), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},

		// Line length: go-smtp's 500 5.4.0 for commands and DATA; smtpd matches it in BDAT.
		{name: "long line in DATA", run: inData(long), code: 500, enhanced: "5.4.0", offered: "security@ex.org"},
		{name: "long command line", run: func(t testing.TB, c *rawConn) response { return c.cmd("NOOP " + strings.Repeat("a", 2500)) }, code: 500, enhanced: "5.4.0"},
		// go-smtp lifts the line limit while it copies a chunk; smtpd checks the lines of
		// the message, whether or not they arrived with the command.
		{name: "long line in BDAT sent with the command", run: inBDAT(long), code: 500, enhanced: "5.4.0", offered: "security@ex.org"},
		{name: "long line in BDAT sent after the command", run: func(t testing.TB, c *rawConn) response {
			begin(t, c)
			c.send(fmt.Sprintf("BDAT %d LAST\r\n", len(long)))
			time.Sleep(100 * time.Millisecond) // let go-smtp read the command alone
			c.send(long)
			return c.read()
		}, code: 500, enhanced: "5.4.0", offered: "security@ex.org"},
		{name: "line of MaxLineLength in BDAT", opts: Options{MaxLineLength: 100}, run: inBDAT("Subject: x\r\n\r\n" + strings.Repeat("a", 98) + "\r\n"), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},
		{name: "line of MaxLineLength+1 in BDAT", opts: Options{MaxLineLength: 100}, run: inBDAT("Subject: x\r\n\r\n" + strings.Repeat("a", 99) + "\r\n"), code: 500, enhanced: "5.4.0", offered: "security@ex.org"},

		// Mail loops (docs/threat-model.md B9).
		{name: "51 Received fields", run: inData(received(51) + simpleMsg), code: 554, enhanced: "5.4.6", offered: "security@ex.org"},
		{name: "50 Received fields", run: inData(received(50) + simpleMsg), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},
		{name: "Received in the body does not count", run: inData(simpleMsg + received(60)), code: 250, enhanced: "2.0.0", offered: "security@ex.org", handled: 1},
	})
}

// TestAfterRefusalSessionGoesOn checks that a refused message leaves the session usable
// and that the next message is delivered alone.
func TestAfterRefusalSessionGoesOn(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialRaw(t, addr)
	c.greet()
	begin(t, c)
	if r := data(t, c, "Subject: bad\n\r\n"); r.code != 550 {
		t.Fatalf("bare LF message = %v, want 550", r)
	}
	begin(t, c)
	if r := bdat(c, "Subject: bad\r\n\r\n\r"); r.code != 550 {
		t.Fatalf("bare CR chunk = %v, want 550", r)
	}
	begin(t, c)
	if r := data(t, c, simpleMsg); r.code != 250 {
		t.Fatalf("good message = %v, want 250", r)
	}
	if got := rec.delivered(); len(got) != 1 || string(got[0].msg) != simpleMsg {
		t.Fatalf("deliveries = %+v, want the good message only", got)
	}
}

// TestBDATChunks checks a message in several chunks arrives whole, and that RSET in
// the middle of a BDAT transfer delivers nothing.
func TestBDATChunks(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialRaw(t, addr)
	c.greet()

	begin(t, c)
	parts := []string{"Subject: chunked\r", "\n\r\nfirst ", "second\r\n"}
	for i, p := range parts {
		last := ""
		if i == len(parts)-1 {
			last = " LAST"
		}
		c.send(fmt.Sprintf("BDAT %d%s\r\n%s", len(p), last, p))
		if r := c.read(); r.code != 250 {
			t.Fatalf("BDAT chunk %d = %v, want 250", i, r)
		}
	}

	begin(t, c)
	c.send("BDAT 5\r\nabcde")
	if r := c.read(); r.code != 250 {
		t.Fatalf("BDAT = %v, want 250", r)
	}
	if r := c.cmd("RSET"); r.code != 250 {
		t.Fatalf("RSET = %v, want 250", r)
	}
	if r := c.cmd("NOOP"); r.code != 250 {
		t.Fatalf("NOOP = %v, want 250", r)
	}

	got := rec.delivered()
	if len(got) != 1 || string(got[0].msg) != strings.Join(parts, "") {
		t.Fatalf("deliveries = %+v, want only %q", got, strings.Join(parts, ""))
	}
}

// TestHelo: the EHLO name is echoed by go-smtp ("250 Hello <name>"), so a name with
// control characters is refused before it can be; an unknown command word is echoed
// too, and conn.Write replaces its control characters. No reply carries one.
func TestHelo(t *testing.T) {
	tests := []struct {
		name  string
		lines []string // after the greeting, each answered
		codes []int
		open  bool // the connection stays open
	}{
		{"NUL in EHLO", []string{"EHLO a\x00b.test", "EHLO c.test"}, []int{501, 250}, true},
		{"ESC in HELO", []string{"HELO \x1b[31mred.test", "HELO c.test"}, []int{501, 250}, true},
		{"C1 control in EHLO", []string{"EHLO a\u0085b.test"}, []int{501}, true},
		{"invalid UTF-8 in EHLO", []string{"EHLO a\xffb.test"}, []int{501}, true},
		{"UTF-8 name is not refused", []string{"EHLO b\u00fccher.test"}, []int{250}, true},
		{"NUL in a repeated EHLO", []string{"EHLO c.test", "EHLO a\x00b.test"}, []int{250, 421}, false},
		{"control characters in an unknown command", []string{"\x01\x02\x7f\x04 x"}, []int{500}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, Options{}, &recorder{})
			c := dialRaw(t, addr)
			if r := c.read(); r.code != 220 {
				t.Fatalf("greeting = %v", r)
			}
			var codes []int
			for _, l := range tc.lines {
				c.send(l + "\r\n")
				// Read the raw reply lines, to see the bytes themselves.
				for {
					line, err := c.tp.ReadLine()
					if err != nil {
						codes = append(codes, 0)
						break
					}
					if i := strings.IndexFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }); i >= 0 {
						t.Errorf("reply line %q has a control character at %d", line, i)
					}
					if len(line) > 3 && line[3] == ' ' {
						code, _ := strconv.Atoi(line[:3])
						codes = append(codes, code)
						break
					}
				}
			}
			if fmt.Sprint(codes) != fmt.Sprint(tc.codes) {
				t.Errorf("replies = %v, want %v", codes, tc.codes)
			}
			if tc.open {
				if r := c.cmd("NOOP"); r.code != 250 {
					t.Errorf("NOOP after the replies = %v, want 250 (connection open)", r)
				}
			} else if !c.closed() {
				t.Error("connection open, want it closed after the 421")
			}
		})
	}
}
