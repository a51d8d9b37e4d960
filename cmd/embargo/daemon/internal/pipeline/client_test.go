package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// shared is a message body with the lines dot-stuffing is about.
const shared = "Subject: advisory\r\nTo: <announce@example.org>\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"

func body(t *testing.T, s string) *Body {
	t.Helper()
	b, err := NewBody([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copies is n one-recipient transactions, each with its own header field.
// transportOnly is why the client's tests turn the recording relay's header
// rule off: their transactions are a bare List-Unsubscribe field over a
// shared body, bytes of the SMTP client's tests and not a message embargo
// composed.
const transportOnly = "pipeline client transport test: its bodies are test bytes, not a composed message"

func copies(b *Body, n int) []Txn {
	txns := make([]Txn, n)
	for i := range txns {
		txns[i] = Txn{From: "bounces@example.org", To: []string{fmt.Sprintf("sub%03d@example.net", i)},
			Header: fmt.Appendf(nil, "List-Unsubscribe: <https://example.org/u/%03d>\r\n", i), Body: b}
	}
	return txns
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantDelivered(t *testing.T, res []Result) {
	t.Helper()
	for i, r := range res {
		if !r.Done || r.Err != nil {
			t.Fatalf("result %d = %+v, want delivered", i, r)
		}
		for j, e := range r.Rcpt {
			if e != nil {
				t.Fatalf("result %d, recipient %d refused: %v", i, j, e)
			}
		}
	}
}

// TestPipelinedGroups: against a server that answers nothing before a
// group ends, every transaction goes through, so MAIL, RCPT and DATA went
// in one write; the content went with the next group (the server waited
// for the client only after the last one); dot-stuffing round-trips.
func TestPipelinedGroups(t *testing.T) {
	f := newFake(t, true, "SIZE 1000000", "8BITMIME")
	c := dial(t, f.config())
	if !c.Pipelining() {
		t.Fatal("PIPELINING not seen")
	}
	b := body(t, shared)
	res, err := c.Send(context.Background(), copies(b, 20))
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	msgs := f.messages()
	if len(msgs) != 20 {
		t.Fatalf("%d messages, want 20", len(msgs))
	}
	for i, m := range msgs {
		want := fmt.Sprintf("List-Unsubscribe: <https://example.org/u/%03d>\r\n", i) + shared
		if string(m.data) != want || m.to[0] != fmt.Sprintf("sub%03d@example.net", i) || m.from != "bounces@example.org" {
			t.Fatalf("message %d: from %q to %q data %q", i, m.from, m.to, m.data)
		}
	}
	if idle, _ := f.counts(); idle != 1 {
		t.Errorf("the client waited for %d end-of-data replies, want 1 (the last): content not grouped with the next MAIL", idle)
	}
	if cmd := f.commands()[1]; !strings.Contains(cmd, fmt.Sprintf("SIZE=%d", len("List-Unsubscribe: <https://example.org/u/000>\r\n")+len(shared))) {
		t.Errorf("MAIL = %q, want the SIZE of the message", cmd)
	}
	// The connection carries on; SendNotify tells of each answer in order.
	var told []int
	res, err = c.SendNotify(context.Background(), copies(b, 3), func(i int, r Result) {
		if r.Done && r.Err == nil {
			told = append(told, i)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	if fmt.Sprint(told) != "[0 1 2]" {
		t.Errorf("SendNotify told of %v, want [0 1 2]", told)
	}
	if _, n := f.counts(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestLockstep: without PIPELINING, every command waits for its reply
// (the fake records any that comes early).
func TestLockstep(t *testing.T) {
	f := newFake(t, false)
	c := dial(t, f.config())
	if c.Pipelining() {
		t.Fatal("PIPELINING seen where none was offered")
	}
	txns := copies(body(t, shared), 5)
	txns[2].To = append(txns[2].To, "second@example.net")
	res, err := c.Send(context.Background(), txns)
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	if msgs := f.messages(); len(msgs) != 5 || len(msgs[2].to) != 2 {
		t.Fatalf("messages = %+v", msgs)
	}
}

// TestRefusedRecipients: per-recipient refusals are kept with their code,
// the rest is delivered, and after a transaction that no recipient could
// take, RSET comes before the next MAIL (or the relay would say "nested
// MAIL"), pipelined or not.
func TestRefusedRecipients(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			f := newFake(t, pipelining)
			f.setAnswer(func(verb, line string) string {
				switch {
				case verb == "RCPT" && strings.Contains(line, "sub001@"):
					return "550 5.1.1 no such user"
				case verb == "RCPT" && strings.Contains(line, "sub002@"):
					return "450 4.2.1 try later"
				}
				return ""
			})
			c := dial(t, f.config())
			res, err := c.Send(context.Background(), copies(body(t, shared), 4))
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if !r.Done || r.Err != nil {
					t.Fatalf("result %d = %+v", i, r)
				}
			}
			var re *Reply
			if !errors.As(res[1].Rcpt[0], &re) || re.Code != 550 || !re.Permanent() || re.Stage != "RCPT TO" {
				t.Errorf("refused 550: %v", res[1].Rcpt[0])
			}
			if !errors.As(res[2].Rcpt[0], &re) || re.Code != 450 || !re.Temporary() || re.Permanent() {
				t.Errorf("refused 450: %v", res[2].Rcpt[0])
			}
			if res[0].Rcpt[0] != nil || res[3].Rcpt[0] != nil {
				t.Error("accepted recipients reported refused")
			}
			msgs := f.messages()
			if len(msgs) != 2 || msgs[0].to[0] != "sub000@example.net" || msgs[1].to[0] != "sub003@example.net" {
				t.Fatalf("delivered %+v", msgs)
			}
			if n := strings.Count(strings.Join(f.commands(), "\n"), "RSET"); n != 2 {
				t.Errorf("%d RSETs, want 2 (one after each transaction without a recipient)", n)
			}
		})
	}
}

// TestRefusalAtDataStops: a refusal of the whole transaction stops Send
// there; the transaction pipelined behind a refused end of data is
// completed first; the connection goes on working.
func TestRefusalAtDataStops(t *testing.T) {
	cases := []struct {
		name      string
		verb      string
		n         int // the nth such command is refused
		code      string
		wantDone  int
		wantStage string
	}{
		{"MAIL", "MAIL", 2, "451 4.3.0 busy", 2, "MAIL FROM"},
		{"DATA", "DATA", 2, "554 5.7.1 not now", 2, "DATA"},
		{"end of data", ".", 2, "552 5.3.4 too big", 3, "end of data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, true)
			n := 0
			f.setAnswer(func(verb, line string) string {
				if verb == tc.verb {
					if n++; n == tc.n {
						return tc.code
					}
				}
				return ""
			})
			c := dial(t, f.config())
			res, err := c.Send(context.Background(), copies(body(t, shared), 5))
			if err != nil {
				t.Fatal(err)
			}
			done := 0
			for _, r := range res {
				if r.Done {
					done++
				}
			}
			var re *Reply
			if done != tc.wantDone || !errors.As(res[1].Err, &re) || re.Stage != tc.wantStage || fmt.Sprint(re.Code) != tc.code[:3] {
				t.Fatalf("%d done, second = %+v", done, res[1])
			}
			if tc.wantDone == 3 && res[2].Err != nil {
				t.Errorf("the transaction behind the refused dot: %v", res[2].Err)
			}
			res, err = c.Send(context.Background(), copies(body(t, shared), 2))
			if err != nil {
				t.Fatal(err)
			}
			wantDelivered(t, res)
		})
	}
}

// TestConnectionLost: a relay that says 421 and hangs up: the
// transactions answered before are Done, the rest are not, Send fails and
// the client stays failed.
func TestConnectionLost(t *testing.T) {
	f := newFake(t, true)
	n := 0
	f.setAnswer(func(verb, _ string) string {
		if verb == "MAIL" {
			if n++; n == 3 {
				return "421 4.3.2 shutting down"
			}
		}
		return ""
	})
	c := dial(t, f.config())
	res, err := c.Send(context.Background(), copies(body(t, shared), 5))
	if err == nil {
		t.Fatal("Send over a closed connection succeeded")
	}
	if !res[0].Done || !res[1].Done || res[2].Done || res[4].Done {
		t.Errorf("done: %v %v %v %v %v", res[0].Done, res[1].Done, res[2].Done, res[3].Done, res[4].Done)
	}
	if _, err := c.Send(context.Background(), copies(body(t, shared), 1)); err == nil {
		t.Error("a broken client sent again")
	}
}

// TestTimeout: a relay that stops answering is given up after
// CommandTimeout, and a canceled context ends Send at once.
func TestTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("220 slow.test\r\n"))
				buf := make([]byte, 4096)
				n, _ := c.Read(buf) // EHLO
				if n > 0 {
					c.Write([]byte("250-slow.test\r\n250 PIPELINING\r\n"))
				}
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg := Config{Addr: ln.Addr().String(), CommandTimeout: 200 * time.Millisecond}
	c := dial(t, cfg)
	start := time.Now()
	if _, err := c.Send(context.Background(), copies(body(t, shared), 1)); err == nil {
		t.Fatal("no timeout")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("timed out after %v, want about 200 ms", el)
	}
	cfg.CommandTimeout = time.Minute
	c = dial(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := c.Send(ctx, copies(body(t, shared), 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send after cancel = %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("canceled after %v", el)
	}
}

// TestLocalRefusals: what cannot be sent faithfully never leaves, and the
// refusal is permanent.
func TestLocalRefusals(t *testing.T) {
	for _, bad := range []string{"a\nb\r\n", "a\rb\r\n", strings.Repeat("x", 999) + "\r\n"} {
		if _, err := NewBody([]byte(bad)); err == nil {
			t.Errorf("NewBody(%q) accepted", bad)
		}
	}
	if _, err := NewBody([]byte(strings.Repeat("x", 998) + "\r\n")); err != nil {
		t.Errorf("a 998-octet line refused: %v", err)
	}
	f := newFake(t, true)
	c := dial(t, f.config())
	b := body(t, shared)
	for _, txn := range []Txn{
		{From: "a@example.org", To: []string{"x y@example.net"}, Body: b},
		{From: "a@example.org", To: []string{"b@example.net>\r\nRCPT TO:<c@example.net"}, Body: b},
		{From: "a@example.org", To: []string{"bé@example.net"}, Body: b},
		{From: "a@example.org", To: []string{"b@example.net"}, Header: []byte("X: bare\n"), Body: b},
		{From: "a@example.org", To: []string{"b@example.net"}, Header: []byte("X: no end"), Body: b},
		{From: "a@example.org", To: []string{"b@example.net"}, Header: []byte("X: é\r\n"), Body: b}, // no 8BITMIME offered
		{From: "a@example.org", Body: b},
	} {
		res, err := c.Send(context.Background(), []Txn{txn})
		if err != nil {
			t.Fatal(err)
		}
		var p interface{ Permanent() bool }
		if !res[0].Done || !errors.As(res[0].Err, &p) || !p.Permanent() {
			t.Errorf("%+v: result %+v, want a permanent refusal", txn, res[0])
		}
	}
	if len(f.messages()) != 0 || len(f.commands()) != 1 { // EHLO only
		t.Errorf("sent %v", f.commands())
	}
}

// TestGoSMTPServer: go-smtp's server (the queue's recording relay), with
// its own pipelining and DSN: every copy arrives whole, refusals at RCPT
// and at the end of data are reported as go-smtp answers them, and
// 1,000 transactions go over one connection.
func TestGoSMTPServer(t *testing.T) {
	rec := queuetest.New(t, queuetest.Options{DSN: true})
	rec.Allow(transportOnly, queuetest.RuleHeader)
	cfg := Config{Addr: rec.Addr(), HeloName: "client.test"}
	c := dial(t, cfg)
	b := body(t, shared)
	txns := copies(b, 1000)
	rec.FailRcpt("sub007@example.net", 550)
	rec.FailRcpt("sub008@example.net", 452)
	res, err := c.Send(context.Background(), txns)
	if err != nil {
		t.Fatal(err)
	}
	var re *Reply
	if !errors.As(res[7].Rcpt[0], &re) || re.Code != 550 || !errors.As(res[8].Rcpt[0], &re) || re.Code != 452 {
		t.Errorf("refusals: %v, %v", res[7].Rcpt[0], res[8].Rcpt[0])
	}
	msgs := rec.Messages()
	if len(msgs) != 998 {
		t.Fatalf("%d messages, want 998", len(msgs))
	}
	for i, m := range msgs {
		if !bytes.HasSuffix(m.Data, []byte(shared)) || m.Return != "HDRS" || len(m.To) != 1 {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	rec.FailData(554)
	res, err = c.Send(context.Background(), txns[:3])
	if err != nil {
		t.Fatal(err)
	}
	if !errors.As(res[0].Err, &re) || re.Code != 554 || re.Stage != "end of data" || res[2].Done {
		t.Errorf("refused message: %+v", res)
	}
}

// TestStartTLSAndAuth: STARTTLS with a verified certificate, then AUTH
// PLAIN; a relay without STARTTLS is never used in clear; implicit TLS.
func TestStartTLSAndAuth(t *testing.T) {
	rec := queuetest.New(t, queuetest.Options{TLS: queuetest.StartTLS, Users: map[string]string{"u": "p"}})
	rec.Allow(transportOnly, queuetest.RuleHeader)
	cfg, err := ParseURL("smtp+starttls://u:p@" + rec.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RootCAs = rec.RootCAs()
	c := dial(t, cfg)
	res, err := c.Send(context.Background(), copies(body(t, shared), 2))
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	if m := rec.Messages(); len(m) != 2 || !m[0].TLS || m[0].User != "u" {
		t.Errorf("messages %+v", m)
	}

	cfg.Password = "wrong"
	if _, err := Dial(context.Background(), cfg); err == nil {
		t.Error("a wrong password was accepted")
	}
	plain := queuetest.New(t, queuetest.Options{})
	cfg, _ = ParseURL("smtp+starttls://" + plain.Addr())
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("Dial without STARTTLS offered = %v", err)
	}
	wrongName := queuetest.New(t, queuetest.Options{TLS: queuetest.StartTLS, CertHost: "other.test"})
	cfg, _ = ParseURL("smtp+starttls://" + wrongName.Addr())
	cfg.RootCAs = wrongName.RootCAs()
	if _, err := Dial(context.Background(), cfg); err == nil {
		t.Error("a certificate for another name was accepted")
	}
	implicit := queuetest.New(t, queuetest.Options{TLS: queuetest.ImplicitTLS})
	implicit.Allow(transportOnly, queuetest.RuleHeader)
	cfg, _ = ParseURL("smtps://" + implicit.Addr())
	cfg.RootCAs = implicit.RootCAs()
	c = dial(t, cfg)
	if res, err := c.Send(context.Background(), copies(body(t, shared), 1)); err != nil || !res[0].Done {
		t.Fatalf("smtps: %v %+v", err, res)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Config
		err  string
	}{
		{"smtp://127.0.0.1:2525", Config{Addr: "127.0.0.1:2525", ServerName: "127.0.0.1"}, ""},
		{"smtp://localhost", Config{Addr: "localhost:25", ServerName: "localhost"}, ""},
		{"smtp+starttls://u:p@relay.example.org", Config{Addr: "relay.example.org:587", ServerName: "relay.example.org", TLS: StartTLS, User: "u", Password: "p"}, ""},
		{"smtps://relay.example.org", Config{Addr: "relay.example.org:465", ServerName: "relay.example.org", TLS: ImplicitTLS}, ""},
		{"smtp://relay.example.org", Config{}, "loopback"},
		{"smtp://u:secret@127.0.0.1", Config{}, "credentials"},
		{"smtps://relay.example.org/x", Config{}, "path"},
		{"maildir:///var/mail", Config{}, "not an SMTP relay URL"},
	} {
		got, err := ParseURL(tc.url)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.url, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseURL(%q) error = %v, want one saying %q", tc.url, err, tc.err)
		case err != nil && strings.Contains(err.Error(), "secret"):
			t.Errorf("ParseURL(%q) error shows the password: %v", tc.url, err)
		}
	}
	if _, err := ParseURL("smtp://127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseURL("file:///x"); !errors.Is(err, ErrNotSMTP) {
		t.Errorf("ParseURL(file) = %v, want ErrNotSMTP", err)
	}
}

// TestReplyParsing: multi-line replies, bare codes, and what breaks the
// protocol.
func TestReplyParsing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		text string
		bad  bool
	}{
		{"250 ok\r\n", 250, "ok", false},
		{"250\r\n", 250, "", false},
		{"250-a\r\n250-b\r\n250 c\r\n", 250, "a b c", false},
		{"250-a\r\n251 b\r\n", 0, "", true},
		{"25 short\r\n", 0, "", true},
		{"250xok\r\n", 0, "", true},
		{"650 no\r\n", 0, "", true},
		{strings.Repeat("250-x\r\n", 101) + "250 y\r\n", 0, "", true},
		{"250 " + strings.Repeat("x", 5000) + "\r\n", 0, "", true},
	} {
		r, err := readReply(newReader(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("readReply(%.40q) = %+v, want an error", tc.in, r)
			}
			continue
		}
		if err != nil || r.code != tc.code || r.text() != tc.text {
			t.Errorf("readReply(%.40q) = %d %q, %v", tc.in, r.code, r.text(), err)
		}
	}
}

func newReader(s string) *bufio.Reader {
	return bufio.NewReaderSize(strings.NewReader(s), maxReplyLine)
}

// TestMakeHeader: a header made late is made once, in order, as its
// transaction begins, and is what the relay gets; failing to make it
// refuses that transaction for good.
func TestMakeHeader(t *testing.T) {
	f := newFake(t, true)
	c := dial(t, f.config())
	txns := copies(body(t, shared), 3)
	var made []int
	for i := range txns {
		txns[i].Header = nil
		txns[i].MakeHeader = func() ([]byte, error) {
			made = append(made, i)
			if i == 2 {
				return nil, errors.New("no key")
			}
			return fmt.Appendf(nil, "X-Copy: %d\r\n", i), nil
		}
	}
	res, err := c.Send(context.Background(), txns)
	if err != nil {
		t.Fatal(err)
	}
	var p interface{ Permanent() bool }
	if fmt.Sprint(made) != "[0 1 2]" || res[0].Err != nil || res[1].Err != nil || !errors.As(res[2].Err, &p) || !p.Permanent() {
		t.Fatalf("made %v, results %+v", made, res)
	}
	msgs := f.messages()
	if len(msgs) != 2 || !strings.HasPrefix(string(msgs[1].data), "X-Copy: 1\r\n") {
		t.Errorf("messages %q", msgs)
	}
}

// TestSMTPUTF8: a non-ASCII address goes out with SMTPUTF8 on MAIL when
// the relay offers it (RFC 6531 §3.4), an ASCII one without; without the
// extension, or when not UTF-8, it is refused for good (TestLocalRefusals).
func TestSMTPUTF8(t *testing.T) {
	f := newFake(t, true, "SMTPUTF8")
	c := dial(t, f.config())
	b := body(t, shared)
	res, err := c.Send(context.Background(), []Txn{
		{From: "a@example.org", To: []string{"jürgen@example.net"}, Body: b},
		{From: "a@example.org", To: []string{"b@example.net"}, Body: b},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	var mails []string
	for _, l := range f.commands() {
		if strings.HasPrefix(l, "MAIL") {
			mails = append(mails, l)
		}
	}
	if want := []string{"MAIL FROM:<a@example.org> SMTPUTF8", "MAIL FROM:<a@example.org>"}; fmt.Sprint(mails) != fmt.Sprint(want) {
		t.Errorf("MAIL commands %q, want %q", mails, want)
	}
	if m := f.messages(); len(m) != 2 || m[0].to[0] != "jürgen@example.net" {
		t.Errorf("messages %+v", m)
	}
	res, err = c.Send(context.Background(), []Txn{{From: "a@example.org", To: []string{"j\xffrgen@example.net"}, Body: b}})
	var p interface{ Permanent() bool }
	if err != nil || !errors.As(res[0].Err, &p) || !p.Permanent() {
		t.Errorf("an address that is not UTF-8: %+v, %v; want a permanent refusal", res[0], err)
	}
}

// TestBodyAsIs: the queue's bodies go as they are, long lines and 8-bit
// content to a relay without 8BITMIME included, bare line ends never.
func TestBodyAsIs(t *testing.T) {
	long := "Subject: x\r\n\r\n" + strings.Repeat("é", 600) + "\r\n.dot\r\n"
	b, err := NewBodyAsIs([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"a\nb\r\n", "a\rb\r\n"} {
		if _, err := NewBodyAsIs([]byte(bad)); !errors.Is(err, ErrBareLineEnd) {
			t.Errorf("NewBodyAsIs(%q) = %v, want ErrBareLineEnd", bad, err)
		}
	}
	f := newFake(t, true) // no 8BITMIME
	c := dial(t, f.config())
	res, err := c.Send(context.Background(), []Txn{{From: "a@example.org", To: []string{"b@example.net"}, Body: b}})
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	if m := f.messages(); len(m) != 1 || string(m[0].data) != long {
		t.Errorf("messages %+v", m)
	}
}

// TestCheckTextAndHas8Bit: the vectorised checks say what a byte-by-byte
// reading says, error position included, over every short text of CR, LF,
// 'x', '.' and an 8-bit octet, with a line limit of 2 and none.
func TestCheckTextAndHas8Bit(t *testing.T) {
	reference := func(b []byte, limit int) string {
		start := 0
		for i := 0; i < len(b); i++ {
			switch b[i] {
			case '\r':
				if i+1 == len(b) || b[i+1] != '\n' {
					return fmt.Sprint("bare ", i)
				}
				if limit >= 0 && i-start > limit {
					return fmt.Sprint("long ", start)
				}
				i++
				start = i + 1
			case '\n':
				return fmt.Sprint("bare ", i)
			}
		}
		if limit >= 0 && len(b)-start > limit {
			return fmt.Sprint("long ", start)
		}
		return "ok"
	}
	alphabet := []byte{'\r', '\n', 'x', '.', 0xe9}
	var texts [][]byte
	var grow func(prefix []byte)
	grow = func(prefix []byte) {
		texts = append(texts, prefix)
		if len(prefix) < 7 {
			for _, c := range alphabet {
				grow(append(prefix[:len(prefix):len(prefix)], c))
			}
		}
	}
	grow(nil)
	texts = append(texts, []byte(strings.Repeat("x", 20)+"\xe9"), []byte(strings.Repeat("x", 20)+"\r\n"))
	for _, text := range texts {
		for _, limit := range []int{2, -1} {
			got := "ok"
			if err := checkText(text, limit); errors.Is(err, ErrBareLineEnd) {
				got = "bare " + err.Error()[strings.LastIndexByte(err.Error(), ' ')+1:]
			} else if errors.Is(err, ErrLongLine) {
				got = "long " + err.Error()[strings.LastIndexByte(err.Error(), ' ')+1:]
			}
			if want := reference(text, limit); got != want {
				t.Fatalf("checkText(%q, %d): %s, want %s", text, limit, got, want)
			}
		}
		for _, b := range [][]byte{text, append(append([]byte("12345678"), text...), "12345678"...)} { // the word loop too
			if got, want := has8Bit(b), bytes.IndexFunc(b, func(r rune) bool { return r >= 0x80 }) >= 0; got != want {
				t.Fatalf("has8Bit(%q) = %v, want %v", b, got, want)
			}
		}
	}
}
