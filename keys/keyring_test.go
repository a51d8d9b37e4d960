package keys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pinnedFixture is the key directory of TestLoadPinned: gpg-made member keys
// in every state the loader must tell apart, and the pins that name them.
type pinnedFixture struct {
	g                         *gpgHome
	dir                       string
	alice, bob, unnamed, soon string
	pins                      []Pin
}

// newPinnedFixture makes the keys with gpg and writes them to a key
// directory, several to a file, beside files the loader must ignore.
func newPinnedFixture(t *testing.T) *pinnedFixture {
	g := newGPG(t)
	dir := t.TempDir()
	write := func(name string, data ...[]byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Join(data, []byte("\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exp := func(fpr string) []byte { return g.export("--armor", "--export", fpr) }

	alice := g.edKey("Alice <alice@src.test>", "1y")
	bob := g.edKey("Bob <bob@src.test>", "1y")
	unnamed := g.edKey("Nobody <nobody@src.test>", "1y")
	expired := g.edKey("Expired <expired@src.test>", "1d")
	soon := g.edKey("Soon <soon@src.test>", "10d")
	weak := g.genKey("Weak <weak@src.test>", "rsa1024", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", weak, "rsa1024", "encr", "1y")
	sha1 := g.genKey("Sha1 <sha1@src.test>", "rsa3072", "sign,cert", "1y", "--cert-digest-algo", "SHA1")
	g.must(nil, "--cert-digest-algo", "SHA1", "--quick-add-key", sha1, "rsa3072", "encr", "1y")
	dsa := g.genKey("Dsa <dsa@src.test>", "dsa2048", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", dsa, "elg2048", "encr", "1y")
	elg := g.genKey("Elg <elg@src.test>", "ed25519", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", elg, "elg2048", "encr", "1y")
	signOnly := g.genKey("SignOnly <signonly@src.test>", "ed25519", "sign,cert", "1y")
	revoked := g.edKey("Revoked <revoked@src.test>", "1y")
	revokedPub := exp(revoked)
	g.importKey(revocationCert(t, g, revoked))
	// Alice certifies Bob: a third-party certification to be stripped.
	g.must(nil, "--local-user", alice, "--quick-sign-key", bob)

	// Alice and Bob in one file, several armor blocks.
	write("team.asc", exp(alice), exp(bob))
	write("unnamed.asc", exp(unnamed))
	write("garbage.asc", []byte("not a key\n"))
	write("README.txt", []byte("ignored: not *.asc\n"))
	write("states.asc", exp(expired), exp(soon), exp(weak), exp(sha1), exp(signOnly), exp(dsa), exp(elg))
	write("revoked.asc", revokedPub)            // an older copy without the revocation
	write("revoked-new.asc", exp(revoked))      // and the revoked one: the revocation wins
	write("sha1-dup.asc", exp(sha1), exp(sha1)) // duplicates are harmless

	pins := []Pin{
		{"alice@src.test", alice},
		{"bob@src.test", strings.ToLower(bob)},
		{"expired@src.test", expired},
		{"soon@src.test", soon},
		{"weak@src.test", weak},
		{"sha1@src.test", sha1},
		{"signonly@src.test", signOnly},
		{"dsa@src.test", dsa},
		{"elg@src.test", elg},
		{"revoked@src.test", revoked},
		{"missing@src.test", strings.Repeat("AB", 20)},
		{"other-address@src.test", alice}, // pinned address not on the key
	}
	return &pinnedFixture{g: g, dir: dir, alice: alice, bob: bob, unnamed: unnamed, soon: soon, pins: pins}
}

// loadPinnedCases is the table of TestLoadPinned: what the loader says of
// each pinned address of newPinnedFixture.
var loadPinnedCases = []struct {
	name    string
	email   string
	want    error // nil: no problem
	warning bool
	inRing  bool
}{
	{"pinned key found among several in one file", "alice@src.test", nil, false, true},
	{"second key in the same file, pin in lower case", "bob@src.test", nil, false, true},
	{"expired key", "expired@src.test", ErrKeyExpired, false, false},
	{"expires in 10 days: warning", "soon@src.test", ErrKeyExpiring, true, true},
	{"RSA-1024 key: weak algorithm", "weak@src.test", ErrWeakAlgorithm, false, false},
	{"SHA-1 self-signatures", "sha1@src.test", ErrSHA1Binding, false, false},
	{"no encryption subkey", "signonly@src.test", ErrNoEncryptionKey, false, false},
	{"DSA primary key", "dsa@src.test", ErrWeakAlgorithm, false, false},
	{"ElGamal encryption subkey", "elg@src.test", ErrWeakAlgorithm, false, false},
	{"revoked key (revocation in one of two copies)", "revoked@src.test", ErrKeyRevoked, false, false},
	{"missing key", "missing@src.test", ErrKeyMissing, false, false},
	{"pinned address not a user ID: warning", "other-address@src.test", ErrEmailMismatch, true, true},
}

// TestLoadPinned is the key-loading table: gpg-made member keys in a key
// directory, pinned by fingerprint.
func TestLoadPinned(t *testing.T) {
	f := newPinnedFixture(t)
	now := time.Now()
	// The expired key is judged two days on, when it has expired; the
	// others are still valid then.
	kr, problems, err := LoadPinned(f.dir, f.pins, now.Add(48*time.Hour))
	if err != nil {
		t.Fatalf("LoadPinned: %v", err)
	}
	byEmail := map[string][]Problem{}
	for _, p := range problems {
		byEmail[p.Email] = append(byEmail[p.Email], p)
	}
	fprOf := map[string]string{}
	for _, p := range f.pins {
		fprOf[p.Email] = normalizeFingerprint(p.Fingerprint)
	}
	for _, tt := range loadPinnedCases {
		t.Run(tt.name, func(t *testing.T) {
			ps := byEmail[tt.email]
			if tt.want == nil {
				if len(ps) != 0 {
					t.Fatalf("problems = %v, want none", ps)
				}
			} else {
				if len(ps) != 1 {
					t.Fatalf("problems = %v, want one %v", ps, tt.want)
				}
				mustErrIs(t, tt.email, ps[0].Err, tt.want, allKeySentinels)
				if ps[0].Warning != tt.warning {
					t.Errorf("Warning = %v, want %v", ps[0].Warning, tt.warning)
				}
				if ps[0].Fingerprint != fprOf[tt.email] {
					t.Errorf("Fingerprint = %s, want %s", ps[0].Fingerprint, fprOf[tt.email])
				}
			}
			if _, ok := kr.Lookup(fprOf[tt.email]); ok != tt.inRing {
				t.Errorf("in keyring = %v, want %v", ok, tt.inRing)
			}
		})
	}
	t.Run("file no one names is ignored", func(t *testing.T) {
		if _, ok := kr.Lookup(f.unnamed); ok {
			t.Error("unpinned key is in the keyring")
		}
		if kr.Len() != 3 { // alice (pinned twice), bob, soon
			var fs []string
			for _, k := range kr.Keys() {
				fs = append(fs, k.Email())
			}
			t.Errorf("keyring = %v, want alice, bob, soon", fs)
		}
	})
	t.Run("third-party certifications stripped", func(t *testing.T) { checkCertificationsStripped(t, f, kr) })
	checkLoadPinnedRefusals(t, f, now)
}

// checkCertificationsStripped: Alice's certification of Bob, present in
// gpg's export, is gone from the loaded key and from its export.
func checkCertificationsStripped(t *testing.T, f *pinnedFixture, kr *Keyring) {
	k, ok := kr.Lookup(f.bob)
	if !ok {
		t.Fatal("bob missing")
	}
	for _, id := range k.e.Identities {
		for _, s := range id.Signatures {
			if !s.CheckKeyIdOrFingerprint(k.e.PrimaryKey) {
				t.Errorf("certification by %X kept", *s.IssuerKeyId)
			}
		}
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	aliceID := f.alice[24:]
	if pk := f.g.must(f.g.export("--armor", "--export", f.bob), "--list-packets"); !strings.Contains(pk, "keyid "+aliceID) {
		t.Fatalf("test setup: gpg's export of Bob lacks Alice's certification:\n%s", pk)
	}
	if pk := f.g.must(pub, "--list-packets"); strings.Contains(pk, "keyid "+aliceID) {
		t.Errorf("exported key still carries Alice's certification:\n%s", pk)
	}
}

// checkLoadPinnedRefusals: the expiry warning's day count, and the pins and
// directories LoadPinned refuses, in the fixture's key directory.
func checkLoadPinnedRefusals(t *testing.T, f *pinnedFixture, now time.Time) {
	t.Run("expiry warning counts days", func(t *testing.T) {
		_, ps, err := LoadPinned(f.dir, []Pin{{"soon@src.test", f.soon}}, now)
		if err != nil || len(ps) != 1 || ps[0].DaysLeft != 10 || !errors.Is(ps[0].Err, ErrKeyExpiring) {
			t.Fatalf("LoadPinned(soon, now) = %v, %v; want one warning with DaysLeft 10", ps, err)
		}
	})
	t.Run("bad pin is an error", func(t *testing.T) {
		for _, fpr := range []string{"", "XYZ", "0123", strings.Repeat("A", 39)} {
			if _, _, err := LoadPinned(f.dir, []Pin{{"x@y", fpr}}, now); !errors.Is(err, ErrBadFingerprint) {
				t.Errorf("pin %q: err = %v, want ErrBadFingerprint", fpr, err)
			}
		}
	})
	t.Run("v3 and v6 pins", func(t *testing.T) {
		_, ps, err := LoadPinned(f.dir, []Pin{{"v3@x", strings.Repeat("A", 32)}, {"v6@x", strings.Repeat("B", 64)}}, now)
		if err != nil || len(ps) != 2 || !errors.Is(ps[0].Err, ErrWeakAlgorithm) || !errors.Is(ps[1].Err, ErrUnsupportedKey) {
			t.Fatalf("problems = %v, %v", ps, err)
		}
	})
	t.Run("unreadable directory", func(t *testing.T) {
		if _, _, err := LoadPinned(filepath.Join(f.dir, "nope"), nil, now); err == nil {
			t.Error("err = nil for a missing directory")
		}
	})
}

var allKeySentinels = []error{ErrKeyMissing, ErrKeyExpired, ErrKeyRevoked, ErrWeakAlgorithm,
	ErrSHA1Binding, ErrNoEncryptionKey, ErrNoSigningKey, ErrUnsupportedKey, ErrKeyExpiring, ErrEmailMismatch}

// revocationCert returns gpg's pre-made revocation certificate for fpr
// (openpgp-revocs.d), made importable by removing the ":" gpg puts in front
// of its armor line against accidental use.
func revocationCert(t testing.TB, g *gpgHome, fpr string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.dir, "openpgp-revocs.d", fpr+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte(":-----BEGIN PGP PUBLIC KEY BLOCK-----"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----"))
}

func TestKeyringLookup(t *testing.T) {
	k := detKeys(t)
	kr := NewKeyring(k.member, k.other, k.member, nil)
	if kr.Len() != 2 {
		t.Fatalf("Len() = %d, want 2", kr.Len())
	}
	f := k.member.Fingerprint()
	spaced := fmt.Sprintf("%s %s %s", strings.ToLower(f[:8]), f[8:20], f[20:])
	for _, q := range []string{f, strings.ToLower(f), spaced, "0x" + f} {
		if got, ok := kr.Lookup(q); !ok || got != k.member {
			t.Errorf("Lookup(%q) = %v, %v", q, got, ok)
		}
	}
	if _, ok := kr.Lookup(f[:16]); ok {
		t.Error("Lookup by key ID succeeded; only full fingerprints may match")
	}
	var nilRing *Keyring
	if _, ok := nilRing.Lookup(f); ok || nilRing.Len() != 0 {
		t.Error("nil keyring not empty")
	}
}
