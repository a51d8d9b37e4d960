package keys

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/charset"
)

// Verified is a signature that counts: one good signature, by a trusted
// key usable at the time of checking, with a strong hash, covering the whole
// top level of what was checked.
type Verified struct {
	// Fingerprint is the signer's primary key fingerprint (even when a
	// signing subkey made the signature).
	Fingerprint string
	// Key is the trusted key that made the signature.
	Key *Key
	// Signed is the signature creation time claimed by the signer.
	Signed time.Time
	// Bytes are exactly the octets the signature covers: part 1 of a
	// multipart/signed (CRLF), the canonical text of a clear-signed message
	// (RFC 4880 §7.1: dash-escaping undone, trailing blanks removed, CRLF),
	// or the literal data of a signed OpenPGP message. Read commands from
	// these bytes only.
	Bytes []byte
	// Entity is the signed content as a MIME entity: Bytes for PGP/MIME,
	// a text/plain entity around Bytes for clear-signed or inline text.
	Entity []byte
	// Hash is the signature's hash algorithm.
	Hash crypto.Hash
}

// Verify checks the signature on msg, a whole message (or MIME entity):
// either PGP/MIME multipart/signed at the top level (RFC 3156 §5) or a
// text/plain body that is entirely one clear-signed block (RFC 4880 §7),
// whitespace aside. trusted holds the pinned keys; nothing else counts.
//
// A signature that does not count is an error wrapping one of:
// ErrNotSigned, ErrPartiallySigned (signed and unsigned content side by
// side: the "Johnny, you are fired" layouts, docs/threat-model.md E2), ErrForwarded (a
// signature only inside a message/rfc822 part), ErrMultipleSignatures,
// ErrUnknownSigner, ErrWeakHash (MD5, SHA-1, RIPEMD-160), ErrBadSignature,
// ErrSignatureExpired, ErrKeyExpired, ErrKeyRevoked, ErrWeakAlgorithm,
// ErrSHA1Binding, ErrUnsupportedKey or ErrMalformed.
//
// Line ends are canonicalised to CRLF first, so mail stored with LF
// verifies. To check an encrypted message, use Decrypt.
func Verify(msg []byte, trusted *Keyring, o Options) (*Verified, error) {
	msg = toCRLF(msg)
	e, err := parseEntity(msg)
	if err != nil {
		return nil, err
	}
	return verifyEntity(e, trusted, o)
}

func verifyEntity(e *entity, trusted *Keyring, o Options) (*Verified, error) {
	switch e.mediaType {
	case "multipart/signed":
		return verifyPGPMIME(e, trusted, o)
	case "text/plain":
		body, err := e.decodedBody()
		if err != nil {
			return nil, err
		}
		return verifyInline(e, body, trusted, o)
	}
	return nil, unsignedReason(e)
}

// verifyInline checks a text/plain body, already decoded from its transfer
// encoding (K-9 Mail and OpenKeychain send inline signatures in
// quoted-printable, 8bit and base64 bodies), that must be one clear-signed
// block. The charset is undone when it hides the block (a charset that is
// not ASCII-compatible) or when a client re-encoded the text after it was
// signed: then the UTF-8 form is what the signature covers.
func verifyInline(e *entity, body []byte, trusted *Keyring, o Options) (*Verified, error) {
	cs := e.params["charset"]
	i := bytes.Index(body, markClearsign)
	if i < 0 {
		u, ok := toUTF8(body, cs)
		if !ok || bytes.Index(u, markClearsign) < 0 {
			return nil, unsignedReason(e)
		}
		body, cs, i = u, "utf-8", bytes.Index(u, markClearsign)
	}
	if !isBlank(body[:i]) {
		return nil, fmt.Errorf("%w: text before the clear-signed block", ErrPartiallySigned)
	}
	v, err := verifyClearsigned(body[i:], cs, trusted, o)
	if errors.Is(err, ErrBadSignature) {
		if u, ok := toUTF8(body[i:], cs); ok {
			if uv, uerr := verifyClearsigned(u, "utf-8", trusted, o); uerr == nil {
				return uv, nil
			}
		}
	}
	return v, err
}

// toUTF8 converts text from charset cs to UTF-8. ok is false when there is
// nothing to convert (UTF-8 or US-ASCII already, or no change) or the
// charset is unknown.
func toUTF8(text []byte, cs string) ([]byte, bool) {
	switch strings.ToLower(strings.TrimSpace(cs)) {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return nil, false
	}
	r, err := charset.Reader(cs, bytes.NewReader(text))
	if err != nil {
		return nil, false
	}
	out, err := io.ReadAll(r)
	if err != nil || bytes.Equal(out, text) {
		return nil, false
	}
	return out, true
}

// unsignedReason tells apart an unsigned message, one whose signed part sits
// beside unsigned parts, and one whose only signature is in a forwarded
// message.
func unsignedReason(e *entity) error {
	m, err := scan(e)
	switch {
	case err != nil:
		return err
	case m.signed:
		return fmt.Errorf("%w: %s with a signed part inside", ErrPartiallySigned, e.mediaType)
	case m.forwardedSigned:
		return ErrForwarded
	}
	return ErrNotSigned
}

// verifyPGPMIME checks a multipart/signed entity (RFC 3156 §5): exactly two
// parts, the second an application/pgp-signature holding exactly one
// signature over the first, byte for byte. The preamble and epilogue are
// ignored (RFC 2046 §5.1.1: not displayed) and never count as signed.
// micalg is not trusted: the hash is read from the signature packet.
func verifyPGPMIME(e *entity, trusted *Keyring, o Options) (*Verified, error) {
	if p := strings.ToLower(e.params["protocol"]); p != "application/pgp-signature" {
		return nil, fmt.Errorf("%w: multipart/signed protocol %q", ErrUnsupportedProtocol, e.params["protocol"])
	}
	mp, err := e.strictMultipart()
	if err != nil {
		return nil, err
	}
	switch {
	case len(mp.parts) > 2:
		return nil, fmt.Errorf("%w: multipart/signed with %d parts", ErrPartiallySigned, len(mp.parts))
	case len(mp.parts) < 2:
		return nil, fmt.Errorf("%w: multipart/signed with %d parts", ErrMalformed, len(mp.parts))
	}
	signed := mp.parts[0]
	if _, err := e.part(0); err != nil {
		return nil, err
	}
	sp, err := e.part(1)
	if err != nil {
		return nil, err
	}
	if sp.mediaType != "application/pgp-signature" {
		return nil, fmt.Errorf("%w: second part is %s", ErrMalformed, sp.mediaType)
	}
	body, err := sp.decodedBody()
	if err != nil {
		return nil, err
	}
	block, ok, extra := wholeArmor(body, armorSignature)
	if !ok || extra {
		return nil, fmt.Errorf("%w: second part is not one armored signature", ErrMalformed)
	}
	ab, err := armor.Decode(bytes.NewReader(block))
	if err != nil {
		return nil, fmt.Errorf("%w: signature armor: %v", ErrMalformed, err)
	}
	v, err := verifyDetached(signed, ab, nil, trusted, o)
	if err != nil {
		return nil, err
	}
	v.Entity = v.Bytes
	return v, nil
}

// verifyClearsigned checks text that starts with a clear-signed block and
// must hold nothing else but whitespace after it.
func verifyClearsigned(text []byte, charset string, trusted *Keyring, o Options) (*Verified, error) {
	b, rest := clearsign.Decode(text)
	if b == nil {
		return nil, fmt.Errorf("%w: clear-signed block does not parse", ErrMalformed)
	}
	if !isBlank(rest) {
		if bytes.Contains(rest, markClearsign) {
			return nil, fmt.Errorf("%w: more than one clear-signed block", ErrMultipleSignatures)
		}
		return nil, fmt.Errorf("%w: text after the clear-signed block", ErrPartiallySigned)
	}
	// RFC 4880 §7.1: every line of the text that starts with "-" is
	// dash-escaped. An unescaped one is not something gpg writes, and
	// lets an armor line hide in the signed text (Johnny, CVE-2019-11841).
	if err := checkDashEscaping(text); err != nil {
		return nil, err
	}
	var allowed []crypto.Hash
	for _, name := range b.Headers.Values("Hash") {
		h, ok := armorHashes[strings.ToUpper(name)]
		if !ok {
			h = 0 // named but weak or unknown; may not match anything
		}
		allowed = append(allowed, h)
	}
	v, err := verifyDetached(b.Bytes, b.ArmoredSignature, allowed, trusted, o)
	if err != nil {
		return nil, err
	}
	v.Entity = textEntity(v.Bytes, charset)
	return v, nil
}

var armorHashes = map[string]crypto.Hash{
	"SHA224": crypto.SHA224, "SHA256": crypto.SHA256, "SHA384": crypto.SHA384,
	"SHA512": crypto.SHA512, "SHA3-256": crypto.SHA3_256, "SHA3-512": crypto.SHA3_512,
}

// checkDashEscaping checks the signed text of a clear-signed block: from the
// blank line after the armor headers to the signature's BEGIN line.
func checkDashEscaping(text []byte) error {
	lines := bytes.Split(text, []byte("\n"))
	inText := false
	for i, raw := range lines {
		line := bytes.TrimRight(raw, "\r")
		if i == 0 {
			continue // the BEGIN PGP SIGNED MESSAGE line
		}
		if !inText {
			if len(bytes.TrimSpace(line)) == 0 {
				inText = true
			}
			continue
		}
		if bytes.Equal(line, markSignature) { // as clearsign.Decode ends the text
			return nil
		}
		if len(line) > 0 && line[0] == '-' && !bytes.HasPrefix(line, []byte("- ")) {
			return fmt.Errorf("%w: unescaped dash line in clear-signed text", ErrMalformed)
		}
	}
	return nil
}

// verifyDetached checks one detached signature (the body of an armored
// block) over data. If allowed is non-nil, the signature's hash must be in
// it (the clear-sign Hash header). The checks run cheapest-first, and a
// signature is only reported as by an expired or revoked key once it is
// cryptographically good.
func verifyDetached(data []byte, ab *armor.Block, allowed []crypto.Hash, trusted *Keyring, o Options) (*Verified, error) {
	if ab.Type != armorSignature {
		return nil, fmt.Errorf("%w: armor type %q", ErrMalformed, ab.Type)
	}
	sigs, raw, err := readSignatures(ab.Body)
	if err != nil {
		return nil, err
	}
	switch {
	case len(sigs) == 0:
		return nil, fmt.Errorf("%w: no signature packet", ErrMalformed)
	case len(sigs) > 1:
		return nil, fmt.Errorf("%w: %d signature packets", ErrMultipleSignatures, len(sigs))
	}
	sig := sigs[0]
	if sig.SigType != packet.SigTypeBinary && sig.SigType != packet.SigTypeText {
		return nil, fmt.Errorf("%w: signature type 0x%02x", ErrMalformed, uint8(sig.SigType))
	}
	if weakHash(sig.Hash) {
		return nil, fmt.Errorf("%w: %s", ErrWeakHash, hashName(sig.Hash))
	}
	if allowed != nil && !containsHash(allowed, sig.Hash) {
		return nil, fmt.Errorf("%w: signature hash %s not in the Hash header", ErrMalformed, hashName(sig.Hash))
	}
	signer, err := findSigner(sig, trusted)
	if err != nil {
		return nil, err
	}
	return checkSignature(data, raw, sig, signer, trusted, o)
}

func containsHash(hs []crypto.Hash, h crypto.Hash) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// readSignatures reads every packet of a detached signature; anything but
// signature packets is malformed.
func readSignatures(r io.Reader) ([]*packet.Signature, []byte, error) {
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(r); err != nil {
		return nil, nil, fmt.Errorf("%w: signature armor: %v", ErrMalformed, err)
	}
	pkts, err := splitPackets(raw.Bytes())
	if err != nil {
		return nil, nil, err
	}
	var sigs []*packet.Signature
	pr := packet.NewReader(bytes.NewReader(raw.Bytes()))
	for range pkts {
		p, err := pr.Next()
		if err != nil {
			var ue pgperrors.UnsupportedError
			if errors.As(err, &ue) {
				// e.g. a v3 signature packet, which go-crypto does not parse
				return nil, nil, fmt.Errorf("%w: %v", ErrWeakHash, err)
			}
			return nil, nil, fmt.Errorf("%w: signature packet: %v", ErrMalformed, err)
		}
		s, ok := p.(*packet.Signature)
		if !ok {
			return nil, nil, fmt.Errorf("%w: %T in a detached signature", ErrMalformed, p)
		}
		sigs = append(sigs, s)
	}
	if len(sigs) != len(pkts) { // go-crypto skipped something we counted
		return nil, nil, fmt.Errorf("%w: unreadable packets in signature", ErrMalformed)
	}
	return sigs, raw.Bytes(), nil
}

// findSigner returns the trusted key a signature claims, by issuer
// fingerprint if present (RFC 9580 §5.2.3.35), else by issuer key ID.
func findSigner(sig *packet.Signature, trusted *Keyring) (*Key, error) {
	for _, k := range trusted.Keys() {
		if sig.IssuerFingerprint != nil {
			if bytes.Equal(k.e.PrimaryKey.Fingerprint, sig.IssuerFingerprint) {
				return k, nil
			}
			for _, sk := range k.e.Subkeys {
				if bytes.Equal(sk.PublicKey.Fingerprint, sig.IssuerFingerprint) {
					return k, nil
				}
			}
			continue
		}
		if sig.IssuerKeyId == nil {
			break
		}
		if len(openpgp.EntityList{k.e}.KeysById(*sig.IssuerKeyId)) > 0 {
			return k, nil
		}
	}
	id := "no issuer"
	switch {
	case sig.IssuerFingerprint != nil:
		id = fmt.Sprintf("%X", sig.IssuerFingerprint)
	case sig.IssuerKeyId != nil:
		id = fmt.Sprintf("%016X", *sig.IssuerKeyId)
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownSigner, id)
}

// checkSignature verifies sig (serialised in raw) over data with signer,
// then the signer's state at o.Now.
func checkSignature(data, raw []byte, sig *packet.Signature, signer *Key, trusted *Keyring, o Options) (*Verified, error) {
	// The weak-key floor applies before any cryptography.
	if err := signer.check(o.now(), 0); err != nil && errorsIsAny(err, ErrWeakAlgorithm, ErrUnsupportedKey) {
		return nil, err
	}
	cfg := o.config()
	gotSig, ent, err := openpgp.VerifyDetachedSignatureAndHash(openpgp.EntityList{signer.e},
		bytes.NewReader(data), bytes.NewReader(raw), strongHashes, cfg)
	if err = signatureError(err); err != nil {
		return nil, fmt.Errorf("%w (signer %s)", err, signer.fpr)
	}
	if ent == nil || gotSig == nil {
		return nil, fmt.Errorf("%w: no signer", ErrBadSignature)
	}
	if k, ok := trusted.keyOf(ent); !ok || k != signer {
		return nil, fmt.Errorf("%w: signer mismatch", ErrUnknownSigner)
	}
	if err := signer.check(o.now(), useSign); err != nil {
		return nil, err
	}
	return &Verified{
		Fingerprint: signer.fpr,
		Key:         signer,
		Signed:      gotSig.CreationTime,
		Bytes:       data,
		Hash:        gotSig.Hash,
	}, nil
}

// signatureError maps go-crypto's verification errors to ours.
func signatureError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return ErrKeyExpired
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return ErrKeyRevoked
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return ErrSignatureExpired
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return fmt.Errorf("%w: no signing-capable key with that ID", ErrUnknownSigner)
	}
	return fmt.Errorf("%w: %v", ErrBadSignature, err)
}
