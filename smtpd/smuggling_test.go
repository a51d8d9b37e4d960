package smtpd

import (
	"fmt"
	"testing"
)

// smugglingVariants are end-of-data sequences that some receivers took for CRLF.CRLF
// (SEC Consult 2023, hannob/smtpsmug; docs/threat-model.md B1). None contains a real
// CRLF.CRLF. Each is sent in one write after DATA, and as one BDAT LAST chunk, with a
// complete second transaction behind it (smuggled).
//
// Every variant with a bare CR or LF is refused with 550 5.5.2, in DATA and in BDAT.
// In DATA, go-smtp's reader drops "." and the CR after it when no LF follows, so
// "CRLF . CR" reaches smtpd without its bare CR; conn.Read sees it in the raw bytes
// (plain text only: see TestSmugglingOverTLS). The two NUL variants contain no bare
// line end: they are one message, the "smuggled" transaction is text in its body, and
// the test checks the exact bytes stored.
var smugglingVariants = []struct {
	name     string
	eod      string
	dataCode int
	bdatCode int
	// stored is what the Handler gets after DATA when dataCode is 250, without the
	// final ".\r\n"; after BDAT it is the chunk as sent.
	stored string
}{
	{name: `\n.\n`, eod: "\n.\n", dataCode: 550, bdatCode: 550},
	{name: `\n.\r\n`, eod: "\n.\r\n", dataCode: 550, bdatCode: 550},
	{name: `\r\n.\n`, eod: "\r\n.\n", dataCode: 550, bdatCode: 550},
	{name: `\r.\r`, eod: "\r.\r", dataCode: 550, bdatCode: 550},
	{name: `\r\n.\r`, eod: "\r\n.\r", dataCode: 550, bdatCode: 550},
	{name: `\r\r\n.\r\r\n`, eod: "\r\r\n.\r\r\n", dataCode: 550, bdatCode: 550},
	{name: `\r.\r\n`, eod: "\r.\r\n", dataCode: 550, bdatCode: 550},
	{name: `\n.\r`, eod: "\n.\r", dataCode: 550, bdatCode: 550},
	{name: `\r\n.\r\r\n`, eod: "\r\n.\r\r\n", dataCode: 550, bdatCode: 550},
	{name: `\n\n.\n\n`, eod: "\n\n.\n\n", dataCode: 550, bdatCode: 550},
	{name: `\r\n\x00.\r\n`, eod: "\r\n\x00.\r\n", dataCode: 250, bdatCode: 250,
		stored: smuggleFirst + "\r\n\x00.\r\n" + smuggledBody},
	// The dot is dot-stuffing (RFC 5321 §4.5.2) and goes; the NUL stays.
	{name: `\r\n.\x00\r\n`, eod: "\r\n.\x00\r\n", dataCode: 250, bdatCode: 250,
		stored: smuggleFirst + "\r\n\x00\r\n" + smuggledBody},
	{name: `\r\n.\n\r\n`, eod: "\r\n.\n\r\n", dataCode: 550, bdatCode: 550},
}

const (
	smuggleFirst = "From: a@b.test\r\nTo: security@ex.org\r\nSubject: first\r\n\r\nfirst body"
	// smuggled is a complete second transaction; its final CRLF.CRLF is what really ends
	// the DATA for go-smtp.
	smuggled = "MAIL FROM:<ceo@ex.org>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\n" +
		"From: ceo@ex.org\r\nTo: security@ex.org\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
	// smuggledBody is smuggled as DATA stores it: without the final dot line.
	smuggledBody = "MAIL FROM:<ceo@ex.org>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\n" +
		"From: ceo@ex.org\r\nTo: security@ex.org\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
)

func TestSmuggling(t *testing.T) {
	for _, v := range smugglingVariants {
		// "DATA pipelined" sends the message in the same write as MAIL, RCPT and DATA,
		// as an attacker may: go-smtp must not have read the message before Data runs.
		for _, mode := range []string{"DATA", "DATA pipelined", "BDAT"} {
			t.Run(mode+" "+v.name, func(t *testing.T) {
				rec := &recorder{}
				_, addr := startServer(t, Options{}, rec)
				c := dialRaw(t, addr)
				c.greet()

				payload := smuggleFirst + v.eod + smuggled
				var r response
				want := v.dataCode
				switch mode {
				case "DATA":
					begin(t, c)
					if r := c.cmd("DATA"); r.code != 354 {
						t.Fatalf("DATA = %v, want 354", r)
					}
					c.send(payload) // one write
					r = c.read()
				case "DATA pipelined":
					c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\n" + payload)
					for _, code := range []int{250, 250, 354} {
						if r := c.read(); r.code != code {
							t.Fatalf("reply = %v, want %d", r, code)
						}
					}
					r = c.read()
				default:
					begin(t, c)
					want = v.bdatCode
					c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(payload), payload))
					r = c.read()
				}
				if r.code != want {
					t.Errorf("reply to the message = %v, want %d", r, want)
				}
				if want == 550 && r.enhanced != "5.5.2" {
					t.Errorf("reply to the message = %v, want 550 5.5.2", r)
				}

				// The smuggled MAIL never ran: RCPT has no transaction to join.
				if r := c.cmd("RCPT TO:<security@ex.org>"); r.code != 502 {
					t.Errorf("RCPT after the message = %v, want 502 (no transaction)", r)
				}
				if r := c.cmd("QUIT"); r.code != 221 {
					t.Errorf("QUIT = %v, want 221", r)
				}

				got := rec.delivered()
				if len(got) > 1 {
					t.Fatalf("Handle called %d times, want at most 1", len(got))
				}
				if (len(got) == 1) != (r.code == 250) {
					t.Errorf("Handle called %d times with reply %v, want a call exactly when 250", len(got), r)
				}
				for _, d := range got {
					stored := v.stored
					if mode == "BDAT" {
						stored = payload
					}
					if string(d.msg) != stored {
						t.Errorf("Handler got %q, want exactly %q", d.msg, stored)
					}
					if i := bareLineEnd(d.msg); i >= 0 {
						t.Errorf("Handler got a bare CR or LF at %d: %q", i, d.msg)
					}
				}
			})
		}
	}
}
