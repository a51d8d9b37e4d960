package smtpd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// selfSigned returns a server config for mx.test and a client config trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test"},
		DNSNames:     []string{"mx.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	client = &tls.Config{RootCAs: pool, ServerName: "mx.test"}
	return server, client
}

// TestSTARTTLSInjection sends plaintext commands behind STARTTLS in one write
// (CVE-2011-0411, docs/threat-model.md B5). go-smtp discards its read buffer at the handshake;
// this test locks that in: the injected MAIL must not be in effect over TLS.
func TestSTARTTLSInjection(t *testing.T) {
	tests := []struct {
		name   string
		inject string
	}{
		{"MAIL", "MAIL FROM:<a@b.test>\r\n"},
		{"EHLO and MAIL", "EHLO evil.test\r\nMAIL FROM:<a@b.test>\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			serverCfg, clientCfg := selfSigned(t)
			rec := &recorder{}
			_, addr := startServer(t, Options{TLSConfig: serverCfg}, rec)
			c := dialRaw(t, addr)
			c.greet()
			c.send("STARTTLS\r\n" + tc.inject)
			if r := c.read(); r.code != 220 {
				t.Fatalf("STARTTLS = %v, want 220", r)
			}
			tlsConn := tls.Client(c.nc, clientCfg)
			if err := tlsConn.Handshake(); err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			c = newRaw(t, tlsConn)
			// The first reply over TLS must be the one to this RCPT, and it must find
			// no transaction: go-smtp answers 502 5.5.1 (RFC 5321 §4.2.2 would say 503).
			r := c.cmd("RCPT TO:<security@ex.org>")
			if r.code != 502 || r.enhanced != "5.5.1" {
				t.Fatalf("RCPT after STARTTLS = %v, want 502 5.5.1 (the injected command was run)", r)
			}
			if got := rec.offered(); len(got) != 0 {
				t.Errorf("Recipient called with %q", got)
			}
		})
	}
}

// TestSTARTTLSDelivery sends a message over STARTTLS with go-smtp's client: the session
// is recreated after the handshake and keeps the connection's ID.
func TestSTARTTLSDelivery(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	rec := &recorder{}
	_, addr := startServer(t, Options{TLSConfig: serverCfg}, rec)
	c, err := smtp.DialStartTLS(addr, clientCfg)
	if err != nil {
		t.Fatalf("DialStartTLS: %v", err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised again over TLS")
	}
	if err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, simpleMsg); err != nil {
		t.Fatalf("sendMessage over TLS = %v", err)
	}
	if got := rec.delivered(); len(got) != 1 || got[0].env.Helo != "client.test" {
		t.Fatalf("deliveries = %+v, want one with Helo client.test", got)
	}
}

// dialTLS connects, greets, starts TLS and greets again over it.
func dialTLS(t *testing.T, addr string, clientCfg *tls.Config) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	c.greet()
	if r := c.cmd("STARTTLS"); r.code != 220 {
		t.Fatalf("STARTTLS = %v, want 220", r)
	}
	tc := tls.Client(c.nc, clientCfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c = newRaw(t, tc)
	if r := c.cmd("EHLO client.test"); r.code != 250 {
		t.Fatalf("EHLO over TLS = %v, want 250", r)
	}
	return c
}

// TestSmugglingOverTLS: after STARTTLS conn sees ciphertext, and go-smtp's DATA reader
// drops "." and the CR of "CRLF . CR x" unseen. The message is still exactly one, ended
// only by CRLF.CRLF, and the "smuggled" transaction is text in its body: nothing runs.
// BDAT has no dot-stuffing, and every other variant keeps its bare CR or LF, so they
// are refused over TLS as in plain text.
func TestSmugglingOverTLS(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	for _, v := range smugglingVariants {
		for _, mode := range []string{"DATA", "BDAT"} {
			t.Run(mode+" "+v.name, func(t *testing.T) {
				rec := &recorder{}
				_, addr := startServer(t, Options{TLSConfig: serverCfg}, rec)
				c := dialTLS(t, addr, clientCfg)
				begin(t, c)
				payload := smuggleFirst + v.eod + smuggled
				want, stored := v.bdatCode, payload
				var r response
				if mode == "DATA" {
					want, stored = v.dataCode, v.stored
					if v.eod == "\r\n.\r" || v.eod == "\r\n.\r\r\n" {
						want, stored = 250, smuggleFirst+"\r\n"+v.eod[len("\r\n.\r"):]+smuggledBody
					}
					r = data(t, c, payload[:len(payload)-len(".\r\n")])
				} else {
					r = bdat(c, payload)
				}
				if r.code != want {
					t.Errorf("reply to the message = %v, want %d", r, want)
				}
				if r := c.cmd("RCPT TO:<security@ex.org>"); r.code != 502 {
					t.Errorf("RCPT after the message = %v, want 502 (no transaction)", r)
				}
				got := rec.delivered()
				if len(got) != map[bool]int{true: 1, false: 0}[want == 250] {
					t.Fatalf("Handle called %d times, want 1 exactly when 250", len(got))
				}
				if len(got) == 1 && string(got[0].msg) != stored {
					t.Errorf("Handler got %q, want exactly %q", got[0].msg, stored)
				}
			})
		}
	}
}

// TestTLSGuards: the guards that do not depend on seeing plain text hold over TLS.
func TestTLSGuards(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	t.Run("NUL in a repeated EHLO", func(t *testing.T) {
		_, addr := startServer(t, Options{TLSConfig: serverCfg}, &recorder{})
		c := dialTLS(t, addr, clientCfg)
		c.send("EHLO a\x00b.test\r\n")
		line, err := c.tp.ReadLine()
		if err != nil || line != replyLine(errBadHeloClosing)[:len(line)] || strings.ContainsRune(line, 0) {
			t.Errorf("reply = %q, %v, want %q", line, err, replyLine(errBadHeloClosing))
		}
		if !c.closed() {
			t.Error("connection open after the 421")
		}
	})
	t.Run("partial RCPT at the timeout", func(t *testing.T) {
		rec := &recorder{}
		_, addr := startServer(t, Options{TLSConfig: serverCfg, ReadTimeout: 300 * time.Millisecond}, rec)
		c := dialTLS(t, addr, clientCfg)
		c.cmd("MAIL FROM:<a@b.test>")
		start := time.Now()
		c.send("RCPT TO:<security@ex.org>")
		// Through TLS go-smtp's own reply to the partial line gets out (conn.Write
		// cannot replace ciphertext), but the session refuses it, and the connection
		// closes at the timeout.
		r := c.read()
		if r.code != 421 {
			t.Errorf("reply = %v, want 421", r)
		}
		if !c.closed() {
			t.Error("connection open after the timeout")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("closed after %v, want about 300ms", took)
		}
		if got := rec.offered(); len(got) != 0 {
			t.Errorf("Recipient called with %q, want nothing", got)
		}
	})
}
