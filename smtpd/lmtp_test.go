package smtpd

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// startLMTP serves LMTP on a unix socket, as behind a local MTA.
func startLMTP(t *testing.T, h Handler) string {
	t.Helper()
	return startLMTPOpts(t, Options{MaxConnectionsPerIP: 1}, h)
}

// startLMTPOpts is startLMTP with opts (LMTP and Domain are set here).
func startLMTPOpts(t *testing.T, opts Options, h Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "lmtp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	opts.LMTP, opts.Domain = true, "mx.test"
	srv := New(opts, h, testLogger(t))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock
}

func dialLMTP(t *testing.T, sock string) *smtp.Client {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(nc)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLMTP(t *testing.T) {
	tests := []struct {
		name      string
		handleErr error
		code      int // per recipient; 250 for success
	}{
		{"stored", nil, 250},
		{"storage error", errors.New(secret), 451},
		{"policy refusal", refusal(550, "5.7.1", "plaintext refused"), 550},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{handleErr: tc.handleErr}
			sock := startLMTP(t, rec)
			c := dialLMTP(t, sock)
			rcpts := []string{"security@ex.org", "SECURITY@EX.ORG", "distributors@ex.org", "security@ex.org"}
			if err := c.Mail("a@b.test", nil); err != nil {
				t.Fatal(err)
			}
			for _, r := range rcpts {
				if err := c.Rcpt(r, nil); err != nil {
					t.Fatalf("Rcpt(%q) = %v", r, err)
				}
			}
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, simpleMsg)
			resp, err := w.CloseWithLMTPResponse()

			if tc.code == 250 {
				if err != nil {
					t.Fatalf("CloseWithLMTPResponse() = %v, want nil", err)
				}
				// go-smtp's client keys replies by address: the repeated
				// security@ex.org collapses, so 3 distinct keys for 4 replies read.
				if len(resp) != 3 {
					t.Errorf("got %d per-recipient 250s, want 3 distinct: %v", len(resp), resp)
				}
			} else {
				var lerr smtp.LMTPDataError
				if !errors.As(err, &lerr) {
					t.Fatalf("CloseWithLMTPResponse() = %v, want an LMTPDataError", err)
				}
				for rcpt, se := range lerr {
					if se.Code != tc.code || strings.Contains(se.Message, "bbolt") {
						t.Errorf("status for %s = %d %q, want %d without internal text", rcpt, se.Code, se.Message, tc.code)
					}
				}
				if len(lerr) != 3 {
					t.Errorf("got %d per-recipient errors, want 3 distinct", len(lerr))
				}
			}
			// The connection is still in step: one reply per RCPT was sent.
			if err := c.Noop(); err != nil {
				t.Errorf("Noop() after DATA = %v, want nil", err)
			}
			got := rec.delivered()
			if len(got) != 1 {
				t.Fatalf("Handle called %d times, want once", len(got))
			}
			if want := "security@ex.org SECURITY@ex.org distributors@ex.org"; strings.Join(got[0].env.To, " ") != want {
				t.Errorf("To = %q, want %q", got[0].env.To, want)
			}
		})
	}
}

// TestLMTPBDAT covers the BDAT path of LMTP, where go-smtp collects the statuses
// through the same StatusCollector.
func TestLMTPBDAT(t *testing.T) {
	rec := &recorder{}
	sock := startLMTP(t, rec)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := newRaw(t, nc)
	defer nc.Close()
	if r := c.read(); r.code != 220 {
		t.Fatalf("greeting = %v", r)
	}
	if r := c.cmd("LHLO mta.test"); r.code != 250 {
		t.Fatalf("LHLO = %v", r)
	}
	begin(t, c)
	if r := c.cmd("RCPT TO:<distributors@ex.org>"); r.code != 250 {
		t.Fatalf("RCPT = %v", r)
	}
	for i, r := range []response{bdat(c, simpleMsg), c.read()} {
		if r.code != 250 {
			t.Errorf("status %d = %v, want 250", i, r)
		}
	}
	if r := c.cmd("NOOP"); r.code != 250 || !strings.Contains(r.text, "nothing") {
		t.Errorf("NOOP = %v, want the NOOP reply", r)
	}
	if got := rec.delivered(); len(got) != 1 {
		t.Errorf("Handle called %d times, want 1", len(got))
	}
}

func TestLMTPRefusesHELO(t *testing.T) {
	sock := startLMTP(t, &recorder{})
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := newRaw(t, nc)
	c.read()
	if r := c.cmd("EHLO client.test"); r.code != 500 {
		t.Errorf("EHLO on LMTP = %v, want 500", r)
	}
}
