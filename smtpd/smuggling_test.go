package smtpd

import (
	"fmt"
	"strings"
	"testing"
)

// smugglingVariants are end-of-data sequences that some receivers took for CRLF.CRLF
// (SEC Consult 2023, hannob/smtpsmug; threats.md B1). None contains a real CRLF.CRLF.
//
// dataCode is the reply after DATA, bdatCode after the same bytes in one BDAT LAST.
// Three rows get 250 after DATA, still as one message: go-smtp's dot reader drops a
// "." and a following CR at the start of a line when no LF follows (its state
// stateDotCR; net/textproto keeps the CR), so `\r\n.\r` + X reaches smtpd as `\r\n` + X,
// without a bare CR; and a NUL next to the dot is no line end at all. BDAT has no
// dot-stuffing, so the CR is refused there.
var smugglingVariants = []struct {
	name     string
	eod      string
	dataCode int
	bdatCode int
}{
	{`\n.\n`, "\n.\n", 550, 550},
	{`\n.\r\n`, "\n.\r\n", 550, 550},
	{`\r\n.\n`, "\r\n.\n", 550, 550},
	{`\r.\r`, "\r.\r", 550, 550},
	{`\r\n.\r`, "\r\n.\r", 250, 550},
	{`\r\r\n.\r\r\n`, "\r\r\n.\r\r\n", 550, 550},
	{`\r.\r\n`, "\r.\r\n", 550, 550},
	{`\n.\r`, "\n.\r", 550, 550},
	{`\r\n.\r\r\n`, "\r\n.\r\r\n", 250, 550},
	{`\n\n.\n\n`, "\n\n.\n\n", 550, 550},
	{`\r\n\x00.\r\n`, "\r\n\x00.\r\n", 250, 250},
	{`\r\n.\x00\r\n`, "\r\n.\x00\r\n", 250, 250},
	{`\r\n.\n\r\n`, "\r\n.\n\r\n", 550, 550},
}

const (
	smuggleFirst = "From: a@b.test\r\nTo: security@ex.org\r\nSubject: first\r\n\r\nfirst body"
	// smuggled is a complete second transaction; its final CRLF.CRLF is what really ends
	// the DATA for go-smtp.
	smuggled = "MAIL FROM:<ceo@ex.org>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\n" +
		"From: ceo@ex.org\r\nTo: security@ex.org\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
)

func TestSmuggling(t *testing.T) {
	for _, v := range smugglingVariants {
		for _, mode := range []string{"DATA", "BDAT"} {
			t.Run(mode+" "+v.name, func(t *testing.T) {
				rec := &recorder{}
				_, addr := startServer(t, Options{}, rec)
				c := dialRaw(t, addr)
				c.greet()
				begin(t, c)

				payload := smuggleFirst + v.eod + smuggled
				var r response
				want := v.dataCode
				if mode == "DATA" {
					if r := c.cmd("DATA"); r.code != 354 {
						t.Fatalf("DATA = %v, want 354", r)
					}
					c.send(payload) // one write
					r = c.read()
				} else {
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
					if !strings.HasPrefix(string(d.msg), "From: a@b.test\r\n") {
						t.Errorf("Handler got a message not starting with the first one's header: %q", d.msg)
					}
					if i := bareLineEnd(d.msg); i >= 0 {
						t.Errorf("Handler got a bare CR or LF at %d: %q", i, d.msg)
					}
				}
			})
		}
	}
}
