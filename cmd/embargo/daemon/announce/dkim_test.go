package announce

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

var (
	dkimKeyOnce sync.Once
	dkimRSA     *rsa.PrivateKey
)

func testDKIMKeys(t testing.TB) map[string]crypto.Signer {
	t.Helper()
	dkimKeyOnce.Do(func() { dkimRSA, _ = rsa.GenerateKey(rand.Reader, 2048) })
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]crypto.Signer{"rsa": dkimRSA, "ed25519": ed}
}

// dkimRecord is the TXT record of k (RFC 6376 §3.6.1, RFC 8463 §4.2).
func dkimRecord(t testing.TB, k crypto.Signer) string {
	t.Helper()
	if pub, ok := k.Public().(ed25519.PublicKey); ok {
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// verifyDKIM checks msg's one signature with go-msgauth, the key published
// for embargo._domainkey.example.org, and returns the signed fields.
func verifyDKIM(t testing.TB, msg []byte, k crypto.Signer) ([]string, error) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if domain != "embargo._domainkey.example.org" {
				return nil, fmt.Errorf("no record for %s", domain)
			}
			return []string{dkimRecord(t, k)}, nil
		},
	})
	if err != nil {
		return nil, err
	}
	if len(vs) != 1 {
		return nil, fmt.Errorf("%d signatures", len(vs))
	}
	return vs[0].HeaderKeys, vs[0].Err
}

// TestDKIMPerCopy: each one-click copy carries a signature that go-msgauth
// verifies, over List-Unsubscribe and List-Unsubscribe-Post (RFC 8058
// §4), From oversigned; changing a copy's URI, or its body, breaks it.
func TestDKIMPerCopy(t *testing.T) {
	msg, err := prepareRelease(advisory(t, announceKey(t), t0), testList, announceKey(t), Options{}.withDefaults(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range testDKIMKeys(t) {
		t.Run(name, func(t *testing.T) {
			s, err := newDKIMSigner(&DKIM{Domain: "example.org", Selector: "embargo", Signer: k}, msg)
			if err != nil {
				t.Fatal(err)
			}
			for _, tok := range []string{"aaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbb"} {
				own, err := oneClickUnsubscribe(testList, "https://security.example.org", tok)
				if err != nil {
					t.Fatal(err)
				}
				sig, err := s.sign(own)
				if err != nil {
					t.Fatal(err)
				}
				cp := slices.Concat(sig, own, msg)
				if err := checkLines(cp); err != nil {
					t.Fatal(err)
				}
				keys, err := verifyDKIM(t, cp, k)
				if err != nil {
					t.Fatalf("copy does not verify: %v\n%s", err, cp[:800])
				}
				joined := strings.ToLower(strings.Join(keys, ":"))
				for _, f := range []string{"list-unsubscribe", "list-unsubscribe-post", "from:from", "subject", "list-id"} {
					if !strings.Contains(joined, f) {
						t.Errorf("h= %s lacks %s", joined, f)
					}
				}
				bad := bytes.Replace(cp, []byte(tok), []byte("cccccccccccccccccccccccccc"), 1)
				if _, err := verifyDKIM(t, bad, k); err == nil {
					t.Error("a copy with another one-click URI verifies")
				}
				bad = bytes.Replace(cp, []byte("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), nil, 1)
				if _, err := verifyDKIM(t, bad, k); err == nil {
					t.Error("a copy without List-Unsubscribe-Post verifies")
				}
				bad = bytes.Replace(cp, []byte("-----BEGIN PGP SIGNATURE-----"), []byte("-----BEGIN PGP SIGNATURE----+"), 1)
				if _, err := verifyDKIM(t, bad, k); err == nil {
					t.Error("a copy with another body verifies")
				}
				bad = slices.Concat(sig, own, []byte("From: <evil@example.net>\r\n"), msg)
				if _, err := verifyDKIM(t, bad, k); err == nil {
					t.Error("a copy with a second From verifies (From is oversigned)")
				}
			}
		})
	}
}

// TestRelaxedCanonicalization: the body hash and the header forms agree
// with go-msgauth on white space, folding and empty lines at the end.
func TestRelaxedCanonicalization(t *testing.T) {
	k := testDKIMKeys(t)["rsa"]
	for i, msg := range []string{
		"From: <a@example.org>\r\nSubject:   many    spaces \t \r\n\tfolded  \r\n\r\nline  with\t\tspaces   \r\n\r\n  leading\r\n\r\n\r\n",
		"From:<a@example.org>\r\nSubject: a: b  :  c\r\n\r\nno final line end",
		"From: <a@example.org>\r\nSUBJECT : upper\r\n\r\n \t \r\n\r\n",
		"From: <a@example.org>\r\n\r\n",
	} {
		s, err := newDKIMSigner(&DKIM{Domain: "example.org", Selector: "embargo", Signer: k, Headers: []string{"From", "Subject", "X-Own"}}, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		own := []byte("X-Own:  own   value\r\n")
		sig, err := s.sign(own)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifyDKIM(t, slices.Concat(sig, own, []byte(msg)), k); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
}

func checkLines(b []byte) error {
	for i, l := range strings.Split(string(b), "\r\n") {
		if len(l) > 998 || strings.ContainsAny(l, "\r\n") {
			return fmt.Errorf("line %d: %q", i, l)
		}
	}
	return nil
}
