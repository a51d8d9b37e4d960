package smtpd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
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
// (CVE-2011-0411, threats.md B5). go-smtp discards its read buffer at the handshake;
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
