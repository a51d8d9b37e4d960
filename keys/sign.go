package keys

import (
	"bytes"
	"crypto"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Sign returns a complete message: outer's fields (From, To, Subject, Date,
// Message-ID, …; any Content-* fields are replaced) over a PGP/MIME
// multipart/signed body (RFC 3156 §5) whose first part is inner, byte for
// byte, and whose second part is signer's detached signature over it.
//
// inner is a MIME entity: header fields, a blank line, the encoded body. It
// is canonicalised to CRLF and must be 7-bit (RFC 3156 §3: a signed part
// must survive every transport unchanged, so encode it with
// quoted-printable or base64). The micalg parameter names the hash the
// signature actually used, read back from the signature packet.
func Sign(outer mail.Header, inner []byte, signer *Key, o Options) ([]byte, error) {
	inner = toCRLF(inner)
	if err := checkInner(inner); err != nil {
		return nil, err
	}
	for i, c := range inner {
		if c >= 0x80 || c == 0 {
			return nil, fmt.Errorf("%w: octet 0x%02x at offset %d", ErrNot7Bit, c, i)
		}
	}
	sig, hash, err := detachSign(inner, signer, o)
	if err != nil {
		return nil, err
	}
	micalg, err := micalgOf(hash)
	if err != nil {
		return nil, err
	}
	boundary, err := o.boundary()
	if err != nil {
		return nil, err
	}
	delim := []byte("--" + boundary)
	if bytes.Contains(inner, delim) || bytes.Contains(sig, delim) {
		return nil, ErrBoundaryInContent
	}

	var b bytes.Buffer
	if err := writeOuter(&b, outer, "multipart/signed", map[string]string{
		"boundary": boundary,
		"micalg":   micalg,
		"protocol": "application/pgp-signature",
	}); err != nil {
		return nil, fmt.Errorf("keys: sign: %w", err)
	}
	b.WriteString("This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n")
	b.WriteString("--" + boundary + "\r\n")
	// RFC 3156 §5 and docs/dependencies.md §3.5 rule 3: part 1 is written by hand,
	// exactly the bytes that were signed; the CRLF that follows belongs to
	// the next delimiter (RFC 2046 §5.1.1) and is not signed.
	b.Write(inner)
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n")
	b.WriteString("Content-Description: OpenPGP digital signature\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n")
	b.Write(sig)
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// detachSign makes an armored binary-mode (type 0x00, RFC 4880 §5.2.1)
// signature over data, CRLF line ends, and returns the hash it used.
func detachSign(data []byte, signer *Key, o Options) (armored []byte, hash crypto.Hash, err error) {
	if err := canSign(signer, o.now()); err != nil {
		return nil, 0, err
	}
	cfg := o.config()
	cfg.DefaultHash = signingHash(signer.e.PrimaryKey)
	var raw bytes.Buffer
	if err := openpgp.DetachSign(&raw, signer.e, bytes.NewReader(data), cfg); err != nil {
		return nil, 0, fmt.Errorf("keys: sign with %s: %w", signer.fpr, err)
	}
	p, err := packet.Read(bytes.NewReader(raw.Bytes()))
	if err != nil {
		return nil, 0, fmt.Errorf("keys: read back signature: %w", err)
	}
	sp, ok := p.(*packet.Signature)
	if !ok {
		return nil, 0, fmt.Errorf("keys: read back signature: got %T", p)
	}
	var b bytes.Buffer
	w := newArmorWriter(&b, armorSignature)
	w.Write(raw.Bytes()) // a bytes.Buffer does not fail
	if err := w.Close(); err != nil {
		return nil, 0, err
	}
	return b.Bytes(), sp.Hash, nil
}

// canSign checks that k can make signatures at now.
func canSign(k *Key, now time.Time) error {
	if k == nil {
		return fmt.Errorf("%w: no signer", ErrNoSecretKey)
	}
	if !k.HasSecret() {
		return fmt.Errorf("%w: %s", ErrNoSecretKey, k.fpr)
	}
	if err := k.check(now, useSign); err != nil {
		return err
	}
	sk, ok := k.e.SigningKey(now)
	if !ok || sk.PrivateKey == nil || sk.PrivateKey.Encrypted {
		return fmt.Errorf("%w: %s", ErrNoSecretKey, k.fpr)
	}
	return nil
}

// signingHash picks the hash for a signature by pk: SHA-256, or what the
// curve requires (RFC 9580 §5.2.3.4: the hash must be at least as strong
// as the curve).
func signingHash(pk *packet.PublicKey) crypto.Hash {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoEd448:
		return crypto.SHA512
	case packet.PubKeyAlgoECDSA, packet.PubKeyAlgoEdDSA:
		if c, err := pk.Curve(); err == nil {
			switch c {
			case packet.Curve448, packet.CurveNistP521, packet.CurveBrainpoolP512:
				return crypto.SHA512
			case packet.CurveNistP384, packet.CurveBrainpoolP384:
				return crypto.SHA384
			}
		}
	}
	return crypto.SHA256
}

// micalgOf returns the RFC 3156 §5 micalg value for h (names from RFC 4880
// §9.4, lower case, "pgp-" prefixed).
func micalgOf(h crypto.Hash) (string, error) {
	switch h {
	case crypto.SHA224:
		return "pgp-sha224", nil
	case crypto.SHA256:
		return "pgp-sha256", nil
	case crypto.SHA384:
		return "pgp-sha384", nil
	case crypto.SHA512:
		return "pgp-sha512", nil
	case crypto.SHA3_256:
		return "pgp-sha3-256", nil
	case crypto.SHA3_512:
		return "pgp-sha3-512", nil
	}
	return "", fmt.Errorf("%w: %s", ErrWeakHash, hashName(h))
}

// writeOuter writes outer's fields, in their order, without any MIME fields
// of its own, then MIME-Version and the given Content-Type, then the blank
// line. Everything goes through go-message, which refuses CR or LF in a
// value (no header injection).
func writeOuter(b *bytes.Buffer, outer mail.Header, mediaType string, params map[string]string) error {
	fields, err := fieldsOf(outer)
	if err != nil {
		return err
	}
	b.Write(fields)
	return writeMIMEFields(b, mediaType, params)
}

// writeMIMEFields writes MIME-Version and the Content-Type, then the blank
// line that ends the header.
func writeMIMEFields(b *bytes.Buffer, mediaType string, params map[string]string) error {
	var m message.Header
	m.SetContentType(mediaType, params)
	m.Set("MIME-Version", "1.0") // Set prepends: written before Content-Type
	if err := textproto.WriteHeader(b, m.Header); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	return nil
}

// contentFree copies h without its MIME fields, which the caller of Sign or
// Encrypt must not set: this package writes them.
func contentFree(h mail.Header) mail.Header {
	c := mail.Header{Header: h.Header.Copy()}
	var drop []string
	fields := c.Fields()
	for fields.Next() {
		k := strings.ToLower(fields.Key())
		if strings.HasPrefix(k, "content-") || k == "mime-version" {
			drop = append(drop, k)
		}
	}
	for _, k := range drop {
		c.Del(k)
	}
	return c
}

// checkInner refuses an inner entity that does not parse as MIME: what we
// sign or encrypt must be what the recipient's client will display.
func checkInner(inner []byte) error {
	if len(inner) == 0 {
		return fmt.Errorf("%w: empty inner entity", ErrMalformed)
	}
	if _, err := parseEntity(inner); err != nil {
		return fmt.Errorf("keys: inner entity: %w", err)
	}
	return nil
}
