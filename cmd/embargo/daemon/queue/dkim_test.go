package queue

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// dkimMsg looks like what listd renders: CRLF, a full header, a QP body.
const dkimMsg = "From: \"Alice via security\" <security@ex.test>\r\n" +
	"To: bob@ex.test\r\n" +
	"Subject: [SEC-2026-0001] heap overflow\r\n" +
	"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n" +
	"Message-ID: <1.2@ex.test>\r\n" +
	"List-Id: <security.ex.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Confirmed on main.\r\n"

// dkimLookup serves one key record, as a resolver would.
func dkimLookup(t *testing.T, name, record string) func(string) ([]string, error) {
	return func(domain string) ([]string, error) {
		if domain != name {
			t.Errorf("LookupTXT(%q), want %q", domain, name)
			return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
		}
		return []string{record}, nil
	}
}

func verifyDKIM(t *testing.T, msg []byte, lookup func(string) ([]string, error)) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("dkim.Verify: %v", err)
	}
	return vs
}

func TestDKIMRelay(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edPub := edKey.Public().(ed25519.PublicKey)
	tests := []struct {
		name   string
		opts   DKIMOptions
		record string
	}{
		{"rsa-2048", DKIMOptions{Domain: "ex.test", Selector: "embargo", Signer: rsaKey}, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(rsaPub)},
		{"ed25519", DKIMOptions{Domain: "ex.test", Selector: "ed", Signer: edKey}, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			next := relayFunc(func(_ context.Context, from string, to []string, data []byte) error {
				got = data
				return nil
			})
			r, err := NewDKIMRelay(next, tc.opts)
			if err != nil {
				t.Fatalf("NewDKIMRelay: %v", err)
			}
			if err := r.Send(t.Context(), "", []string{"bob@ex.test"}, []byte(dkimMsg)); err != nil {
				t.Fatalf("Send = %v", err)
			}
			if !bytes.HasPrefix(got, []byte("DKIM-Signature:")) || !bytes.HasSuffix(got, []byte(dkimMsg)) {
				t.Fatalf("relayed message is not the signature followed by the message:\n%s", got)
			}
			if err := checkData(got); err != nil {
				t.Errorf("signed message: %v", err)
			}
			lookup := dkimLookup(t, tc.opts.Selector+"._domainkey.ex.test", tc.record)
			vs := verifyDKIM(t, got, lookup)
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "ex.test" {
				t.Fatalf("verification = %+v, want one pass for ex.test", vs[0])
			}
			sig := string(got[:bytes.Index(got, []byte("\r\nFrom:"))])
			for _, want := range []string{"c=relaxed/relaxed", "d=ex.test", "s=" + tc.opts.Selector} {
				if !strings.Contains(strings.Join(strings.Fields(sig), ""), strings.ReplaceAll(want, " ", "")) {
					t.Errorf("signature lacks %q:\n%s", want, sig)
				}
			}
			// Relaxed canonicalisation survives refolding and trailing spaces...
			refolded := bytes.Replace(got, []byte("Subject: [SEC-2026-0001] heap overflow"), []byte("Subject:  [SEC-2026-0001]\r\n heap overflow "), 1)
			if vs := verifyDKIM(t, refolded, lookup); vs[0].Err != nil {
				t.Errorf("refolded Subject: %v, want a pass", vs[0].Err)
			}
			// ...but not a changed body, a changed Subject, or an added From or Reply-To.
			for name, tampered := range map[string][]byte{
				"body":     bytes.Replace(got, []byte("Confirmed"), []byte("Denied"), 1),
				"subject":  bytes.Replace(got, []byte("heap overflow"), []byte("nothing to see"), 1),
				"from":     bytes.Replace(got, []byte("\r\nFrom:"), []byte("\r\nFrom: mallory@evil.test\r\nFrom:"), 1),
				"reply-to": bytes.Replace(got, []byte("\r\nFrom:"), []byte("\r\nReply-To: mallory@evil.test\r\nFrom:"), 1),
				"footer":   append(bytes.Clone(got), []byte("Unsubscribe here.\r\n")...),
			} {
				if vs := verifyDKIM(t, tampered, lookup); vs[0].Err == nil {
					t.Errorf("%s tampered: the signature still verifies", name)
				}
			}
		})
	}
}

func TestDKIMRelayRefuses(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDKIMRelay(relayFunc(nil), DKIMOptions{Domain: "ex.test", Signer: key}); err == nil {
		t.Error("NewDKIMRelay without a selector = nil error, want one")
	}
	called := false
	next := relayFunc(func(context.Context, string, []string, []byte) error { called = true; return nil })
	r, err := NewDKIMRelay(next, DKIMOptions{Domain: "ex.test", Selector: "s", Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"bare LF":   "From: a@ex.test\n\nbody\n",
		"no header": "\r\n",
	} {
		err := r.Send(t.Context(), "", []string{"b@ex.test"}, []byte(data))
		if err == nil || !IsPermanent(err) {
			t.Errorf("Send(%s) = %v, want a permanent error", name, err)
		}
	}
	if called {
		t.Error("an unsignable message reached the next relay")
	}
}

// TestDKIMRelayBatches: over a Maildir, DKIM signs each message of a batch
// and hands the batch on whole; a bad message fails alone.
func TestDKIMRelayBatches(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	md, err := NewMaildir(dir, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewDKIMRelay(md, DKIMOptions{Domain: "ex.test", Selector: "ed", Signer: edKey})
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxBatch() != maildirBatch {
		t.Errorf("MaxBatch = %d, want the Maildir's %d", r.MaxBatch(), maildirBatch)
	}
	errs := r.SendBatch(t.Context(), []Outgoing{
		{To: []string{"a@ex.test"}, Data: []byte(dkimMsg)},
		{To: []string{"b@ex.test"}, Data: []byte("Subject: no From\r\n\r\nx\r\n")},
		{To: []string{"c@ex.test"}, Data: []byte(dkimMsg)},
	})
	if errs[0] != nil || errs[2] != nil || !IsPermanent(errs[1]) {
		t.Fatalf("SendBatch = %v, want the message without From refused alone", errs)
	}
	files, _ := os.ReadDir(filepath.Join(dir, "new"))
	if len(files) != 2 {
		t.Fatalf("new/ holds %d files, want 2", len(files))
	}
	for _, f := range files {
		raw, _ := os.ReadFile(filepath.Join(dir, "new", f.Name()))
		if !bytes.Contains(raw, []byte("\nDKIM-Signature:")) {
			t.Errorf("%s is not DKIM-signed", f.Name())
		}
	}
	// Over a relay that takes one message at a time, it takes one at a time.
	plain, _ := NewDKIMRelay(relayFunc(func(context.Context, string, []string, []byte) error { return nil }), DKIMOptions{Domain: "ex.test", Selector: "ed", Signer: edKey})
	if plain.MaxBatch() != 1 {
		t.Errorf("MaxBatch over a plain relay = %d, want 1", plain.MaxBatch())
	}
}
