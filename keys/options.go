package keys

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// DefaultMaxDecompressed is the default plaintext cap: 2 × a 10 MiB message
// limit (docs/threat-model.md C5).
const DefaultMaxDecompressed = 20 << 20

// Options carries the clock, the randomness and the limits. The zero value is
// ready to use: time.Now, crypto/rand and DefaultMaxDecompressed. Tests set
// Now, Rand and Boundary to make output byte-for-byte repeatable.
type Options struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand is the source of all randomness (session keys, ECDH ephemerals,
	// CFB prefixes, signature salts, S2K salts, key generation, boundaries);
	// nil means crypto/rand.Reader.
	Rand io.Reader
	// MaxDecompressed caps the plaintext of a decrypted message, in bytes;
	// 0 means DefaultMaxDecompressed.
	MaxDecompressed int64
	// Boundary returns the MIME boundary for a message Sign or Encrypt
	// builds; nil means 32 hex digits drawn from Rand. A boundary that occurs
	// in the content is refused with ErrBoundaryInContent.
	Boundary func() string
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) rand() io.Reader {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Reader
}

func (o Options) maxPlaintext() int64 {
	if o.MaxDecompressed > 0 {
		return o.MaxDecompressed
	}
	return DefaultMaxDecompressed
}

// boundary returns a MIME boundary. The "=_" can occur neither in base64 nor
// in quoted-printable output, so an encoded body cannot contain it by chance
// (RFC 2046 §5.1.1 asks the sender to choose a boundary absent from the body).
func (o Options) boundary() (string, error) {
	if o.Boundary != nil {
		b := o.Boundary()
		if len(b) == 0 || len(b) > 70 { // RFC 2046 §5.1.1: 1 to 70 characters
			return "", fmt.Errorf("keys: MIME boundary must be 1 to 70 characters, got %d", len(b))
		}
		return b, nil
	}
	var r [16]byte
	if _, err := io.ReadFull(o.rand(), r[:]); err != nil {
		return "", fmt.Errorf("keys: boundary: %w", err)
	}
	return "=_" + hex.EncodeToString(r[:]), nil
}

// config is the go-crypto configuration every operation starts from. The v1
// API is used (docs/dependencies.md §3.1); the policy it does not enforce (weak
// hashes, weak keys) is enforced by this package's own checks.
func (o Options) config() *packet.Config {
	// go-crypto's own decompression limit sits above ours, with room for the
	// packet framing inside the compressed stream (at most one length octet
	// per 512-octet partial chunk), so that our plaintext cap trips first and
	// reports ErrTooLarge; the library limit stays as a backstop (docs/threat-model.md C5).
	limit := o.maxPlaintext()
	limit += limit/64 + 64<<10
	// go-crypto salts every v4 signature with a random notation
	// (salt@notations.openpgpjs.org) by default; GnuPG shows it, and mutt
	// with GPGME prints its binary value as junk under every message we
	// sign. Message signatures go out without it, as GnuPG makes them.
	salt := false
	return &packet.Config{
		NonDeterministicSignaturesViaNotation: &salt,
		Rand:                                  o.rand(),
		Time:                                  o.now,
		DefaultHash:                           crypto.SHA256,
		DefaultCipher:                         packet.CipherAES256,
		DefaultCompressionAlgo:                packet.CompressionNone,
		MaxDecompressedMessageSize:            &limit,
	}
}
