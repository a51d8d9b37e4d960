package smtpd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// benchMsg is a 1 KiB message with CRLF line ends.
var benchMsg = func() string {
	var b strings.Builder
	b.WriteString("From: a@b.test\r\nTo: security@ex.org\r\nSubject: bench\r\n\r\n")
	for b.Len() < 1024-2 {
		b.WriteString("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n")
	}
	return b.String()[:1022] + "\r\n"
}()

type discardHandler struct{}

func (discardHandler) Recipient(context.Context, string, string) error { return nil }
func (discardHandler) Handle(context.Context, Envelope, []byte) error  { return nil }

// benchSend sends b.N messages over one connection and reports msgs/s.
// bigMsg is a 1 MiB message of 72-byte lines, where smtpd's line-at-a-time reader
// (conn.Read) and its checks cost the most per byte.
var bigMsg = func() string {
	var b strings.Builder
	b.WriteString("From: a@b.test\r\nTo: security@ex.org\r\nSubject: bench\r\n\r\n")
	for b.Len() < 1<<20 {
		b.WriteString("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 01234\r\n")
	}
	return b.String()
}()

func benchSend(b *testing.B, addr string) { benchSendMsg(b, addr, benchMsg) }

func benchSendMsg(b *testing.B, addr, msg string) {
	c, err := smtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for range b.N {
		if err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAccept measures smtpd with a Handler that discards, through go-smtp's
// client on loopback. Compare with BenchmarkAcceptRawGoSMTP for smtpd's overhead.
func BenchmarkAccept(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Options{Domain: "mx.test"}, discardHandler{}, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	defer srv.Close()
	benchSend(b, l.Addr().String())
}

// BenchmarkAcceptLarge is BenchmarkAccept with 1 MiB messages; compare with
// BenchmarkAcceptLargeRawGoSMTP.
func BenchmarkAcceptLarge(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Options{Domain: "mx.test"}, discardHandler{}, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	defer srv.Close()
	benchSendMsg(b, l.Addr().String(), bigMsg)
}

// rawSession is the smallest go-smtp backend: it reads and discards.
type rawSession struct{}

func (rawSession) Reset()                               {}
func (rawSession) Logout() error                        { return nil }
func (rawSession) Mail(string, *smtp.MailOptions) error { return nil }
func (rawSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (rawSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// BenchmarkAcceptRawGoSMTP is the reference: go-smtp with the same limits and a
// backend that discards.
func BenchmarkAcceptRawGoSMTP(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return rawSession{}, nil }))
	s.Domain = "mx.test"
	s.MaxMessageBytes = DefaultMaxMessageBytes
	s.MaxRecipients = DefaultMaxRecipients
	s.ReadTimeout = DefaultReadTimeout
	s.WriteTimeout = DefaultWriteTimeout
	go s.Serve(l)
	defer s.Close()
	benchSend(b, l.Addr().String())
}

func BenchmarkAcceptLargeRawGoSMTP(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return rawSession{}, nil }))
	s.Domain = "mx.test"
	s.MaxMessageBytes = DefaultMaxMessageBytes
	s.ReadTimeout = DefaultReadTimeout
	s.WriteTimeout = DefaultWriteTimeout
	go s.Serve(l)
	defer s.Close()
	benchSendMsg(b, l.Addr().String(), bigMsg)
}
