package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./keys -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if intended)\ngot:\n%s", name, got)
	}
}

// TestListKeyGolden: a list key made with a fixed clock and randomness is
// the same every time, and matches the golden export.
func TestListKeyGolden(t *testing.T) {
	gen := func() []byte {
		k, err := GenerateListKey("Example Security Team", "security@example.org", fixedOpts(7))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.ArmoredPublic()
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}
	a, b := gen(), gen()
	if !bytes.Equal(a, b) {
		t.Fatal("GenerateListKey with fixed Options is not deterministic")
	}
	golden(t, "listkey.pub.golden", a)
}

// TestListKeyShape: the list key is v4 EdDSA legacy (22) + cv25519 ECDH
// (18), advertises AES-256 first, and is usable at once.
func TestListKeyShape(t *testing.T) {
	k, err := GenerateListKey("List", "list@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Fingerprint(); len(got) != 40 || strings.ToUpper(got) != got || !isHex(got) {
		t.Errorf("Fingerprint() = %q, want 40 upper-case hex digits", got)
	}
	if k.Email() != "list@example.org" || k.Name() != "List" {
		t.Errorf("Email(), Name() = %q, %q", k.Email(), k.Name())
	}
	if k.Algorithm() != "ed25519" || k.Created().IsZero() || k.Created().After(time.Now()) {
		t.Errorf("Algorithm(), Created() = %q, %v", k.Algorithm(), k.Created())
	}
	if _, ok := k.ExpiresAt(); ok {
		t.Error("list key expires; want no expiry")
	}
	if err := k.Check(time.Now()); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if a := k.e.PrimaryKey.PubKeyAlgo; a != 22 {
		t.Errorf("primary algorithm = %d, want 22 (EdDSA legacy)", a)
	}
	if len(k.e.Subkeys) != 1 || k.e.Subkeys[0].PublicKey.PubKeyAlgo != 18 {
		t.Errorf("subkeys = %d, want one ECDH (18)", len(k.e.Subkeys))
	}
	self, _ := k.e.PrimarySelfSignature()
	if len(self.PreferredSymmetric) == 0 || self.PreferredSymmetric[0] != 9 {
		t.Errorf("preferred ciphers = %v, want AES-256 (9) first", self.PreferredSymmetric)
	}
}

// TestGPGImportsListKey: gpg 2.2 imports our public and secret list key
// (also passphrase-protected), reads AES256 among its preferences, and can
// use the protected secret key to decrypt.
func TestGPGImportsListKey(t *testing.T) {
	g := newGPG(t)
	k, err := GenerateListKey("Example Security Team", "security@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	out := g.must(pub, "--import")
	if !statusHas(out, "IMPORT_OK") {
		t.Fatalf("gpg --import public: %s", out)
	}
	packets := g.must(pub, "--list-packets")
	if !strings.Contains(packets, "pref-sym-algos: 9") {
		t.Errorf("gpg --list-packets shows no AES256 (9) preference:\n%s", packets)
	}
	if !strings.Contains(packets, "algo 22") || !strings.Contains(packets, "algo 18") {
		t.Errorf("gpg --list-packets: want algo 22 and algo 18:\n%s", packets)
	}

	for _, pass := range []string{"", "correct horse"} {
		sec, err := k.ArmoredPrivate([]byte(pass), Options{})
		if err != nil {
			t.Fatal(err)
		}
		g2 := newGPG(t)
		out := g2.must(sec, "--import")
		if !statusHas(out, "IMPORT_OK") || !statusHas(out, "IMPORT_RES") {
			t.Fatalf("gpg --import secret (passphrase %q): %s", pass, out)
		}
		if !strings.Contains(g2.must(nil, "--with-colons", "--list-secret-keys"), k.Fingerprint()) {
			t.Fatalf("secret key %s not listed after import", k.Fingerprint())
		}
		// Encrypt to the list key with gpg and decrypt with gpg: proves the
		// imported secret key (and its S2K protection) works.
		ct := g2.must([]byte("ping\n"), "--armor", "--encrypt", "-r", k.Fingerprint())
		plainPath := filepath.Join(g2.dir, "plain")
		ctPath := g2.tmpFile("ct.asc", []byte(stripStatus(ct)))
		out, errs, err := g2.run(nil, "--passphrase", pass, "--output", plainPath, "--decrypt", ctPath)
		if err != nil || !statusHas(out, "DECRYPTION_OKAY") {
			t.Fatalf("gpg --decrypt with imported key (passphrase %q): %v\n%s\n%s", pass, err, out, errs)
		}
	}
}

// TestLoadOrCreateListKey: first start creates a 0600 file; later starts
// load it; a loose mode is refused; passphrase handling.
func TestLoadOrCreateListKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "security.key")
	k1, created, err := LoadOrCreateListKey(path, "Sec", "security@example.org", nil, Options{})
	if err != nil || !created {
		t.Fatalf("LoadOrCreateListKey (new) = %v, created %v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateListKey(path, "Sec", "security@example.org", nil, Options{})
	if err != nil || created {
		t.Fatalf("LoadOrCreateListKey (existing) = %v, created %v", err, created)
	}
	if k1.Fingerprint() != k2.Fingerprint() || !k2.HasSecret() {
		t.Fatalf("reloaded key %s (secret %v), want %s", k2.Fingerprint(), k2.HasSecret(), k1.Fingerprint())
	}
	if _, _, err := LoadOrCreateListKey(path, "", "", []byte("pw"), Options{}); !errors.Is(err, ErrNotProtected) {
		t.Errorf("passphrase for an unprotected key: err = %v, want ErrNotProtected", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateListKey(path, "Sec", "security@example.org", nil, Options{}); !errors.Is(err, ErrInsecurePermissions) {
			t.Errorf("mode %04o: err = %v, want ErrInsecurePermissions", mode, err)
		}
	}

	ppath := filepath.Join(dir, "distributors.key")
	pass := []byte("correct horse battery staple")
	kp, created, err := LoadOrCreateListKey(ppath, "Dist", "distributors@example.org", pass, Options{})
	if err != nil || !created || !kp.HasSecret() {
		t.Fatalf("protected create = %v, created %v", err, created)
	}
	raw, _ := os.ReadFile(ppath)
	if _, err := ReadListKey(bytes.NewReader(raw), nil); !errors.Is(err, ErrPassphrase) {
		t.Errorf("no passphrase: err = %v, want ErrPassphrase", err)
	}
	if _, _, err := LoadOrCreateListKey(ppath, "", "", []byte("wrong"), Options{}); !errors.Is(err, ErrPassphrase) {
		t.Errorf("wrong passphrase: err = %v, want ErrPassphrase", err)
	}
	kp2, _, err := LoadOrCreateListKey(ppath, "", "", pass, Options{})
	if err != nil || kp2.Fingerprint() != kp.Fingerprint() || !kp2.HasSecret() {
		t.Fatalf("right passphrase: %v", err)
	}
	// The loaded key works.
	if _, err := Sign(testOuter(t, "x"), []byte(innerText), kp2, Options{}); err != nil {
		t.Errorf("Sign with reloaded protected key: %v", err)
	}
}

// TestListKeyRSAFloor: an RSA list key under 3072 bits is refused at load.
func TestListKeyRSAFloor(t *testing.T) {
	g := newGPG(t)
	fpr := g.genKey("Old List <old@example.org>", "rsa2048", "sign,cert", "never")
	g.must(nil, "--quick-add-key", fpr, "rsa2048", "encr", "never")
	sec := g.export("--armor", "--export-secret-keys", fpr)
	path := filepath.Join(t.TempDir(), "old.key")
	if err := os.WriteFile(path, sec, 0o600); err != nil {
		t.Fatal(err)
	}
	if ks, err := ReadPublicKeys(bytes.NewReader(g.export("--armor", "--export", fpr))); err != nil || ks[0].Algorithm() != "rsa2048" {
		t.Errorf("Algorithm() of an rsa2048 key: %v", err)
	}
	if _, _, err := LoadOrCreateListKey(path, "", "", nil, Options{}); !errors.Is(err, ErrWeakAlgorithm) {
		t.Fatalf("rsa2048 list key: err = %v, want ErrWeakAlgorithm", err)
	}
	// A gpg-made ed25519 list key loads.
	fpr2 := g.edKey("New List <new@example.org>", "never")
	path2 := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(path2, g.export("--armor", "--export-secret-keys", fpr2), 0o600); err != nil {
		t.Fatal(err)
	}
	k, _, err := LoadOrCreateListKey(path2, "", "", nil, Options{})
	if err != nil || k.Fingerprint() != fpr2 {
		t.Fatalf("gpg ed25519 list key: %v", err)
	}
}
