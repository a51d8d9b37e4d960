package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// writeCert writes a self-signed certificate for mx.ex.test with the given
// serial number, and its key (mode 0600), and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("mx.ex.test #%d", serial)},
		DNSNames:     []string{"mx.ex.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	daemontest.WriteFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	daemontest.WriteFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// starttlsSerial connects with STARTTLS, trusting roots, sends one report and
// returns the serial number of the certificate the server showed.
func starttlsSerial(addr string, roots *x509.CertPool) (int64, error) {
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: roots, ServerName: "mx.ex.test"})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	// go-smtp greets (and so runs STARTTLS) at the first command.
	if err := c.Hello("client.test"); err != nil {
		return 0, err
	}
	state, ok := c.TLSConnectionState()
	if !ok || len(state.PeerCertificates) == 0 {
		return 0, errors.New("no TLS after STARTTLS")
	}
	msg := strings.ReplaceAll(daemontest.Report("tls@example.net", "over tls", "steps"), "\n", "\r\n")
	if err := c.SendMail("tls@example.net", []string{"security@ex.test"}, strings.NewReader(msg)); err != nil {
		return 0, err
	}
	return state.PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestSTARTTLSReload runs the real process with a self-signed certificate,
// delivers over STARTTLS, replaces the certificate files and sends SIGHUP: new
// connections get the new certificate. A broken replacement is refused and
// the old certificate stays.
func TestSTARTTLSReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
	c1 := writeCert(t, certFile, keyFile, 1)
	addr := daemontest.FreePort(t)
	cfgPath := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfgPath, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n%s[smtp]\nlisten = %q\ntls_cert = %q\ntls_key = %q\n[relay]\nurl = \"maildir://%s\"\n",
		filepath.Join(dir, "data"), daemontest.DefaultMembers, addr, certFile, keyFile, filepath.Join(dir, "outbox")))
	daemontest.MustContain(t, "check", mustCLI(t, "check", "--config", cfgPath), "tls: STARTTLS with mx.ex.test #1")

	cmd, out := embargoProcess(t, dir, "serve", "--config", cfgPath)
	waitPort(t, addr, out)
	roots := x509.NewCertPool()
	roots.AddCert(c1)
	if serial, err := starttlsSerial(addr, roots); err != nil || serial != 1 {
		t.Fatalf("STARTTLS before reload: serial %d, %v; want 1\n%s", serial, err, out.String())
	}

	c2 := writeCert(t, certFile, keyFile, 2)
	roots.AddCert(c2)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitFor(t, "the new certificate after SIGHUP", func() bool {
		serial, err := starttlsSerial(addr, roots)
		return err == nil && serial == 2
	})
	daemontest.MustContain(t, "log", out.String(), "SIGHUP: reloading", "reload: certificate loaded", "mx.ex.test #2")

	// A broken certificate file: the reload fails and serial 2 stays.
	daemontest.WriteFile(t, certFile, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
	cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the failed reload in the log", func() bool {
		return strings.Contains(out.String(), "reload: keeping the current certificate")
	})
	if serial, err := starttlsSerial(addr, roots); err != nil || serial != 2 {
		t.Errorf("after a failed reload: serial %d, %v; want 2", serial, err)
	}
	files := waitFiles(t, filepath.Join(dir, "outbox", "new"), 1, 5*time.Second)
	if len(files) == 0 {
		t.Error("nothing delivered over STARTTLS")
	}
}

// TestTLSConfigErrors: a half TLS configuration and unusable files are
// refused by check, with the key named.
func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 7)
	base := "domain = \"ex.test\"\ndata_dir = \"" + dir + "\"\n[smtp]\nlisten = \"127.0.0.1:2525\"\n"
	for _, tc := range []struct{ name, smtp, want string }{
		{"cert only", "tls_cert = \"" + certFile + "\"\n", "smtp.tls_cert and smtp.tls_key go together"},
		{"missing key", "tls_cert = \"" + certFile + "\"\ntls_key = \"" + dir + "/nope.pem\"\n", "smtp.tls_key"},
		{"swapped", "tls_cert = \"" + keyFile + "\"\ntls_key = \"" + certFile + "\"\n", "smtp.tls_cert/tls_key"},
	} {
		p := filepath.Join(dir, "c.toml")
		daemontest.WriteFile(t, p, base+tc.smtp)
		code, _, errOut := runCLI(t, "check", "--config", p)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: check exit %d, %q; want 1 and %q", tc.name, code, errOut, tc.want)
		}
	}
	os.Chmod(keyFile, 0o644)
	p := filepath.Join(dir, "c.toml")
	daemontest.WriteFile(t, p, base+"tls_cert = \""+certFile+"\"\ntls_key = \""+keyFile+"\"\n")
	if code, _, errOut := runCLI(t, "check", "--config", p); code != 1 || !strings.Contains(errOut, "readable by others") {
		t.Errorf("world-readable key: check exit %d, %q", code, errOut)
	}
}

// TestLMTPEndToEnd delivers a report over LMTP on a unix socket, as Postfix
// does, and checks the per-recipient replies and what the committee gets.
func TestLMTPEndToEnd(t *testing.T) {
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "lmtp.sock")
	// A socket left behind by a killed daemon is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	h := daemontest.New(t, daemontest.Config{Extra: fmt.Sprintf("\n[lmtp]\nlisten = \"unix:%s\"\n", sock)}, daemon.Options{Commands: storeCommands()})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != daemon.LMTPSocketMode {
		t.Fatalf("socket: %v, mode %v; want %v", err, fi.Mode().Perm(), daemon.LMTPSocketMode)
	}
	daemontest.MustContain(t, "log", h.Logs.String(), "lmtp listening", "unix://"+sock)

	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(nc)
	defer c.Close()
	if err := c.Hello("mx.ex.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("reporter@example.net", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("stranger@ex.test", nil); err == nil {
		t.Error("RCPT stranger@ex.test over LMTP accepted")
	} else if n, _ := daemontest.Code(err); n != 550 {
		t.Errorf("RCPT stranger@ex.test = %v, want 550", err)
	}
	for _, r := range []string{"security@ex.test", "SECURITY@ex.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s = %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, strings.ReplaceAll(daemontest.Report("reporter@example.net", "over lmtp", "CANARY-lmtp"), "\n", "\r\n"))
	statuses, err := w.CloseWithLMTPResponse()
	if err != nil {
		t.Fatalf("LMTP DATA = %v", err)
	}
	if len(statuses) != 2 {
		t.Errorf("got %d per-recipient replies, want 2: %v", len(statuses), statuses)
	}
	c.Quit()
	msgs := h.Settle(3) // the acknowledgement and two committee copies: one incident
	daemontest.MustContain(t, "alice's copy", string(daemontest.To(msgs, "alice@ex.test")[0].Data), "CANARY-lmtp")

	h.Stop()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after stop: %v, want it removed", err)
	}
	// Something else at the path is never removed.
	daemontest.WriteFile(t, sock, "not a socket")
	cfg := h.Config()
	if err := daemontest.StartErr(t, cfg, h.Opts); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("start with a file at the socket path = %v, want a refusal", err)
	}
}

// dkimTXT extracts the DKIM record embargo check prints, joining its strings.
func dkimTXT(t *testing.T, checkOut, name string) string {
	t.Helper()
	i := strings.Index(checkOut, name+".\tIN TXT ")
	if i < 0 {
		t.Fatalf("check does not print a TXT record for %s:\n%s", name, checkOut)
	}
	rest := checkOut[i:]
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		rest = rest[:j]
	}
	var b strings.Builder
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(rest, -1) {
		b.WriteString(m[1])
	}
	return b.String()
}

// TestDKIMSignedEndToEnd: with [dkim], every outbound message carries a
// signature that go-msgauth's verifier accepts against the public key embargo
// check prints; the key was generated at the first start with mode 0600.
func TestDKIMSignedEndToEnd(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "\n[dkim]\nselector = \"embargo\"\n"}, daemon.Options{Commands: storeCommands()})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "signed", "steps"))
	msgs := h.Settle(3)
	fi, err := os.Stat(filepath.Join(h.Dir, "keys", "dkim.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dkim key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	daemontest.MustContain(t, "log", h.Logs.String(), "dkim key generated", "dkim signing on")

	check := mustCLI(t, "check", "--config", h.ConfigFile())
	record := dkimTXT(t, check, "embargo._domainkey.ex.test")
	if !strings.HasPrefix(record, "v=DKIM1; k=rsa; p=") {
		t.Fatalf("DKIM record = %q", record)
	}
	lookup := func(domain string) ([]string, error) {
		if domain != "embargo._domainkey.ex.test" {
			return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
		}
		return []string{record}, nil
	}
	for _, m := range msgs {
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 {
			t.Fatalf("verify message to %v: %v, %d signatures", m.To, err, len(vs))
		}
		if vs[0].Err != nil || vs[0].Domain != "ex.test" {
			t.Errorf("message to %v: %v (d=%s), want a pass for ex.test", m.To, vs[0].Err, vs[0].Domain)
		}
		// From is oversigned: a From added above ours breaks the signature.
		forged := append([]byte("From: ceo@ex.test\r\n"), m.Data...)
		if vs, _ := dkim.VerifyWithOptions(bytes.NewReader(forged), &dkim.VerifyOptions{LookupTXT: lookup}); len(vs) == 1 && vs[0].Err == nil {
			t.Errorf("message to %v still verifies with a second From", m.To)
		}
	}

	// A key readable by others, or a missing explicit key_file, is refused.
	keyPath := filepath.Join(h.Dir, "keys", "dkim.key")
	h.Stop()
	os.Chmod(keyPath, 0o640)
	if err := daemontest.StartErr(t, h.Config(), h.Opts); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("start with a group-readable DKIM key = %v, want a refusal", err)
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	daemontest.WriteFile(t, p, "domain = \"ex.test\"\n[dkim]\nselector = \"embargo\"\nkey_file = \"/nonexistent/dkim.key\"\n")
	if code, _, errOut := runCLI(t, "check", "--config", p); code != 1 || !strings.Contains(errOut, "dkim key") {
		t.Errorf("check with a missing key_file: exit %d, %q", code, errOut)
	}
}
