package keys

import (
	"crypto"
	"errors"
	"fmt"
	"time"
)

// SigStatus is the verdict on the signature of an inbound message. Every
// way a signature can fail to count has its own status, so that a receipt
// can say exactly why nothing was applied.
type SigStatus int

// Signature verdicts. Only SigGood counts.
const (
	SigNone       SigStatus = iota // no signature anywhere (ErrNotSigned)
	SigGood                        // one good signature by a pinned key over the whole content
	SigBad                         // the signature does not match the content (ErrBadSignature)
	SigUnknownKey                  // the signer is not a pinned key (ErrUnknownSigner)
	SigExpired                     // the key (ErrKeyExpired) or the signature (ErrSignatureExpired) expired
	SigRevoked                     // the key is revoked (ErrKeyRevoked)
	SigWeakHash                    // MD5, SHA-1 or RIPEMD-160 (ErrWeakHash)
	SigWeakKey                     // RSA < 2048, DSA, ElGamal, a SHA-1 binding, a v3 or unusable key
	SigPartial                     // signed and unsigned content side by side (ErrPartiallySigned)
	SigForwarded                   // a signature only inside a forwarded message (ErrForwarded)
	SigMultiple                    // more than one signature (ErrMultipleSignatures)
	SigUnreadable                  // malformed signature or structure, or another protocol (ErrMalformed, ErrUnsupportedProtocol)
)

var sigStatusNames = [...]string{"none", "good", "bad", "unknown-key", "expired", "revoked", "weak-hash",
	"weak-key", "partial", "forwarded", "multiple", "unreadable"}

// String names the status for logs ("good", "unknown-key", …).
func (s SigStatus) String() string {
	if int(s) >= 0 && int(s) < len(sigStatusNames) {
		return sigStatusNames[s]
	}
	return fmt.Sprintf("SigStatus(%d)", int(s))
}

// statusOf classifies why a signature does not count.
func statusOf(err error) SigStatus {
	switch {
	case err == nil:
		return SigGood
	case errors.Is(err, ErrNotSigned):
		return SigNone
	case errors.Is(err, ErrPartiallySigned):
		return SigPartial
	case errors.Is(err, ErrForwarded):
		return SigForwarded
	case errors.Is(err, ErrMultipleSignatures):
		return SigMultiple
	case errors.Is(err, ErrUnknownSigner):
		return SigUnknownKey
	case errors.Is(err, ErrWeakHash):
		return SigWeakHash
	case errors.Is(err, ErrKeyRevoked):
		return SigRevoked
	case errors.Is(err, ErrKeyExpired), errors.Is(err, ErrSignatureExpired):
		return SigExpired
	case errorsIsAny(err, ErrWeakAlgorithm, ErrSHA1Binding, ErrUnsupportedKey, ErrNoSigningKey, ErrKeyMissing):
		return SigWeakKey
	case errors.Is(err, ErrBadSignature):
		return SigBad
	}
	return SigUnreadable
}

// Verdict is what the signature check of one message found. It is a value:
// copying it shares only the read-only byte slices behind SignedBytes and
// Entity.
type Verdict struct {
	Status SigStatus
	// Err says why the signature does not count, wrapping one of the
	// package's sentinels; nil exactly when Status is SigGood.
	Err error
	// For SigGood: the signer's primary key fingerprint, the pinned key,
	// the signature creation time the signer claims, and its hash.
	Fingerprint string
	Key         *Key
	Signed      time.Time
	Hash        crypto.Hash

	signed, entity []byte
}

// OK reports whether the signature counts.
func (v Verdict) OK() bool { return v.Status == SigGood }

// SignedBytes are exactly the octets the signature covers (see
// Verified.Bytes); nil unless OK. Read-only.
func (v Verdict) SignedBytes() []byte { return v.signed }

// Entity is the signed content as a MIME entity (see Verified.Entity); nil
// unless OK. Read-only.
func (v Verdict) Entity() []byte { return v.entity }

// Verified returns the verdict as a *Verified (a new copy each call), or
// nil unless OK.
func (v Verdict) Verified() *Verified {
	if !v.OK() {
		return nil
	}
	return &Verified{Fingerprint: v.Fingerprint, Key: v.Key, Signed: v.Signed, Bytes: v.signed, Entity: v.entity, Hash: v.Hash}
}

func verdictOf(v *Verified, err error) Verdict {
	if err == nil && v == nil {
		err = ErrNotSigned
	}
	if err != nil {
		return Verdict{Status: statusOf(err), Err: err}
	}
	return Verdict{Status: SigGood, Fingerprint: v.Fingerprint, Key: v.Key, Signed: v.Signed, Hash: v.Hash,
		signed: v.Bytes, entity: v.Entity}
}

// Opened is one inbound message classified, decrypted and verified by Open.
// It is immutable: its fields are reached through methods, and the byte
// slices they return must not be modified.
type Opened struct {
	encrypted    bool
	format       string
	cipherSum    [32]byte
	inner        []byte
	content      []byte
	sig          Verdict
	notDecrypted error
	entities     int // entities parsed, for the open-once test
}

// Encrypted reports whether the whole top level of the message was
// encrypted to the list key and was decrypted with its integrity intact
// (docs/threat-model.md D2, D9). A ciphertext beside other content never
// makes a message encrypted.
func (m *Opened) Encrypted() bool { return m.encrypted }

// Format is FormatPGPMIME or FormatInline when Encrypted, else "".
func (m *Opened) Format() string { return m.format }

// CiphertextHash identifies the ciphertext for the resubmission check
// (docs/threat-model.md D3; see Decrypted.CiphertextHash); ok is false
// unless Encrypted.
func (m *Opened) CiphertextHash() (sum [32]byte, ok bool) { return m.cipherSum, m.encrypted }

// Inner is the decrypted MIME entity (CRLF) when Encrypted, else nil. It is
// never merged with anything outside the ciphertext.
func (m *Opened) Inner() []byte { return m.inner }

// Content is the entity to read the message from (CRLF): the signed entity
// when the signature counts (commands are read from it alone), else the
// decrypted entity when Encrypted, else the whole message.
func (m *Opened) Content() []byte { return m.content }

// Signature is the verdict on the signature: inside the encryption (RFC
// 3156 §6.1, §6.2) when Encrypted, else on the message (PGP/MIME or one
// clear-signed text/plain body).
func (m *Opened) Signature() Verdict { return m.sig }

// NotDecrypted says why the message was read as plaintext: ErrNotEncrypted
// (plain mail), ErrPartiallyEncrypted (a ciphertext beside or inside other
// content: EFAIL layouts, never decrypted), ErrNoSecretKey (wholly encrypted
// but Open had no list key), ErrMalformed or ErrUnsupportedProtocol (an
// encrypted-looking structure that is not one OpenPGP message). nil when
// Encrypted.
func (m *Opened) NotDecrypted() error { return m.notDecrypted }

// Open classifies, decrypts and verifies an inbound message in one pass:
// msg is parsed once, each MIME entity in it at most once, and the
// decrypted entity once.
//
// A message whose whole top level is encrypted (IsEncrypted) is decrypted
// with list as Decrypt does, and the signature inside it checked against
// trusted; every other message is checked as Verify does. list may be nil:
// nothing is then decrypted (NotDecrypted wraps ErrNoSecretKey for a wholly
// encrypted message). Line ends are canonicalised to CRLF first.
//
// The error is a refusal of a wholly encrypted message that cannot be used
// (the sender should be told at once, nothing stored: docs/threat-model.md
// D1): ErrNoIntegrity, ErrTampered, ErrTooLarge, ErrWrongKey, ErrMalformed,
// or ErrNoSecretKey when list has no secret key material. Everything else,
// every signature problem included, is in the result.
func Open(msg []byte, list *Key, trusted *Keyring, o Options) (*Opened, error) {
	msg = toCRLF(msg)
	st := &parseStats{}
	m := &Opened{content: msg}
	defer func() { m.entities = st.entities }()
	e, err := parseEntityIn(msg, st)
	if err != nil {
		m.notDecrypted = err
		m.sig = verdictOf(nil, err)
		return m, nil
	}
	ct, err := classify(e)
	switch {
	case err != nil:
		m.notDecrypted = err
	case list == nil:
		m.notDecrypted = fmt.Errorf("%w: wholly encrypted, and no list key to decrypt it with", ErrNoSecretKey)
	}
	if m.notDecrypted != nil {
		v, verr := verifyEntity(e, trusted, o)
		m.sig = verdictOf(v, verr)
		if m.sig.OK() {
			m.content = m.sig.entity
		}
		return m, nil
	}
	d, err := decryptCiphertext(ct, list, trusted, o, st)
	if err != nil {
		return nil, err
	}
	m.encrypted, m.format, m.cipherSum, m.inner = true, d.Format, d.CiphertextHash, d.Inner
	m.sig = verdictOf(d.Signature, d.SignatureErr)
	m.content = d.Inner
	if m.sig.OK() {
		m.content = m.sig.entity
	}
	return m, nil
}
