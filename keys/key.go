package keys

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
)

// Armor block types, RFC 4880 §6.2.
const (
	armorPublicKey  = "PGP PUBLIC KEY BLOCK"
	armorPrivateKey = "PGP PRIVATE KEY BLOCK"
	armorMessage    = "PGP MESSAGE"
	armorSignature  = "PGP SIGNATURE"
)

// maxKeyFile bounds what is read from one key file.
const maxKeyFile = 16 << 20

// minListRSABits is the floor for RSA list keys (new keys; docs/threat-model.md D4).
const minListRSABits = 3072

// minRSABits is the floor for any RSA key we encrypt to or accept
// signatures from (docs/threat-model.md D4).
const minRSABits = 2048

// A Key is one OpenPGP certificate (RFC 4880 §11.1), identified by its
// primary key fingerprint, with or without its secret keys.
type Key struct {
	e   *openpgp.Entity
	fpr string
}

func newKey(e *openpgp.Entity) *Key {
	return &Key{e: e, fpr: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)}
}

// Fingerprint returns the primary key's fingerprint as upper-case hex (40
// digits for a v4 key, RFC 4880 §12.2).
func (k *Key) Fingerprint() string { return k.fpr }

// KeyID returns the primary key's 64-bit key ID as 16 upper-case hex digits.
func (k *Key) KeyID() string { return fmt.Sprintf("%016X", k.e.PrimaryKey.KeyId) }

// Name returns the name of the primary user ID.
func (k *Key) Name() string {
	if id := k.e.PrimaryIdentity(); id != nil && id.UserId != nil {
		return id.UserId.Name
	}
	return ""
}

// Email returns the address of the primary user ID.
func (k *Key) Email() string {
	if id := k.e.PrimaryIdentity(); id != nil && id.UserId != nil {
		return id.UserId.Email
	}
	return ""
}

// UserIDs returns every self-certified user ID, sorted.
func (k *Key) UserIDs() []string {
	ids := make([]string, 0, len(k.e.Identities))
	for name := range k.e.Identities {
		ids = append(ids, name)
	}
	sort.Strings(ids)
	return ids
}

// hasEmail reports whether a self-certified user ID carries addr
// (case-insensitively). Used for warnings only: keys are never selected by
// address (docs/threat-model.md D5).
func (k *Key) hasEmail(addr string) bool {
	for _, id := range k.e.Identities {
		if id.UserId != nil && strings.EqualFold(id.UserId.Email, addr) {
			return true
		}
	}
	return false
}

// Created is when the primary key was made.
func (k *Key) Created() time.Time { return k.e.PrimaryKey.CreationTime.UTC() }

// Algorithm names the primary key's algorithm for people: "rsa3072",
// "ed25519", "nistp256", "dsa"…; never used to decide anything (Check does).
func (k *Key) Algorithm() string {
	pk := k.e.PrimaryKey
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		if bits, err := pk.BitLength(); err == nil {
			return fmt.Sprintf("rsa%d", bits)
		}
		return "rsa"
	case packet.PubKeyAlgoDSA:
		return "dsa"
	case packet.PubKeyAlgoElGamal:
		return "elgamal"
	case packet.PubKeyAlgoEd25519, packet.PubKeyAlgoX25519:
		return "ed25519"
	case packet.PubKeyAlgoEd448, packet.PubKeyAlgoX448:
		return "ed448"
	case packet.PubKeyAlgoECDSA, packet.PubKeyAlgoECDH, packet.PubKeyAlgoEdDSA:
		c, err := pk.Curve()
		switch {
		case err != nil:
		case c == packet.Curve25519 && pk.PubKeyAlgo == packet.PubKeyAlgoEdDSA:
			return "ed25519" // as gpg names the legacy EdDSA form
		case c == packet.Curve25519:
			return "cv25519"
		default:
			return strings.ToLower(string(c))
		}
	}
	return fmt.Sprintf("algorithm %d", pk.PubKeyAlgo)
}

// HasSecret reports whether the key carries (decrypted) secret key material.
func (k *Key) HasSecret() bool {
	return k.e.PrivateKey != nil && !k.e.PrivateKey.Dummy() && !k.e.PrivateKey.Encrypted
}

// ExpiresAt returns when the key stops being usable for encryption: the
// earlier of the primary key's expiry (RFC 4880 §5.2.3.6, from the primary
// user ID's self-signature) and the expiry of the last encryption subkey.
// ok is false when the key never expires.
func (k *Key) ExpiresAt() (t time.Time, ok bool) {
	e := k.e
	earliest := func(c time.Time) {
		if !ok || c.Before(t) {
			t, ok = c, true
		}
	}
	if sig, _ := e.PrimarySelfSignature(); sig != nil {
		if end, has := keyEnd(e.PrimaryKey, sig); has {
			earliest(end)
		}
		if sig.SigLifetimeSecs != nil && *sig.SigLifetimeSecs != 0 {
			earliest(sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs) * time.Second))
		}
	}
	// The key can encrypt until its last encryption subkey expires.
	var subEnd time.Time
	subForever, subSeen := false, false
	for _, sk := range e.Subkeys {
		if sk.Sig == nil || !sk.Sig.FlagsValid || !(sk.Sig.FlagEncryptCommunications || sk.Sig.FlagEncryptStorage) || len(sk.Revocations) > 0 {
			continue
		}
		subSeen = true
		end, has := keyEnd(sk.PublicKey, sk.Sig)
		if !has {
			subForever = true
			continue
		}
		if end.After(subEnd) {
			subEnd = end
		}
	}
	if subSeen && !subForever {
		earliest(subEnd)
	}
	return t, ok
}

func keyEnd(pk *packet.PublicKey, sig *packet.Signature) (time.Time, bool) {
	if sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}, false
	}
	return pk.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second), true
}

// Check reports whether the key is usable, at now, both to encrypt to and to
// verify signatures from. nil means usable; otherwise the error wraps one of
// ErrKeyRevoked, ErrKeyExpired, ErrUnsupportedKey, ErrWeakAlgorithm,
// ErrSHA1Binding, ErrNoEncryptionKey or ErrNoSigningKey.
func (k *Key) Check(now time.Time) error {
	return k.check(now, useEncrypt|useSign)
}

type usage int

const (
	useEncrypt usage = 1 << iota
	useSign
)

func (k *Key) check(now time.Time, need usage) error {
	e := k.e
	pk := e.PrimaryKey
	// Only v4 keys: v3 keys (MD5 fingerprints) are not even parsed by
	// go-crypto, and gpg 2.2 cannot use v5/v6 keys (RFC 9580), nor can a
	// v3 PKESK be addressed to one.
	if pk.Version != 4 {
		return fmt.Errorf("%w: v%d key %s", ErrUnsupportedKey, pk.Version, k.fpr)
	}
	self, ident := e.PrimarySelfSignature()
	if self == nil {
		return fmt.Errorf("%w: no valid self-signature on %s", ErrUnsupportedKey, k.fpr)
	}
	if e.Revoked(now) || (ident != nil && ident.Revoked(now)) {
		return fmt.Errorf("%w: %s", ErrKeyRevoked, k.fpr)
	}
	if pk.CreationTime.After(now) {
		return fmt.Errorf("%w: %s is not valid before %s", ErrKeyExpired, k.fpr, pk.CreationTime.UTC().Format(time.RFC3339))
	}
	if pk.KeyExpired(self, now) || self.SigExpired(now) {
		end, _ := k.ExpiresAt()
		return fmt.Errorf("%w: %s on %s", ErrKeyExpired, k.fpr, end.UTC().Format(time.DateOnly))
	}
	if err := checkAlgorithm(pk); err != nil {
		return fmt.Errorf("%w (primary key of %s)", err, k.fpr)
	}
	// A SHA-1 binding signature can be forged by a chosen-prefix collision
	// ("SHA-1 is a Shambles", 2020), which could attach an attacker's subkey
	// or user ID (docs/threat-model.md D4).
	if weakHash(self.Hash) {
		return fmt.Errorf("%w: user ID self-signature uses %s on %s", ErrSHA1Binding, hashName(self.Hash), k.fpr)
	}
	for _, sk := range e.Subkeys {
		if sk.Sig == nil || sk.Revoked(now) || sk.PublicKey.KeyExpired(sk.Sig, now) {
			continue // never used, so never a risk
		}
		if err := checkAlgorithm(sk.PublicKey); err != nil {
			return fmt.Errorf("%w (subkey %X of %s)", err, sk.PublicKey.KeyId, k.fpr)
		}
		if weakHash(sk.Sig.Hash) || (sk.Sig.EmbeddedSignature != nil && weakHash(sk.Sig.EmbeddedSignature.Hash)) {
			return fmt.Errorf("%w: subkey %X binding uses %s", ErrSHA1Binding, sk.PublicKey.KeyId, hashName(sk.Sig.Hash))
		}
	}
	if need&useEncrypt != 0 {
		if _, ok := e.EncryptionKey(now); !ok {
			for _, sk := range e.Subkeys {
				if sk.Sig != nil && sk.Sig.FlagsValid && sk.Sig.FlagEncryptCommunications && !sk.Revoked(now) && sk.PublicKey.KeyExpired(sk.Sig, now) {
					return fmt.Errorf("%w: encryption subkey %X of %s", ErrKeyExpired, sk.PublicKey.KeyId, k.fpr)
				}
			}
			return fmt.Errorf("%w: %s", ErrNoEncryptionKey, k.fpr)
		}
	}
	if need&useSign != 0 {
		if _, ok := e.SigningKey(now); !ok {
			return fmt.Errorf("%w: %s", ErrNoSigningKey, k.fpr)
		}
	}
	return nil
}

// checkAlgorithm applies the algorithm floor of docs/threat-model.md D4: RSA ≥ 2048 bits;
// no DSA, no ElGamal, no secp256k1.
func checkAlgorithm(pk *packet.PublicKey) error {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		if bits < minRSABits {
			return fmt.Errorf("%w: RSA %d bits", ErrWeakAlgorithm, bits)
		}
		return nil
	case packet.PubKeyAlgoDSA:
		return fmt.Errorf("%w: DSA", ErrWeakAlgorithm)
	case packet.PubKeyAlgoElGamal:
		return fmt.Errorf("%w: ElGamal", ErrWeakAlgorithm)
	case packet.PubKeyAlgoECDSA, packet.PubKeyAlgoECDH, packet.PubKeyAlgoEdDSA:
		c, err := pk.Curve()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		if c == packet.CurveSecP256k1 {
			return fmt.Errorf("%w: secp256k1", ErrWeakAlgorithm)
		}
		return nil
	case packet.PubKeyAlgoX25519, packet.PubKeyAlgoX448, packet.PubKeyAlgoEd25519, packet.PubKeyAlgoEd448:
		return nil
	}
	return fmt.Errorf("%w: public-key algorithm %d", ErrUnsupportedKey, pk.PubKeyAlgo)
}

// strongHash reports whether h may carry a signature we accept: the SHA-2 and
// SHA-3 families. MD5, SHA-1 and RIPEMD-160 never count (docs/threat-model.md D4).
func strongHash(h crypto.Hash) bool {
	switch h {
	case crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512:
		return true
	}
	return false
}

func weakHash(h crypto.Hash) bool { return !strongHash(h) }

// strongHashes lists strongHash's set for go-crypto's *AndHash functions.
var strongHashes = []crypto.Hash{crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512}

func hashName(h crypto.Hash) string {
	switch h {
	case crypto.MD5:
		return "MD5"
	case crypto.SHA1:
		return "SHA-1"
	case crypto.RIPEMD160:
		return "RIPEMD-160"
	}
	if h.Available() {
		return h.String()
	}
	return fmt.Sprintf("hash %d", int(h))
}

// listKeyConfig generates list keys gpg 2.2 imports (docs/dependencies.md §3.2): a v4
// legacy EdDSA Ed25519 primary (RFC 4880bis algorithm 22, not RFC 9580's
// algorithm 27) with a cv25519 ECDH encryption subkey, advertising AES-256
// and SHA-256 (RFC 4880 §5.2.3.7, §5.2.3.8) and no compression.
func listKeyConfig(o Options) *packet.Config {
	return &packet.Config{
		Rand:          o.rand(),
		Time:          o.now,
		Algorithm:     packet.PubKeyAlgoEdDSA,
		Curve:         packet.Curve25519,
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   crypto.SHA256,
		// Salted signatures (a random notation) are the default; keep them.
	}
}

// GenerateListKey makes a new list key pair with one user ID
// "name <email>". It does not expire. With a fixed Options.Now and
// Options.Rand the result is the same every time.
func GenerateListKey(name, email string, o Options) (*Key, error) {
	if email == "" {
		return nil, errors.New("keys: list key needs an address")
	}
	e, err := openpgp.NewEntity(name, "", email, listKeyConfig(o))
	if err != nil {
		return nil, fmt.Errorf("keys: generate list key: %w", err)
	}
	return newKey(e), nil
}

// ArmoredPublic returns the armored certificate (RFC 4880 §6.2, §11.1):
// public keys, self-signatures and any certifications kept on import.
func (k *Key) ArmoredPublic() ([]byte, error) {
	var b bytes.Buffer
	w, err := armor.Encode(&b, armorPublicKey, nil)
	if err != nil {
		return nil, err
	}
	if err := k.e.Serialize(w); err != nil {
		return nil, fmt.Errorf("keys: export %s: %w", k.fpr, err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// ArmoredPrivate returns the armored transferable secret key (RFC 4880
// §11.2). With a passphrase, the secret keys are protected with an
// iterated and salted SHA-256 S2K and AES-256 (RFC 4880 §3.7.1.3, §5.5.3,
// usage octet 254), which gpg 2.2 imports; k itself stays decrypted.
func (k *Key) ArmoredPrivate(passphrase []byte, o Options) ([]byte, error) {
	if !k.HasSecret() {
		return nil, ErrNoSecretKey
	}
	var plain bytes.Buffer
	// The self-signatures are already valid: do not re-sign (SerializePrivate
	// would make new ones, with new times).
	if err := k.e.SerializePrivateWithoutSigning(&plain, nil); err != nil {
		return nil, fmt.Errorf("keys: serialize %s: %w", k.fpr, err)
	}
	raw := plain.Bytes()
	if len(passphrase) > 0 {
		// Encrypt a copy so that k keeps its usable secret keys.
		cp, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return nil, fmt.Errorf("keys: copy %s: %w", k.fpr, err)
		}
		cfg := &packet.Config{
			Rand:          o.rand(),
			DefaultCipher: packet.CipherAES256,
			S2KConfig: &s2k.Config{
				S2KMode:  s2k.IteratedSaltedS2K,
				Hash:     crypto.SHA256,
				S2KCount: 65011712, // the largest encodable count
			},
		}
		if err := cp.EncryptPrivateKeys(passphrase, cfg); err != nil {
			return nil, fmt.Errorf("keys: protect %s: %w", k.fpr, err)
		}
		var enc bytes.Buffer
		if err := cp.SerializePrivateWithoutSigning(&enc, nil); err != nil {
			return nil, fmt.Errorf("keys: serialize %s: %w", k.fpr, err)
		}
		raw = enc.Bytes()
	}
	var b bytes.Buffer
	w, err := armor.Encode(&b, armorPrivateKey, nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// LoadOrCreateListKey loads the list key at path, or generates one (name,
// email) and stores it there, mode 0600, if path does not exist; created
// says which. A key file readable or writable by group or others is refused
// with ErrInsecurePermissions (docs/threat-model.md D10). With a non-empty passphrase the
// stored secret keys are protected and must decrypt with it. An existing key
// must pass Check at o.Now and, if RSA, have at least 3072 bits.
func LoadOrCreateListKey(path, name, email string, passphrase []byte, o Options) (k *Key, created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k, err := GenerateListKey(name, email, o)
		if err != nil {
			return nil, false, err
		}
		armored, err := k.ArmoredPrivate(passphrase, o)
		if err != nil {
			return nil, false, err
		}
		if err := writeFileAtomic(path, armored); err != nil {
			return nil, false, err
		}
		return k, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("keys: list key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("keys: list key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, false, fmt.Errorf("%w: %s has mode %04o, want 0600", ErrInsecurePermissions, path, perm)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("keys: list key: %w", err)
	}
	defer f.Close()
	k, err = readListKey(f, passphrase)
	if err != nil {
		return nil, false, fmt.Errorf("%w (%s)", err, path)
	}
	if err := checkListKey(k, o.now()); err != nil {
		return nil, false, err
	}
	return k, false, nil
}

// ReadListKey reads an armored secret key (the format LoadOrCreateListKey
// writes, or `gpg --export-secret-keys --armor`), decrypting it with
// passphrase if it is protected.
func ReadListKey(r io.Reader, passphrase []byte) (*Key, error) {
	return readListKey(r, passphrase)
}

func readListKey(r io.Reader, passphrase []byte) (*Key, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("keys: read list key: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("keys: list key file larger than %d bytes", maxKeyFile)
	}
	blocks := findArmor(data)
	if len(blocks) != 1 || blocks[0].typ != armorPrivateKey {
		return nil, fmt.Errorf("%w: want exactly one %q armor block", ErrNoSecretKey, armorPrivateKey)
	}
	blk, err := armor.Decode(bytes.NewReader(data[blocks[0].start:blocks[0].end]))
	if err != nil {
		return nil, fmt.Errorf("keys: list key armor: %w", err)
	}
	el, err := openpgp.ReadKeyRing(blk.Body)
	if err != nil {
		return nil, fmt.Errorf("keys: list key: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("keys: list key file holds %d keys, want 1", len(el))
	}
	e := el[0]
	if e.PrivateKey == nil || e.PrivateKey.Dummy() {
		return nil, ErrNoSecretKey
	}
	for _, sk := range e.Subkeys {
		if sk.PrivateKey == nil {
			return nil, fmt.Errorf("%w: subkey %X", ErrNoSecretKey, sk.PublicKey.KeyId)
		}
	}
	encrypted := e.PrivateKey.Encrypted
	for _, sk := range e.Subkeys {
		encrypted = encrypted || sk.PrivateKey.Encrypted
	}
	switch {
	case encrypted && len(passphrase) == 0:
		return nil, fmt.Errorf("%w: key is protected", ErrPassphrase)
	case encrypted:
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPassphrase, err)
		}
	case len(passphrase) > 0:
		// Refuse rather than silently run with an unprotected key the
		// operator believes protected.
		return nil, ErrNotProtected
	}
	return newKey(e), nil
}

// checkListKey applies Check plus the 3072-bit floor for RSA list keys.
func checkListKey(k *Key, now time.Time) error {
	if err := k.Check(now); err != nil {
		return fmt.Errorf("keys: list key: %w", err)
	}
	pks := []*packet.PublicKey{k.e.PrimaryKey}
	for _, sk := range k.e.Subkeys {
		pks = append(pks, sk.PublicKey)
	}
	for _, pk := range pks {
		if pk.PubKeyAlgo == packet.PubKeyAlgoRSA || pk.PubKeyAlgo == packet.PubKeyAlgoRSAEncryptOnly || pk.PubKeyAlgo == packet.PubKeyAlgoRSASignOnly {
			if bits, _ := pk.BitLength(); int(bits) < minListRSABits {
				return fmt.Errorf("%w: list key RSA %d bits, want at least %d", ErrWeakAlgorithm, bits, minListRSABits)
			}
		}
	}
	return nil
}

// writeFileAtomic writes data to path with mode 0600: temporary file in the
// same directory, fsync, rename, fsync of the directory, so that a crash
// leaves either no key or the whole key.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".keys-tmp-*") // CreateTemp uses mode 0600
	if err != nil {
		return fmt.Errorf("keys: store list key: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("keys: store list key: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("keys: store list key: %w", err)
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("keys: store list key: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keys: store list key: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("keys: store list key: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keys: store list key: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("keys: store list key: sync %s: %w", dir, err)
	}
	return nil
}

// ReadPublicKeys reads every armored public key block in r (a file may hold
// several; go-crypto's ReadArmoredKeyRing reads only the first) and returns
// the certificates with third-party certifications stripped (docs/threat-model.md D5:
// only self-signatures matter, and foreign ones only add bulk and attack
// surface). Other armor types are skipped; secret key blocks are refused.
func ReadPublicKeys(r io.Reader) ([]*Key, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("keys: read keys: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("keys: key file larger than %d bytes", maxKeyFile)
	}
	var out []*Key
	var firstErr error
	seen := 0
	for _, b := range findArmor(data) {
		switch b.typ {
		case armorPublicKey:
		case armorPrivateKey:
			return nil, errors.New("keys: secret key block among public keys")
		default:
			continue
		}
		seen++
		blk, err := armor.Decode(bytes.NewReader(data[b.start:b.end]))
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("keys: armor: %w", err)
			}
			continue
		}
		el, err := openpgp.ReadKeyRing(blk.Body)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("keys: %w", keyringError(err))
			}
			continue
		}
		for _, e := range el {
			stripThirdParty(e)
			out = append(out, newKey(e))
		}
	}
	if seen == 0 {
		return nil, fmt.Errorf("keys: no %q armor block", armorPublicKey)
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

// keyringError marks go-crypto's "unsupported" key errors (v3 keys, unknown
// algorithms) with ErrUnsupportedKey.
func keyringError(err error) error {
	var ue pgperrors.UnsupportedError
	if errors.As(err, &ue) {
		return fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return err
}

// stripThirdParty drops every signature on a user ID or on the primary key
// that was not made by the key itself.
func stripThirdParty(e *openpgp.Entity) {
	self := func(sigs []*packet.Signature) []*packet.Signature {
		kept := sigs[:0]
		for _, s := range sigs {
			if s.CheckKeyIdOrFingerprint(e.PrimaryKey) {
				kept = append(kept, s)
			}
		}
		return kept
	}
	for _, id := range e.Identities {
		id.Signatures = self(id.Signatures)
	}
	e.Signatures = self(e.Signatures)
}
