package smtpd

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestInsufficientStorage: with FreeSpace set, MAIL is refused with 452 4.3.1
// when fewer than MinFreeBytes are free or fewer than 1.5 × the SIZE= the
// client announced (Postfix's queue_minfree rule), and accepted otherwise; an
// error from FreeSpace accepts (fails open). The refused transaction never
// reaches the Handler.
func TestInsufficientStorage(t *testing.T) {
	const reserve = 1 << 20
	tests := []struct {
		name string
		free uint64
		err  error
		mail string
		code int
	}{
		{"plenty", 100 << 20, nil, "MAIL FROM:<a@b.test>", 250},
		{"exactly the reserve", reserve, nil, "MAIL FROM:<a@b.test>", 250},
		{"below the reserve", reserve - 1, nil, "MAIL FROM:<a@b.test>", 452},
		{"null sender below the reserve", 0, nil, "MAIL FROM:<>", 452},
		{"SIZE fits 1.5 times", 3 << 20, nil, "MAIL FROM:<a@b.test> SIZE=2097152", 250},
		{"SIZE needs 1.5 times", 3<<20 - 1, nil, "MAIL FROM:<a@b.test> SIZE=2097152", 452},
		{"SIZE small, reserve rules", reserve - 1, nil, "MAIL FROM:<a@b.test> SIZE=10", 452},
		{"free space unknown", 0, errors.New("statfs: input/output error"), "MAIL FROM:<a@b.test> SIZE=2097152", 250},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			rec := &recorder{}
			_, addr := startServer(t, Options{
				MinFreeBytes: reserve,
				FreeSpace: func() (uint64, error) {
					calls.Add(1)
					return tc.free, tc.err
				},
			}, rec)
			c := dialRaw(t, addr)
			c.greet()
			r := c.cmd(tc.mail)
			if calls.Load() != 1 {
				t.Errorf("FreeSpace called %d times at one MAIL, want 1", calls.Load())
			}
			if tc.code == 452 {
				if r.code != 452 || r.enhanced != "4.3.1" || !strings.Contains(r.text, "Insufficient system storage") {
					t.Fatalf("MAIL = %v, want 452 4.3.1 Insufficient system storage", r)
				}
				// No transaction: RCPT is out of sequence (go-smtp answers 502).
				if r := c.cmd("RCPT TO:<security@ex.org>"); r.code/100 != 5 {
					t.Fatalf("RCPT after the refused MAIL = %v, want 5xx", r)
				}
				if len(rec.offered()) != 0 {
					t.Fatalf("Handler saw recipients %v after a refused MAIL", rec.offered())
				}
				return
			}
			if r.code != 250 {
				t.Fatalf("MAIL = %v, want 250", r)
			}
			if r := c.cmd("RCPT TO:<security@ex.org>"); r.code != 250 {
				t.Fatalf("RCPT = %v", r)
			}
			if r := data(t, c, simpleMsg); r.code != 250 {
				t.Fatalf("DATA = %v", r)
			}
		})
	}
}

// TestInsufficientStorageLMTP: the check applies over LMTP too, and a
// negative MinFreeBytes leaves only the SIZE= rule.
func TestInsufficientStorageLMTP(t *testing.T) {
	free := uint64(0)
	sock := startLMTPOpts(t, Options{MinFreeBytes: -1, FreeSpace: func() (uint64, error) { return free, nil }}, &recorder{})
	c := dialLMTP(t, sock)
	if err := c.Mail("a@b.test", nil); err != nil {
		t.Fatalf("MAIL without SIZE and no reserve: %v", err)
	}
	c.Reset()
	code, enh := smtpCode(c.Mail("a@b.test", &smtp.MailOptions{Size: 1}))
	if code != 452 || enh != "4.3.1" {
		t.Fatalf("MAIL SIZE=1 with nothing free = %d %s, want 452 4.3.1", code, enh)
	}
}
