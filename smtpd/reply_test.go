package smtpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const secret = "bbolt: secret detail\r\n250 2.0.0 OK"

func TestReply(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     int
		enhanced smtp.EnhancedCode
		text     string // exact text; "" to skip
		internal bool   // generic text with the session ID
	}{
		{name: "storage error", err: errors.New(secret), code: 451, enhanced: smtp.EnhancedCode{4, 3, 0}, internal: true},
		{name: "wrapped storage error", err: fmt.Errorf("store: %w", errors.New(secret)), code: 451, enhanced: smtp.EnhancedCode{4, 3, 0}, internal: true},
		{name: "deadline", err: fmt.Errorf("commit: %w", context.DeadlineExceeded), code: 451, enhanced: smtp.EnhancedCode{4, 4, 5}, internal: true},
		{name: "canceled", err: context.Canceled, code: 451, enhanced: smtp.EnhancedCode{4, 3, 0}, internal: true},
		{name: "policy refusal", err: refusal(550, "5.7.1", "announce@ex.org is output-only"), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: "announce@ex.org is output-only"},
		{name: "wrapped policy refusal uses its own text", err: fmt.Errorf("lists: post %s: %w", secret, refusal(550, "5.7.1", "not a member")), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: "not a member"},
		{name: "temporary policy refusal", err: refusal(452, "4.3.1", "Insufficient system storage"), code: 452, enhanced: smtp.EnhancedCode{4, 3, 1}, text: "Insufficient system storage"},
		{name: "policy text with CR LF", err: refusal(550, "5.7.1", "no\r\n250 2.0.0 OK"), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: "no 250 2.0.0 OK"},
		{name: "policy text with controls and non-ASCII", err: refusal(550, "5.7.1", "a\x00b\x1b[31m\u202ec\u00e9"), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: "a b [31m?c?"},
		{name: "policy text empty", err: refusal(550, "5.7.1", "\r\n"), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: "Refused"},
		{name: "policy enhanced code of another class", err: refusal(550, "4.1.1", "x"), code: 550, enhanced: smtp.EnhancedCodeNotSet, text: "x"},
		{name: "policy enhanced code malformed", err: refusal(550, "5.1", "x"), code: 550, enhanced: smtp.EnhancedCodeNotSet, text: "x"},
		{name: "policy code 250 is no refusal", err: refusal(250, "2.0.0", secret), code: 451, enhanced: smtp.EnhancedCode{4, 3, 0}, internal: true},
		{name: "policy code 354 is no refusal", err: refusal(354, "", secret), code: 451, enhanced: smtp.EnhancedCode{4, 3, 0}, internal: true},
		{name: "go-smtp too large", err: smtp.ErrDataTooLarge, code: 552, enhanced: smtp.EnhancedCode{5, 3, 4}},
		{name: "go-smtp SMTPError wrapped", err: fmt.Errorf("x: %w", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad\nMIME"}), code: 554, enhanced: smtp.EnhancedCode{5, 6, 0}, text: "bad MIME"},
		{name: "own condition", err: fmt.Errorf("x: %w", errBareLineEnd), code: 550, enhanced: smtp.EnhancedCode{5, 5, 2}, text: errBareLineEnd.text},
		{name: "long policy text is capped", err: refusal(550, "5.7.1", strings.Repeat("x", 2000)), code: 550, enhanced: smtp.EnhancedCode{5, 7, 1}, text: strings.Repeat("x", maxReplyText)},
	}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := reply(log, "abc123", tc.err)
			if r == nil {
				t.Fatalf("reply(%v) = nil", tc.err)
			}
			if r.Code != tc.code || r.EnhancedCode != tc.enhanced {
				t.Errorf("reply(%q) = %d %v, want %d %v", tc.err, r.Code, r.EnhancedCode, tc.code, tc.enhanced)
			}
			if tc.text != "" && r.Message != tc.text {
				t.Errorf("reply(%q) text = %q, want %q", tc.err, r.Message, tc.text)
			}
			if tc.internal && r.Message != "Temporary local problem, please try again later (ref abc123)" {
				t.Errorf("reply(%q) text = %q, want the generic text", tc.err, r.Message)
			}
			if strings.ContainsAny(r.Message, "\r\n") || strings.Contains(r.Message, "secret") || strings.Contains(r.Message, "bbolt") {
				t.Errorf("reply(%q) text = %q leaks or breaks lines", tc.err, r.Message)
			}
		})
	}
	if r := reply(log, "x", nil); r != nil {
		t.Errorf("reply(nil) = %v, want nil", r)
	}
}

// TestReplyOnTheWire proves that the client reads exactly one reply, with no internal
// text, whatever the Handler returns (docs/threat-model.md A1, B4).
func TestReplyOnTheWire(t *testing.T) {
	tests := []struct {
		name       string
		rcptErr    error
		handleErr  error
		opts       Options
		delay      time.Duration
		code       int
		enhanced   string
		wantInText string
	}{
		{name: "storage error at DATA", handleErr: errors.New(secret), code: 451, enhanced: "4.3.0", wantInText: "ref "},
		{name: "storage error at RCPT", rcptErr: errors.New(secret), code: 451, enhanced: "4.3.0", wantInText: "ref "},
		{name: "policy refusal at DATA", handleErr: refusal(550, "5.7.1", "plaintext is not accepted here"), code: 550, enhanced: "5.7.1", wantInText: "plaintext is not accepted here"},
		{name: "policy refusal at RCPT", rcptErr: refusal(550, "5.7.1", "announce@ex.org is output-only"), code: 550, enhanced: "5.7.1", wantInText: "output-only"},
		{name: "policy text with CR LF at DATA", handleErr: refusal(550, "5.7.1", "refused\r\n250 2.0.0 OK"), code: 550, enhanced: "5.7.1", wantInText: "refused"},
		{name: "policy text with CR LF at RCPT", rcptErr: refusal(550, "5.1.1", "refused\r\n250 2.0.0 OK"), code: 550, enhanced: "5.1.1", wantInText: "refused"},
		// Header limits and malformed headers are the domain layer's: its refusal
		// reaches the client with its code and sentence.
		{name: "oversize header refused by the handler", handleErr: refusal(552, "5.3.4", "Header too large: at most 100 KiB"), code: 552, enhanced: "5.3.4", wantInText: "Header too large"},
		{name: "malformed header refused by the handler", handleErr: refusal(554, "5.6.0", "Duplicate From field; send one From"), code: 554, enhanced: "5.6.0", wantInText: "Duplicate From"},
		{name: "handler deadline", opts: Options{WriteTimeout: 100 * time.Millisecond}, delay: 5 * time.Second, code: 451, enhanced: "4.4.5", wantInText: "ref "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{handleErr: tc.handleErr, handleDelay: tc.delay}
			if tc.rcptErr != nil {
				rec.accept = func(string) error { return tc.rcptErr }
			}
			_, addr := startServer(t, tc.opts, rec)
			c := dialRaw(t, addr)
			c.greet()
			if r := c.cmd("MAIL FROM:<a@b.test>"); r.code != 250 {
				t.Fatalf("MAIL = %v", r)
			}
			var r response
			if tc.rcptErr != nil {
				r = c.cmd("RCPT TO:<security@ex.org>")
			} else {
				if r := c.cmd("RCPT TO:<security@ex.org>"); r.code != 250 {
					t.Fatalf("RCPT = %v", r)
				}
				r = data(t, c, simpleMsg)
			}
			if r.code != tc.code || r.enhanced != tc.enhanced {
				t.Errorf("reply = %v, want %d %s", r, tc.code, tc.enhanced)
			}
			if !strings.Contains(r.text, tc.wantInText) || strings.Contains(r.text, "bbolt") || strings.Contains(r.text, "secret") {
				t.Errorf("reply text = %q, want it to contain %q and no internal detail", r.text, tc.wantInText)
			}
			// Exactly one reply: the next one read belongs to NOOP, not a forged 250.
			if r := c.cmd("NOOP"); r.code != 250 || !strings.Contains(r.text, "nothing") {
				t.Errorf("reply after NOOP = %v, want go-smtp's NOOP reply (a second reply was sent before)", r)
			}
		})
	}
}

// TestReplyWithGoSMTPClient checks the codes as go-smtp's client sees them.
func TestReplyWithGoSMTPClient(t *testing.T) {
	rec := &recorder{handleErr: errors.New(secret)}
	_, addr := startServer(t, Options{}, rec)
	c := dialClient(t, addr)
	err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, simpleMsg)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) || !se.Temporary() {
		t.Fatalf("sendMessage() = %v, want a temporary 451 4.3.0", err)
	}
	if strings.Contains(se.Message, "bbolt") {
		t.Errorf("reply text %q leaks the internal error", se.Message)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("Noop() after the refusal = %v, want nil", err)
	}
}
