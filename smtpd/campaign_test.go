package smtpd

// The attack classes the SMTP layer is tested against, each with the reply it must
// produce and what the Handler may receive (docs/threat-model.md B1, B3, B4, B5, B7,
// B9, C1):
//
//	smuggling, 13 end-of-data variants × DATA, pipelined DATA, BDAT   TestSmuggling, TestSmugglingOverTLS
//	BDAT: chunks, RSET/EHLO mid-transfer, pipelining, truncation     TestBDATLastReply, TestBDATResetPipelined, TestBDATChunks, TestTruncatedBDAT
//	recipients: address tricks, limit                                TestBadEnvelope, TestErrorLimit
//	size, line length, empty or headerless messages, loops           TestBadMessage
//	AUTH parameter, EHLO names and echoed control characters         TestBadEnvelope, TestHelo, TestTLSGuards
//	errors: every refusal counts, 421 at MaxErrors, pipelined        TestErrorLimit, TestErrorLimitPipelined
//	connections, per IP, silent peers                                TestConnectionCaps, TestSessionLifetimeBeforeEHLO
//	timeouts, partial lines, slow drips, data rate, lifetime         TestReadTimeout, TestPartialLineAtEOF, TestSessionLifetime
//	floods within bounds                                             TestFloods
//	reply mapping: internal errors, policy text, CR LF injection     TestReply, TestReplyOnTheWire
//	STARTTLS injection                                               TestSTARTTLSInjection
//	arbitrary dialogues                                              FuzzSession (corpus in testdata/fuzz)
//
// Malformed header fields (8-bit, duplicates, oversize headers, MIME bombs) are
// judged by the domain layer, which answers through the Handler's error; smtpd only
// refuses what is no message at all (no header) and loops.

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestFloods sends thousands of commands in one stream. Each flood must end within
// its bound: refusals reach MaxErrors and the connection closes, go-smtp's own
// protocol-error limit closes it, or harmless commands are all answered. The Handler
// sees at most what the limits allow.
func TestFloods(t *testing.T) {
	const n = 10000
	repeat := func(s string) string { return strings.Repeat(s, n) }
	tx := "MAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\n"
	tests := []struct {
		name    string
		stream  string
		replies string // the codes, run-length: "10x250 19x452 421"
		offered int    // Recipient calls at most
	}{
		{"RCPT beyond MaxRecipients", "MAIL FROM:<a@b.test>\r\n" + repeat("RCPT TO:<security@ex.org>\r\n"),
			"250 10x250 19x452 421", DefaultMaxRecipients},
		{"refused recipients", "MAIL FROM:<a@b.test>\r\n" + repeat("RCPT TO:<victim@gmail.com>\r\n"),
			"250 19x550 421", DefaultMaxErrors},
		{"AUTH parameters", repeat("MAIL FROM:<a@b.test> AUTH=<>\r\n"), "19x555 421", 0},
		{"bare LF messages", repeat(tx + "DATA\r\nSubject: x\n\r\n.\r\n"),
			"19x(250 250 354 550) 250 250 354 421", DefaultMaxErrors},
		{"empty BDAT messages", repeat(tx + "BDAT 0 LAST\r\n"), "19x(250 250 554) 250 250 421", DefaultMaxErrors},
		// go-smtp closes after more than 3 protocol errors (its errThreshold).
		{"unknown commands", repeat("XYZZY\r\n"), "4x501 500", 0},
		{"aborted BDAT transfers", repeat(tx + "BDAT 3\r\nabcRSET\r\n")[:200*len(tx+"BDAT 3\r\nabcRSET\r\n")] + "QUIT\r\n",
			"200x(250 250 250 250) 221", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{accept: onlySecurity}
			_, addr := startServer(t, Options{}, rec)
			before := runtime.NumGoroutine()
			c := dialRaw(t, addr)
			c.greet()
			// Written in the background: the server may close before reading it all.
			go c.nc.Write([]byte(tc.stream))
			var codes []int
			for {
				r, err := c.tryRead()
				if err != nil {
					break
				}
				codes = append(codes, r.code)
			}
			c.nc.Close() // ends the server's lingering read at once
			if got, want := runLength(codes), expand(tc.replies); got != want {
				t.Errorf("replies = %s, want %s", got, want)
			}
			if got := len(rec.offered()); got > tc.offered {
				t.Errorf("Recipient called %d times, want at most %d", got, tc.offered)
			}
			if got := len(rec.delivered()); got != 0 {
				t.Errorf("Handle called %d times, want 0", got)
			}
			// No goroutine outlives the connection, aborted BDAT transfers included.
			waitFor(t, "the connection's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}

// runLength writes codes as "3x250 421".
func runLength(codes []int) string {
	var parts []string
	for i := 0; i < len(codes); {
		j := i
		for j < len(codes) && codes[j] == codes[i] {
			j++
		}
		if j-i == 1 {
			parts = append(parts, fmt.Sprint(codes[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%dx%d", j-i, codes[i]))
		}
		i = j
	}
	return strings.Join(parts, " ")
}

// expand turns "2x(250 354) 421" into the codes it stands for, written as runLength
// writes them.
func expand(s string) string {
	var codes []int
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		count := 1
		if i := strings.Index(s, "x"); i > 0 && !strings.ContainsAny(s[:i], " ()") {
			fmt.Sscan(s[:i], &count)
			s = s[i+1:]
		}
		var group string
		if strings.HasPrefix(s, "(") {
			end := strings.Index(s, ")")
			group, s = s[1:end], s[end+1:]
		} else {
			group, s, _ = strings.Cut(s, " ")
		}
		for range count {
			for _, f := range strings.Fields(group) {
				var c int
				fmt.Sscan(f, &c)
				codes = append(codes, c)
			}
		}
	}
	return runLength(codes)
}
